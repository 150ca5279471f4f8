package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Runs of recovery plans (docs/plans.md, "Runs"). A run is a job of kind
// plan-run on object plan/<name>, planned by internal/server/planjobs.go
// from a snapshot of the plan taken when the run was asked for; its
// report is a control.PlanRun with the job's ID. Each group's machines are
// acted on through the same machine operations as the machines routes
// (MachineOperation), so a plan does exactly what an operator would do
// by hand, machine by machine.

// JobPlanRun is the job kind of a plan run.
const JobPlanRun = "plan-run"

// PlanRunParams are a plan run job's parameters.
type PlanRunParams struct {
	Plan      control.Plan          `json:"plan"` // the plan as it was when the run was asked for
	Operation control.PlanOperation `json:"operation"`
	Point     string                `json:"point,omitempty"`
	// Target, Process and Force are a re-protection's (the master target
	// at the primary site, the process server, discard unreplicated
	// writes).
	Target  string `json:"target,omitempty"`
	Process string `json:"process,omitempty"`
	Force   bool   `json:"force,omitempty"`
	// RetryOf is the failed run this one continues; Skip the step of it
	// not to do again.
	RetryOf string `json:"retry_of,omitempty"`
	Skip    string `json:"skip,omitempty"`
	// By is who asked for the run (the audit's actor of what it does).
	By string `json:"by"`
}

type planRunRequest struct {
	Operation control.PlanOperation `json:"operation"`
	Point     string                `json:"point,omitempty"`
	Target    string                `json:"target,omitempty"`
	Process   string                `json:"process,omitempty"`
	Force     bool                  `json:"force,omitempty"`
	DryRun    bool                  `json:"dry_run,omitempty"`
}

type planRunResponse struct {
	Run control.PlanRun `json:"run"`
	Job control.Job     `json:"job,omitzero"`
}

// PlanObject is the job object of a plan's runs: one at a time.
func PlanObject(plan string) string { return "plan/" + plan }

// PointConsistent selects a plan's newest multi-machine consistent point.
const PointConsistent = "latest-consistent"

func (s *Server) planRun(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req planRunRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	p, err := s.o.Store.GetPlan(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", name, err)
	}
	if !req.Operation.Valid() {
		return nil, errorf(http.StatusBadRequest, "operation %q: allowed: %s", req.Operation, joinOperations())
	}
	if req.Point != "" && req.Point != PointConsistent {
		if err := CheckPointSelector(req.Point); err != nil {
			return nil, errorf(http.StatusBadRequest, "%v (or %s)", err, PointConsistent)
		}
	}
	if req.Operation == control.PlanReprotect && req.Target == "" {
		return nil, errorf(http.StatusBadRequest, "target: required for reprotect: the master target at the primary site")
	}
	params := PlanRunParams{Plan: p, Operation: req.Operation, Point: req.Point, Target: req.Target, Process: req.Process, Force: req.Force,
		By: principalOf(ctx).actor()}
	if req.DryRun {
		run, err := s.PlanDryRun(ctx, params)
		return planRunResponse{Run: run}, err
	}
	return s.submitPlanRun(ctx, params)
}

// StartPlanRun submits a run of params' plan (the scheduled drills).
func (s *Server) StartPlanRun(ctx context.Context, params PlanRunParams) (control.PlanRun, error) {
	// The audit names the run's asker (params.By) as a user would be.
	ctx = context.WithValue(ctx, principalKey{}, principal{user: &control.User{Name: params.By}})
	r, err := s.submitPlanRun(ctx, params)
	return r.Run, err
}

func (s *Server) submitPlanRun(ctx context.Context, params PlanRunParams) (planRunResponse, error) {
	if s.o.Jobs == nil {
		return planRunResponse{}, errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	job, err := s.o.Jobs.Submit(ctx, JobPlanRun, PlanObject(params.Plan.Name), params, params.By)
	detail := fmt.Sprintf("%s, job %s", params.Operation, job.ID)
	if params.RetryOf != "" {
		detail += ", retrying run " + params.RetryOf
		if params.Skip != "" {
			detail += " without its step " + params.Skip
		}
	}
	s.audit(ctx, "plan.run", "plan/"+params.Plan.Name, err, detail)
	if err != nil {
		return planRunResponse{}, err
	}
	run, err := s.EnsurePlanRun(ctx, job, params)
	return planRunResponse{Run: run, Job: job}, err
}

// EnsurePlanRun returns the report of job's run, making it on first use
// (the API right after the job is submitted, or its planner, whichever
// comes first).
func (s *Server) EnsurePlanRun(ctx context.Context, job control.Job, p PlanRunParams) (control.PlanRun, error) {
	run, err := s.o.Store.GetPlanRun(ctx, job.ID)
	if err == nil {
		return run, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return run, err
	}
	run = control.PlanRun{ID: job.ID, Plan: p.Plan.Name, Operation: p.Operation, Point: p.Point, RetryOf: p.RetryOf, Skip: p.Skip,
		State: control.JobQueued, StartedAt: s.now(), Steps: PlanSteps(p), Machines: planMachines(p)}
	run, err = s.o.Store.CreatePlanRun(ctx, run)
	if errors.Is(err, store.ErrExists) {
		return s.o.Store.GetPlanRun(ctx, job.ID)
	}
	return run, err
}

// PlanSteps are a run's steps, in order: per group (in reverse for a
// cleanup or a failback), its before actions, the operation on its
// machines, its after actions. Actions limited to other operations are
// left out. A drill is a test failover of every group, the probes, and
// the cleanup of every group in reverse.
func PlanSteps(p PlanRunParams) []control.PlanStepReport {
	if p.Operation == control.PlanDrill {
		out := planPhase(p.Plan, control.PlanTestFailover, control.PlanDrill, true)
		out = append(out, control.PlanStepReport{Name: "probes", Kind: "probes", Machines: p.Plan.Machines(), State: control.JobQueued})
		return append(out, planPhase(p.Plan, control.PlanTestCleanup, control.PlanDrill, false)...)
	}
	return planPhase(p.Plan, p.Operation, p.Operation, true)
}

// planPhase is the steps of op over the plan's groups; actions are
// those that apply to run (none when !actions).
func planPhase(plan control.Plan, op, run control.PlanOperation, actions bool) []control.PlanStepReport {
	var out []control.PlanStepReport
	groups := slices.Clone(plan.Groups)
	if op.Reverse() {
		slices.Reverse(groups)
	}
	for _, g := range groups {
		add := func(stage string, acts []control.PlanAction) {
			for _, a := range acts {
				if !actions || !a.Applies(run) {
					continue
				}
				kind := "script"
				if a.Manual != nil {
					kind = "manual"
				}
				out = append(out, control.PlanStepReport{Name: PlanStepName(g.Name, stage, a.Name), Group: g.Name, Kind: kind, State: control.JobQueued})
			}
		}
		add("before", g.Before)
		out = append(out, control.PlanStepReport{Name: PlanStepName(g.Name, string(op), ""), Group: g.Name, Kind: "machines",
			Machines: slices.Clone(g.Machines), Operation: op, State: control.JobQueued})
		add("after", g.After)
	}
	return out
}

// PlanStepName names a step: group/stage/action, or group/operation.
func PlanStepName(group, stage, action string) string {
	if action == "" {
		return group + "/" + stage
	}
	return group + "/" + stage + "/" + action
}

func planMachines(p PlanRunParams) []control.PlanMachineReport {
	var out []control.PlanMachineReport
	for _, g := range p.Plan.Groups {
		for _, m := range g.Machines {
			out = append(out, control.PlanMachineReport{Machine: m, Group: g.Name})
		}
	}
	return out
}

// PlanDryRun lists the steps a run would take, each with how long it
// took on average in the plan's earlier runs of that operation.
func (s *Server) PlanDryRun(ctx context.Context, p PlanRunParams) (control.PlanRun, error) {
	run := control.PlanRun{Plan: p.Plan.Name, Operation: p.Operation, Point: p.Point, DryRun: true, Steps: PlanSteps(p), Machines: planMachines(p)}
	past, err := s.o.Store.ListPlanRuns(ctx, p.Plan.Name, 50)
	if err != nil {
		return run, err
	}
	sum, n := map[string]float64{}, map[string]int{}
	for _, pr := range past {
		if pr.Operation != p.Operation || pr.DryRun {
			continue
		}
		for _, st := range pr.Steps {
			if st.State == control.JobSucceeded && !st.StartedAt.IsZero() && !st.EndedAt.IsZero() {
				sum[st.Name] += st.EndedAt.Sub(st.StartedAt).Seconds()
				n[st.Name]++
			}
		}
	}
	for i := range run.Steps {
		if k := n[run.Steps[i].Name]; k > 0 {
			run.Steps[i].EstimateSeconds = sum[run.Steps[i].Name] / float64(k)
		}
	}
	return run, nil
}

func (s *Server) planRunList(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	if _, err := s.o.Store.GetPlan(r.Context(), name); err != nil {
		return nil, fmt.Errorf("plan %s: %w", name, err)
	}
	runs, err := s.o.Store.ListPlanRuns(r.Context(), name, 100)
	if runs == nil {
		runs = []control.PlanRun{}
	}
	for i := range runs {
		runs[i] = s.withJobState(r.Context(), runs[i])
	}
	return runs, err
}

// withJobState shows a run whose job ended without the run's report
// saying so (the job failed outside a step: a step that cannot be resumed
// after a restart, or a cancel) as the job ended.
func (s *Server) withJobState(ctx context.Context, run control.PlanRun) control.PlanRun {
	if run.State.Done() {
		return run
	}
	if j, err := s.o.Store.GetJob(ctx, run.ID); err == nil && j.State.Done() {
		run.State, run.Error = j.State, j.Error
		if run.EndedAt.IsZero() {
			run.EndedAt = j.UpdatedAt
		}
	}
	return run
}

func (s *Server) planRunGet(w http.ResponseWriter, r *http.Request) (any, error) {
	run, err := s.o.Store.GetPlanRun(r.Context(), r.PathValue("run"))
	if err == nil && run.Plan != r.PathValue("name") {
		err = fmt.Errorf("run %s of plan %s: %w", r.PathValue("run"), r.PathValue("name"), store.ErrNotFound)
	}
	return s.withJobState(r.Context(), run), err
}

type planSignalRequest struct {
	// Step is the manual step answered; "" answers the one waiting.
	Step string `json:"step,omitempty"`
}

// planSignal answers a manual step of a run: continue or abort.
func (s *Server) planSignal(signal string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		ctx := r.Context()
		var req planSignalRequest
		if err := decode(w, r, &req); err != nil {
			return nil, err
		}
		id := r.PathValue("run")
		for attempt := 0; ; attempt++ {
			run, err := s.o.Store.GetPlanRun(ctx, id)
			if err != nil {
				return nil, err
			}
			if run.Plan != r.PathValue("name") {
				return nil, fmt.Errorf("run %s of plan %s: %w", id, r.PathValue("name"), store.ErrNotFound)
			}
			step := req.Step
			if step == "" {
				for _, st := range run.Steps {
					if st.Kind == "manual" && st.State == control.JobRunning {
						step = st.Name
					}
				}
			}
			i := slices.IndexFunc(run.Steps, func(st control.PlanStepReport) bool { return st.Name == step })
			if i < 0 || run.Steps[i].Kind != "manual" {
				return nil, errorf(http.StatusConflict, "run %s has no manual step %q waiting for an operator", id, step)
			}
			if st := run.Steps[i].State; st != control.JobRunning && st != control.JobQueued {
				return nil, errorf(http.StatusConflict, "run %s: step %s is %s already", id, step, st)
			}
			if run.Signals == nil {
				run.Signals = map[string]string{}
			}
			run.Signals[step] = signal
			run, err = s.o.Store.UpdatePlanRun(ctx, run)
			if errors.Is(err, store.ErrConflict) && attempt < 5 {
				continue
			}
			s.audit(ctx, "plan."+signal, "plan/"+run.Plan, err, "run "+id+", step "+step)
			if err == nil {
				s.desired.notify() // wakes the waiting step
			}
			return run, err
		}
	}
}

type planRetryRequest struct{}

// planRetry runs a failed run again from its failed step; with skip, past
// it.
func (s *Server) planRetry(skip bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		ctx := r.Context()
		var req planRetryRequest
		if err := decode(w, r, &req); err != nil {
			return nil, err
		}
		id := r.PathValue("run")
		job, err := s.o.Store.GetJob(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", id, err)
		}
		if job.Kind != JobPlanRun || job.Object != PlanObject(r.PathValue("name")) {
			return nil, fmt.Errorf("run %s of plan %s: %w", id, r.PathValue("name"), store.ErrNotFound)
		}
		if job.State != control.JobFailed && job.State != control.JobCancelled {
			return nil, errorf(http.StatusConflict, "run %s is %s: only a failed or cancelled run is retried or skipped", id, job.State)
		}
		var p PlanRunParams
		if err := json.Unmarshal(job.Params, &p); err != nil {
			return nil, err
		}
		p.RetryOf, p.Skip, p.By = id, "", principalOf(ctx).actor()
		if skip {
			run, err := s.o.Store.GetPlanRun(ctx, id)
			if err != nil {
				return nil, err
			}
			for _, st := range run.Steps {
				if st.State == control.JobFailed || st.State == control.JobCancelled {
					p.Skip = st.Name
				}
			}
			if p.Skip == "" {
				return nil, errorf(http.StatusConflict, "run %s has no failed step to skip", id)
			}
		}
		return s.submitPlanRun(ctx, p)
	}
}

// MachineOperation does operation op to machine name as the machine
// routes do (the same checks, state moves, audit and job), on behalf of
// by, with body as the route's request. It returns the machine's job.
func (s *Server) MachineOperation(ctx context.Context, by, name string, op control.PlanOperation, body any) (control.Job, error) {
	h := map[control.PlanOperation]handlerFunc{
		control.PlanTestFailover: s.testFailover, control.PlanTestCleanup: s.testCleanup,
		control.PlanPlannedFailover: s.plannedFailover, control.PlanFailover: s.failover, control.PlanCommit: s.commit,
		control.PlanReprotect: s.reprotect, control.PlanFailback: s.failback,
	}[op]
	if h == nil {
		return control.Job{}, fmt.Errorf("operation %q: allowed: %s", op, joinOperations())
	}
	b, err := json.Marshal(body)
	if err != nil {
		return control.Job{}, err
	}
	r, err := http.NewRequestWithContext(context.WithValue(ctx, principalKey{}, principal{user: &control.User{Name: by}}),
		"POST", "/v1/machines/"+name+"/"+string(op), bytes.NewReader(b))
	if err != nil {
		return control.Job{}, err
	}
	r.Header.Set("Content-Type", "application/json")
	r.SetPathValue("name", name)
	out, err := h(nil, r)
	if err != nil {
		return control.Job{}, err
	}
	b, err = json.Marshal(out)
	if err != nil {
		return control.Job{}, err
	}
	var res struct {
		Job control.Job `json:"job"`
	}
	if err := json.Unmarshal(b, &res); err != nil || res.Job.ID == "" {
		return control.Job{}, fmt.Errorf("machine %s %s: no job in the answer (%v)", name, op, err)
	}
	return res.Job, nil
}

// ConsistentPoint is a multi-machine consistent point of a plan: one
// label every machine's catalogue holds, and each machine's point.
type ConsistentPoint struct {
	Label string `json:"label"`
	// Time is the newest of the machines' points' times.
	Time   time.Time         `json:"time"`
	Points map[string]uint64 `json:"points"` // point id by machine name
}

// PlanConsistentPoints lists the plan's multi-machine consistent points,
// newest first: the labels of the form consistent-… that every machine
// of the plan holds.
func (s *Server) PlanConsistentPoints(ctx context.Context, machines []string) ([]ConsistentPoint, error) {
	byLabel := map[string]map[string]control.RecoveryPoint{}
	for _, name := range machines {
		m, err := s.o.Store.MachineByName(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("machine %s: %w", name, err)
		}
		pts, err := s.o.Store.ListPoints(ctx, m.ID)
		if err != nil {
			return nil, err
		}
		for _, p := range pts {
			if !strings.HasPrefix(p.Label, ConsistentLabelPrefix) {
				continue
			}
			if byLabel[p.Label] == nil {
				byLabel[p.Label] = map[string]control.RecoveryPoint{}
			}
			byLabel[p.Label][name] = p
		}
	}
	out := []ConsistentPoint{}
	for label, pts := range byLabel {
		if len(pts) != len(machines) {
			continue
		}
		cp := ConsistentPoint{Label: label, Points: map[string]uint64{}}
		for name, p := range pts {
			cp.Points[name] = p.ID
			if p.Time.After(cp.Time) {
				cp.Time = p.Time
			}
		}
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b ConsistentPoint) int { return b.Time.Compare(a.Time) })
	return out, nil
}

// ConsistentPoints finds the plan's newest multi-machine consistent
// point; it returns its label and the point id per machine name.
func (s *Server) ConsistentPoints(ctx context.Context, machines []string) (string, map[string]uint64, error) {
	cps, err := s.PlanConsistentPoints(ctx, machines)
	if err != nil {
		return "", nil, err
	}
	if len(cps) == 0 {
		return "", nil, errorf(http.StatusConflict, "no multi-machine consistent point holds every machine of the plan (%s)", strings.Join(machines, ", "))
	}
	return cps[0].Label, cps[0].Points, nil
}

func (s *Server) planPoints(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	p, err := s.o.Store.GetPlan(r.Context(), name)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", name, err)
	}
	return s.PlanConsistentPoints(r.Context(), p.Machines())
}

func joinOperations() string {
	s := make([]string, len(control.PlanOperations))
	for i, o := range control.PlanOperations {
		s[i] = string(o)
	}
	return strings.Join(s, ", ")
}
