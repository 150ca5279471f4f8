package server

import (
	"context"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Drills (docs/plans.md): a plan with a drill policy is drilled every
// drill.every — a run of operation drill: a test failover of every group,
// the health probes, the cleanup — and the first time soon after it is
// made. Each drill keeps its report like any run; the health assessment
// raises drill/<plan> when the newest drill failed or none passed within
// the window (control.DesiredAlerts).

// drillCheck is how often the schedules are looked at.
const drillCheck = 5 * time.Second

func (s *Server) drillLoop(ctx context.Context) {
	t := time.NewTicker(drillCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		plans, err := s.st.ListPlans(ctx)
		if err != nil {
			s.o.Log.Warn("drills: list plans", "err", err)
			continue
		}
		for _, p := range plans {
			if p.Drill == nil {
				continue
			}
			if err := s.maybeDrill(ctx, p); err != nil && ctx.Err() == nil {
				s.o.Log.Warn("drill", "plan", p.Name, "err", err)
			}
		}
	}
}

// maybeDrill starts a drill of p when it is due and no run of p is in
// progress.
func (s *Server) maybeDrill(ctx context.Context, p control.Plan) error {
	last, _, err := s.lastDrill(ctx, p.Name)
	if err != nil {
		return err
	}
	if last != nil && s.o.Now().Sub(last.StartedAt) < p.Drill.Every.D() {
		return nil
	}
	jobs, err := s.st.ListJobs(ctx, store.JobFilter{Object: api.PlanObject(p.Name)})
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if !j.State.Done() {
			return nil // a run (or a drill) is in progress: later
		}
	}
	run, err := s.api.StartPlanRun(ctx, api.PlanRunParams{Plan: p, Operation: control.PlanDrill, By: "system (scheduled drill)"})
	if err == nil {
		s.o.Log.Info("scheduled drill started", "plan", p.Name, "run", run.ID)
	}
	return err
}

// lastDrill is the plan's newest drill run, and when its newest passing
// one ended.
func (s *Server) lastDrill(ctx context.Context, plan string) (*control.PlanRun, time.Time, error) {
	runs, err := s.st.ListPlanRuns(ctx, plan, 100)
	if err != nil {
		return nil, time.Time{}, err
	}
	var last *control.PlanRun
	var passed time.Time
	for i := range runs {
		r := runs[i]
		if r.Operation != control.PlanDrill {
			continue
		}
		if last == nil {
			last = &runs[i]
		}
		if r.State == control.JobSucceeded && r.EndedAt.After(passed) {
			passed = r.EndedAt
		}
	}
	return last, passed, nil
}

// drillInputs are the drill histories of the plans with a drill policy.
func (s *Server) drillInputs(ctx context.Context) ([]control.DrillInput, error) {
	plans, err := s.st.ListPlans(ctx)
	if err != nil {
		return nil, err
	}
	var out []control.DrillInput
	for _, p := range plans {
		if p.Drill == nil {
			continue
		}
		last, passed, err := s.lastDrill(ctx, p.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, control.DrillInput{Plan: p, Last: last, Passed: passed})
	}
	return out, nil
}
