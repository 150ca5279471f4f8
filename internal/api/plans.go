package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Recovery plans (docs/plans.md) are declarative: PUT /v1/plans/{name}
// applies one (`standby plan apply -f plan.yaml`) and is idempotent: a
// plan that declares what is stored already writes nothing. Runs of a
// plan are jobs on the object plan/NAME (planruns.go).

// planApplyResponse answers PUT /v1/plans/{name}: the plan as stored (or
// as it would be, with dry_run), whether it changed (would change) and
// was (would be) created, and what changed, one line a change
// (control.DiffPlans).
type planApplyResponse struct {
	Plan    control.Plan `json:"plan"`
	Changed bool         `json:"changed"`
	Created bool         `json:"created"`
	DryRun  bool         `json:"dry_run,omitempty"`
	Diff    []string     `json:"diff"`
}

// planObject is the object of a plan's jobs and audit entries.
func planObject(name string) string { return "plan/" + name }

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request) (any, error) {
	ps, err := s.o.Store.ListPlans(r.Context())
	if ps == nil && err == nil {
		ps = []control.Plan{}
	}
	return ps, err
}

func (s *Server) getPlan(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.GetPlan(r.Context(), r.PathValue("name"))
}

// applyPlan checks the plan in the body (its rules, then that the server
// knows its machines), compares it with the stored one and creates or
// updates it when it differs. The update is optimistic: it is refused
// (409) when the plan changed since it was read here, or since the
// caller read it when the body carries a version.
func (s *Server) applyPlan(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	dry, err := queryBool(r, "dry_run")
	if err != nil {
		return nil, err
	}
	var p control.Plan
	if err := decode(w, r, &p); err != nil {
		return nil, err
	}
	if p.Name != name {
		return nil, errorf(http.StatusBadRequest, "name %q in the body differs from %q in the path: a plan is not renamed (apply it under the new name, then delete the old one)", p.Name, name)
	}
	if err := p.Validate(); err != nil {
		return nil, errorf(http.StatusBadRequest, "plan %s is invalid:\n  %s", name, strings.Join(control.PlanProblems(err), "\n  "))
	}
	ctx := r.Context()
	if err := s.knownMachines(ctx, p); err != nil {
		return nil, err
	}
	cur, err := s.o.Store.GetPlan(ctx, name)
	exists := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if p.Version != 0 && p.Version != cur.Version {
		return nil, errorf(http.StatusConflict, "plan %s is at version %d, the body was read at version %d: get it again (or leave the version out)", name, cur.Version, p.Version)
	}
	diff := control.DiffPlans(cur, p)
	out := planApplyResponse{Plan: cur, Changed: !exists || len(diff) > 0, Created: !exists, DryRun: dry, Diff: diff}
	if !out.Changed {
		return out, nil
	}
	next := cur
	next.Description, next.Groups, next.Drill, next.UpdatedAt = p.Description, p.Groups, p.Drill, s.now()
	if !exists {
		next.Name, next.CreatedAt = name, next.UpdatedAt
	}
	if dry {
		next.Version++ // what it would be; no ID until it is created
		out.Plan = next
		return out, nil
	}
	if exists {
		next, err = s.o.Store.UpdatePlan(ctx, next)
	} else {
		next.ID = newID()
		next, err = s.o.Store.CreatePlan(ctx, next)
	}
	s.audit(ctx, "plan.apply", planObject(name), err, strings.Join(diff, "; "))
	if err != nil {
		return nil, err
	}
	out.Plan = next
	return out, nil
}

// knownMachines refuses a plan naming a machine no agent reported.
func (s *Server) knownMachines(ctx context.Context, p control.Plan) error {
	ms, err := s.o.Store.ListMachines(ctx, store.MachineFilter{})
	if err != nil {
		return err
	}
	known := make(map[string]bool, len(ms))
	for _, m := range ms {
		known[m.Name] = true
	}
	var unknown []string
	for _, g := range p.Groups {
		for _, m := range g.Machines {
			if !known[m] {
				unknown = append(unknown, fmt.Sprintf("%s (group %s)", m, g.Name))
			}
		}
	}
	if len(unknown) > 0 {
		return errorf(http.StatusBadRequest, "plan %s names machines the server does not know: %s (standby machines list shows the machines agents reported)", p.Name, strings.Join(unknown, ", "))
	}
	return nil
}

// deletePlan removes a plan that no run uses (a job on the plan queued or
// running) and answers the deleted plan. Its runs are kept.
func (s *Server) deletePlan(w http.ResponseWriter, r *http.Request) (any, error) {
	name := r.PathValue("name")
	ctx := r.Context()
	p, err := s.o.Store.GetPlan(ctx, name)
	if err != nil {
		return nil, err
	}
	running, err := s.o.Store.ListJobs(ctx, store.JobFilter{Object: planObject(name), Unfinished: true, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(running) > 0 {
		j := running[0]
		return nil, errorf(http.StatusConflict, "plan %s is running (job %s, %s): wait for the run to end, or cancel it (standby jobs cancel %s)", name, j.ID, j.State, j.ID)
	}
	err = s.o.Store.DeletePlan(ctx, name)
	s.audit(ctx, "plan.delete", planObject(name), err, "")
	if err != nil {
		return nil, err
	}
	return p, nil
}
