package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
	"github.com/standby-dr/standby/internal/store"
)

// A plan run (internal/api/planruns.go, docs/plans.md) is one job whose
// steps are the plan's: per group, its before actions, the operation on
// its machines (in parallel, each the machine operation's own job), its
// after actions; then the report. Every step writes its progress into
// the run's report (control.PlanRun) as it goes. A restarted server
// resumes the job: a machines step finds the machine jobs it submitted in
// the report and waits for them; a manual step goes on waiting; a script
// is run again only if the plan says it may be (retries > 0).
//
// A failed run stops at the failed step. Retrying it (a new run with
// RetryOf) does again only what did not succeed: its finished steps, and
// the machine jobs that succeeded, are taken as done; skipping also takes
// the failed step as done.

// planMachineWait bounds a group's machine operations.
const planMachineWait = 2 * time.Hour

func (s *Server) planRunPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	var p api.PlanRunParams
	if err := json.Unmarshal(job.Params, &p); err != nil || p.Plan.Name == "" || !p.Operation.Valid() {
		return nil, orchestrate.Permanent(fmt.Errorf("plan-run job: params %s: want a plan and an operation", job.Params))
	}
	pr := &planRunner{s: s, job: job, p: p}
	var specs []orchestrate.StepSpec
	if p.Point == api.PointConsistent && (p.Operation == control.PlanFailover || p.Operation == control.PlanTestFailover || p.Operation == control.PlanDrill) {
		specs = append(specs, orchestrate.StepSpec{Name: "choose the newest multi-machine consistent point", Idempotent: true, Retries: 2, Timeout: time.Minute,
			Run: pr.choosePoint})
	}
	groups := map[string]control.PlanGroup{}
	for _, g := range p.Plan.Groups {
		groups[g.Name] = g
	}
	for _, st := range api.PlanSteps(p) {
		g := groups[st.Group]
		spec := orchestrate.StepSpec{Name: st.Name}
		switch st.Kind {
		case "machines":
			op := st.Operation
			spec.Idempotent, spec.Retries, spec.Timeout = true, 1, planMachineWait
			spec.Run = pr.step(st.Name, func(ctx context.Context, r *orchestrate.StepRun) (string, error) { return pr.machines(ctx, r, g, op) })
		case "probes":
			spec.Idempotent, spec.Retries, spec.Timeout = true, 1, 30*time.Minute
			spec.Run = pr.step(st.Name, pr.probes)
		default:
			a := findAction(g, st.Name)
			spec.Timeout = a.ActionTimeout()
			if a.Manual != nil {
				spec.Idempotent = true // waiting again is harmless
				spec.Run = pr.step(st.Name, func(ctx context.Context, r *orchestrate.StepRun) (string, error) {
					return pr.manual(ctx, r, st.Name, a)
				})
			} else {
				// A script is run again (retried, or after a restart) only
				// when the plan says it may be.
				spec.Idempotent, spec.Retries = a.Retries > 0, a.Retries
				stage := "before"
				if strings.Contains(st.Name, "/after/") {
					stage = "after"
				}
				name := st.Name
				spec.Run = pr.step(st.Name, func(ctx context.Context, r *orchestrate.StepRun) (string, error) {
					return pr.script(ctx, r, name, g, stage, a)
				})
			}
		}
		specs = append(specs, spec)
	}
	specs = append(specs, orchestrate.StepSpec{Name: "report", Idempotent: true, Retries: 2, Timeout: time.Minute, Run: pr.report})
	return specs, nil
}

func findAction(g control.PlanGroup, step string) control.PlanAction {
	for _, a := range g.Before {
		if api.PlanStepName(g.Name, "before", a.Name) == step {
			return a
		}
	}
	for _, a := range g.After {
		if api.PlanStepName(g.Name, "after", a.Name) == step {
			return a
		}
	}
	return control.PlanAction{}
}

// planRunner runs one plan run's steps.
type planRunner struct {
	s   *Server
	job control.Job
	p   api.PlanRunParams
	mu  sync.Mutex // one update of the report at a time
}

// update changes the run's report and stores it (retried on a conflict).
func (pr *planRunner) update(ctx context.Context, fn func(*control.PlanRun)) (control.PlanRun, error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for attempt := 0; ; attempt++ {
		run, err := pr.s.api.EnsurePlanRun(ctx, pr.job, pr.p)
		if err != nil {
			return run, err
		}
		fn(&run)
		run, err = pr.s.st.UpdatePlanRun(ctx, run)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		return run, err
	}
}

func stepIndex(run *control.PlanRun, name string) int {
	return slices.IndexFunc(run.Steps, func(st control.PlanStepReport) bool { return st.Name == name })
}

// previous is the retried run's report of step name, if this run retries
// one.
func (pr *planRunner) previous(ctx context.Context, name string) (control.PlanStepReport, bool) {
	if pr.p.RetryOf == "" {
		return control.PlanStepReport{}, false
	}
	old, err := pr.s.st.GetPlanRun(ctx, pr.p.RetryOf)
	if err != nil {
		return control.PlanStepReport{}, false
	}
	if i := stepIndex(&old, name); i >= 0 {
		return old.Steps[i], true
	}
	return control.PlanStepReport{}, false
}

// step wraps a step's work: it records the step running, then its end,
// in the report; a step the retried run finished (or the operator
// skipped) is not done again.
func (pr *planRunner) step(name string, work func(context.Context, *orchestrate.StepRun) (string, error)) func(context.Context, *orchestrate.StepRun) error {
	return func(ctx context.Context, r *orchestrate.StepRun) error {
		if old, ok := pr.previous(ctx, name); ok && (old.State == control.JobSucceeded || old.State == control.PlanStepSkipped || name == pr.p.Skip) {
			state, result := control.JobSucceeded, "done in run "+pr.p.RetryOf+": "+old.Result
			if name == pr.p.Skip || old.State == control.PlanStepSkipped {
				state, result = control.PlanStepSkipped, "skipped by an operator (run "+pr.p.RetryOf+" failed here: "+old.Error+")"
			}
			r.SetResult(result)
			_, err := pr.update(ctx, func(run *control.PlanRun) {
				if i := stepIndex(run, name); i >= 0 {
					run.Steps[i].State, run.Steps[i].Result, run.Steps[i].StartedAt, run.Steps[i].EndedAt = state, result, old.StartedAt, old.EndedAt
				}
			})
			return err
		}
		now := pr.s.o.Now()
		if _, err := pr.update(ctx, func(run *control.PlanRun) {
			run.State = control.JobRunning
			if i := stepIndex(run, name); i >= 0 {
				run.Steps[i].State, run.Steps[i].Error = control.JobRunning, ""
				if run.Steps[i].StartedAt.IsZero() {
					run.Steps[i].StartedAt = now
				}
			}
		}); err != nil {
			return err
		}
		result, err := work(ctx, r)
		last := err == nil || orchestrate.IsPermanent(err) || ctx.Err() != nil
		_, uerr := pr.update(context.WithoutCancel(ctx), func(run *control.PlanRun) {
			i := stepIndex(run, name)
			if i < 0 {
				return
			}
			st := &run.Steps[i]
			st.EndedAt = pr.s.o.Now()
			switch {
			case err == nil:
				st.State, st.Result = control.JobSucceeded, result
			default:
				st.State, st.Error = control.JobFailed, err.Error()
				if last {
					run.State, run.Error, run.EndedAt = control.JobFailed, "step "+name+": "+err.Error(), st.EndedAt
				}
			}
		})
		if err == nil {
			r.SetResult(result)
			return uerr
		}
		return err
	}
}

// choosePoint resolves latest-consistent once for the whole run.
func (pr *planRunner) choosePoint(ctx context.Context, r *orchestrate.StepRun) error {
	run, err := pr.s.api.EnsurePlanRun(ctx, pr.job, pr.p)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(run.Machines, func(m control.PlanMachineReport) bool { return m.PointID > 0 }) {
		return nil // chosen before a restart
	}
	label, ids, err := pr.s.api.ConsistentPoints(ctx, pr.p.Plan.Machines())
	if err != nil {
		return orchestrate.Permanent(err)
	}
	_, err = pr.update(ctx, func(run *control.PlanRun) {
		for i := range run.Machines {
			run.Machines[i].PointID = ids[run.Machines[i].Machine]
		}
	})
	r.SetResult(fmt.Sprintf("multi-machine consistent point %s, held by all %d machines", label, len(ids)))
	return err
}

// machineBody is the machine operation op's request for machine m.
func (pr *planRunner) machineBody(m control.PlanMachineReport, op control.PlanOperation) map[string]any {
	body := map[string]any{}
	switch op {
	case control.PlanTestFailover, control.PlanFailover:
		point := pr.p.Point
		if m.PointID > 0 {
			point = strconv.FormatUint(m.PointID, 10)
		}
		if point != "" {
			body["point"] = point
		}
	case control.PlanReprotect:
		body["target"], body["force"] = pr.p.Target, pr.p.Force
		if pr.p.Process != "" {
			body["process"] = pr.p.Process
		}
	}
	return body
}

// machines does the operation to the group's machines in parallel, each
// through its own machine job, and waits for them all.
func (pr *planRunner) machines(ctx context.Context, r *orchestrate.StepRun, g control.PlanGroup, op control.PlanOperation) (string, error) {
	run, err := pr.s.api.EnsurePlanRun(ctx, pr.job, pr.p)
	if err != nil {
		return "", err
	}
	var old control.PlanRun
	if pr.p.RetryOf != "" {
		old, _ = pr.s.st.GetPlanRun(ctx, pr.p.RetryOf)
	}
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(g.Machines))
	for _, name := range g.Machines {
		i := slices.IndexFunc(run.Machines, func(m control.PlanMachineReport) bool { return m.Machine == name })
		if i < 0 {
			return "", orchestrate.Permanent(fmt.Errorf("machine %s is not in the run's report", name))
		}
		mr := run.Machines[i]
		if *pr.jobOf(&mr, op) == "" && old.ID != "" {
			// Retrying: a machine whose job succeeded in the failed run
			// is done.
			if j := slices.IndexFunc(old.Machines, func(m control.PlanMachineReport) bool { return m.Machine == name }); j >= 0 && *pr.jobOf(&old.Machines[j], op) != "" {
				if oj, err := pr.s.st.GetJob(ctx, *pr.jobOf(&old.Machines[j], op)); err == nil && oj.State == control.JobSucceeded {
					*pr.jobOf(&mr, op) = oj.ID
				}
			}
		}
		go func() { results <- result{name, pr.machine(ctx, name, mr, op)} }()
	}
	var errs []error
	done := 0
	for range g.Machines {
		res := <-results
		done++
		r.Progress(float64(done) / float64(len(g.Machines)))
		if res.err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", res.name, res.err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", orchestrate.Permanent(err)
	}
	return fmt.Sprintf("%s of %s done", op, strings.Join(g.Machines, ", ")), nil
}

// jobOf is where m records its job of op: a drill's cleanup has its own.
func (pr *planRunner) jobOf(m *control.PlanMachineReport, op control.PlanOperation) *string {
	if pr.p.Operation == control.PlanDrill && op == control.PlanTestCleanup {
		return &m.CleanupJob
	}
	return &m.Job
}

// machine submits (once) and waits for one machine's operation, then
// records what it gave.
func (pr *planRunner) machine(ctx context.Context, name string, mr control.PlanMachineReport, op control.PlanOperation) error {
	id := *pr.jobOf(&mr, op)
	if id == "" {
		j, err := pr.s.api.MachineOperation(ctx, pr.p.By+" (plan "+pr.p.Plan.Name+", run "+pr.job.ID+")", name, op, pr.machineBody(mr, op))
		if err != nil {
			return err
		}
		id = j.ID
	}
	if _, err := pr.update(ctx, func(run *control.PlanRun) {
		if i := slices.IndexFunc(run.Machines, func(m control.PlanMachineReport) bool { return m.Machine == name }); i >= 0 {
			*pr.jobOf(&run.Machines[i], op) = id
		}
	}); err != nil {
		return err
	}
	t := time.NewTicker(jobPoll)
	defer t.Stop()
	var j control.Job
	for {
		changed := pr.s.changes.wait()
		var err error
		if j, err = pr.s.st.GetJob(ctx, id); err != nil {
			return err
		}
		if j.State.Done() {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
	}
	if j.State != control.JobSucceeded {
		return fmt.Errorf("%s job %s %s: %s", op, j.ID, j.State, j.Error)
	}
	if op == control.PlanTestCleanup && pr.p.Operation == control.PlanDrill {
		return nil // the drill's report keeps the test failover's point
	}
	m, err := pr.s.st.MachineByName(ctx, name)
	if err != nil {
		return err
	}
	_, err = pr.update(ctx, func(run *control.PlanRun) {
		i := slices.IndexFunc(run.Machines, func(m control.PlanMachineReport) bool { return m.Machine == name })
		if i < 0 {
			return
		}
		rep := &run.Machines[i]
		rep.ReadyAt, rep.Result = j.UpdatedAt, j.Result
		switch {
		case op == control.PlanTestFailover && m.Test != nil:
			rep.PointID, rep.PointTime = m.Test.Report.PointID, m.Test.Report.PointTime
		case (op == control.PlanFailover || op == control.PlanPlannedFailover) && m.Failover != nil:
			rep.PointID, rep.PointTime = m.Failover.Report.PointID, m.Failover.Report.PointTime
			// A planned failover drains: nothing is lost. An unplanned one
			// loses at most what was written between the point and the
			// failover call.
			if !m.Failover.Planned && !rep.PointTime.IsZero() {
				rep.DataLossSeconds = max(0, m.Failover.RequestedAt.Sub(rep.PointTime).Seconds())
			}
		}
	})
	return err
}

// manual waits until an operator continues or aborts the run.
func (pr *planRunner) manual(ctx context.Context, r *orchestrate.StepRun, name string, a control.PlanAction) (string, error) {
	t := time.NewTicker(jobPoll)
	defer t.Stop()
	for {
		changed := pr.s.changes.wait()
		run, err := pr.s.st.GetPlanRun(ctx, pr.job.ID)
		if err != nil {
			return "", err
		}
		switch run.Signals[name] {
		case "continue":
			return "continued by an operator", nil
		case "abort":
			return "", orchestrate.Permanent(errors.New("aborted by an operator"))
		}
		r.Message(fmt.Sprintf("waiting for an operator: %s — then `standby plan continue %s %s` (or `standby plan abort %s %s`)",
			a.Manual.Instructions, pr.p.Plan.Name, pr.job.ID, pr.p.Plan.Name, pr.job.ID))
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-changed:
		case <-t.C:
		}
	}
}

// script runs a script action at the site where the operation leaves
// the machines: on the master target of the group's first machine (the
// secondary site) or on its process server (the primary site), as an
// action of that component's desired state (internal/api/actions.go),
// with the run in its environment. Its output's tail goes into the
// result or the error.
func (pr *planRunner) script(ctx context.Context, r *orchestrate.StepRun, step string, g control.PlanGroup, stage string, a control.PlanAction) (string, error) {
	m, err := pr.s.st.MachineByName(ctx, g.Machines[0])
	if err != nil {
		return "", err
	}
	site, role, comp := pr.p.Operation.Site(), "master target", m.Target
	if site == "primary" {
		role, comp = "process server", m.Process
	}
	if comp == "" {
		return "", orchestrate.Permanent(fmt.Errorf("machine %s has no %s at the %s site to run the script on", m.Name, role, site))
	}
	srv, err := pr.s.st.GetServer(ctx, comp)
	if err != nil {
		return "", err
	}
	act := api.DesiredAction{ID: fmt.Sprintf("%s/%s/%d", pr.job.ID, step, r.Attempt()), Command: a.Script.Command, Timeout: a.ActionTimeout(),
		Env: []string{"STANDBY_PLAN=" + pr.p.Plan.Name, "STANDBY_RUN=" + pr.job.ID, "STANDBY_GROUP=" + g.Name,
			"STANDBY_MACHINES=" + strings.Join(g.Machines, " "), "STANDBY_OPERATION=" + string(pr.p.Operation),
			"STANDBY_STAGE=" + stage, "STANDBY_SITE=" + site, "STANDBY_ACTION=" + a.Name, "STANDBY_RUN_ON=" + srv.Name}}
	r.Message(fmt.Sprintf("running on %s %s at the %s site", role, srv.Name, site))
	rep, err := pr.s.api.RunAction(ctx, comp, act)
	if err != nil {
		return "", err
	}
	tail := rep.Output
	if len(tail) > 2048 {
		tail = "…" + tail[len(tail)-2048:]
	}
	if !rep.OK {
		if tail != "" {
			return "", fmt.Errorf("on %s %s: %s: %s", role, srv.Name, rep.Error, tail)
		}
		return "", fmt.Errorf("on %s %s: %s", role, srv.Name, rep.Error)
	}
	return fmt.Sprintf("on %s %s: %s", role, srv.Name, cmp.Or(tail, "exit 0")), nil
}

// probes checks every replica machine of a drill with its probe. A
// failed probe does not stop the drill (the cleanup must run): the
// report step fails the run after it.
func (pr *planRunner) probes(ctx context.Context, r *orchestrate.StepRun) (string, error) {
	var probes map[string]control.Probe
	if pr.p.Plan.Drill != nil {
		probes = pr.p.Plan.Drill.Probes
	}
	type result struct {
		name, text string
		ok         bool
	}
	results := make(chan result, len(probes))
	for name, pb := range probes {
		go func() {
			m, err := pr.s.st.MachineByName(ctx, name)
			if err != nil {
				results <- result{name, err.Error(), false}
				return
			}
			text, err := runProbe(ctx, pr.p.Plan.Name, m, pb)
			if err != nil {
				results <- result{name, err.Error(), false}
				return
			}
			results <- result{name, text, true}
		}()
	}
	failed := 0
	for range probes {
		res := <-results
		if !res.ok {
			failed++
		}
		if _, err := pr.update(ctx, func(run *control.PlanRun) {
			if i := slices.IndexFunc(run.Machines, func(m control.PlanMachineReport) bool { return m.Machine == res.name }); i >= 0 {
				run.Machines[i].Probe, run.Machines[i].ProbeOK = res.text, res.ok
			}
		}); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d probes, %d failed", len(probes), failed), nil
}

// runProbe checks machine m's replica machine (of its test failover)
// with pb; it says what it found.
func runProbe(ctx context.Context, plan string, m control.Machine, pb control.Probe) (string, error) {
	timeout := pb.Timeout.D()
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case pb.TCP != "":
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", pb.TCP)
		if err != nil {
			return "", fmt.Errorf("tcp %s: %w", pb.TCP, err)
		}
		c.Close()
		return "tcp " + pb.TCP + " connects", nil
	case pb.HTTP != "":
		req, err := http.NewRequestWithContext(ctx, "GET", pb.HTTP, nil)
		if err != nil {
			return "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", fmt.Errorf("http %s: %w", pb.HTTP, err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return "", fmt.Errorf("http %s: %s", pb.HTTP, resp.Status)
		}
		return "http " + pb.HTTP + " " + resp.Status, nil
	}
	cmd := exec.CommandContext(ctx, pb.Command[0], pb.Command[1:]...)
	cmd.Env = append(os.Environ(), "STANDBY_PLAN="+plan, "STANDBY_MACHINE="+m.Name)
	if m.Test != nil {
		cmd.Env = append(cmd.Env, "STANDBY_REPLICA="+m.Test.Report.Machine, "STANDBY_DISKS="+strings.Join(m.Test.Report.Disks, " "))
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if len(text) > 1024 {
		text = "…" + text[len(text)-1024:]
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", pb.Command[0], err, text)
	}
	return cmp.Or(text, pb.Command[0]+": exit 0"), nil
}

// report ends the run: its state, when it ended and the achieved RTO. A
// drill whose probe failed fails here, after its cleanup.
func (pr *planRunner) report(ctx context.Context, r *orchestrate.StepRun) error {
	var probeErr error
	run, err := pr.update(ctx, func(run *control.PlanRun) {
		probeErr = nil
		for _, m := range run.Machines {
			if m.Probe != "" && !m.ProbeOK {
				probeErr = errors.Join(probeErr, fmt.Errorf("probe of %s: %s", m.Machine, m.Probe))
			}
		}
		run.State, run.EndedAt, run.Error = control.JobSucceeded, pr.s.o.Now(), ""
		if probeErr != nil {
			run.State, run.Error = control.JobFailed, "drill failed: "+strings.ReplaceAll(probeErr.Error(), "\n", "; ")
		}
		var last time.Time
		for _, m := range run.Machines {
			if m.ReadyAt.After(last) {
				last = m.ReadyAt
			}
		}
		if !last.IsZero() {
			run.RTOSeconds = last.Sub(run.StartedAt).Seconds()
		}
	})
	if err != nil {
		return err
	}
	if probeErr != nil {
		return orchestrate.Permanent(errors.New(run.Error))
	}
	var lost float64
	for _, m := range run.Machines {
		lost = max(lost, m.DataLossSeconds)
	}
	r.Progress(1)
	r.SetResult(fmt.Sprintf("plan %s: %s of %d machines in %d groups done in %s; RTO %.1fs; data loss window at most %.1fs; report: standby plan report %s %s",
		pr.p.Plan.Name, pr.p.Operation, len(run.Machines), len(pr.p.Plan.Groups), run.EndedAt.Sub(run.StartedAt).Round(time.Millisecond),
		run.RTOSeconds, lost, pr.p.Plan.Name, run.ID))
	return nil
}
