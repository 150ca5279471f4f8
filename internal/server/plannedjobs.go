package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
)

// drainWait bounds how long a planned failover waits for the agent to
// stop the source machine and drain its journal: the guest's shutdown
// (the driver's stop timeout) plus the backlog's shipping.
const drainWait = 30 * time.Minute

// plannedFailoverPlanner: publish the drain; wait for the agent to stop
// the source, refuse writes and drain to a final bookmark, then fence and
// fail over to that bookmark's point (api.FenceDrained); wait for the
// master target as a failover does. Every step reads the store or calls
// the idempotent FenceDrained, so a restarted server resumes the job.
func (s *Server) plannedFailoverPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	p, err := failoverParams(job)
	if err != nil {
		return nil, err
	}
	return []orchestrate.StepSpec{
		s.publishStep("publish the drain to the agent"),
		s.drainStep(drainStepSpec{
			name:    "wait for the agent to stop the source machine and drain its journal to a final bookmark; then fence",
			machine: p.Machine, who: "agent", source: "source",
			current: func(m control.Machine) error { return currentFailover(m, p.Failover) },
			fence: func(ctx context.Context) (control.Machine, error) {
				return s.api.FenceDrained(ctx, p.Machine, p.Failover)
			},
			report: func(m control.Machine) *control.DrainReport { return m.Failover.Drain },
			result: func(m control.Machine, d control.DrainReport) string {
				return fmt.Sprintf("drained: source %s, writes refused; the final bookmark %s is recovery point %s (nothing the agent acknowledged before the stop is missing); epoch %d",
					orDash(d.SourceState), d.Label, m.Failover.Point, m.Epoch)
			},
			failed: func(m control.Machine, err error) error {
				return fmt.Errorf("%w; the source machine may be stopped: start it again through its driver, or fail over unplanned with `standby machines failover %s`", err, m.Name)
			},
		}),
		s.publishStep("publish the new epoch and the failover"),
		s.waitFailedOverStep(p),
	}, nil
}

// drainStepSpec says what a drain step waits for: a planned failover's
// (the agent drains) or a failback's (the failover's master target).
type drainStepSpec struct {
	name, machine string
	who, source   string // who drains, and what it stops, for messages
	current       func(control.Machine) error
	fence         func(context.Context) (control.Machine, error) // FenceDrained or FenceFailback
	report        func(control.Machine) *control.DrainReport
	result        func(control.Machine, control.DrainReport) string
	failed        func(control.Machine, error) error // the error of a failed drain
}

// drainStep waits until the drain is done and fenced (api.ErrNotDrained:
// not yet), showing the drain's progress.
func (s *Server) drainStep(d drainStepSpec) orchestrate.StepSpec {
	return orchestrate.StepSpec{Name: d.name, Idempotent: true, Retries: 3, Timeout: drainWait,
		Run: func(ctx context.Context, r *orchestrate.StepRun) error {
			return s.waitMachine(ctx, r, d.machine, func(m control.Machine) (bool, error) {
				if err := d.current(m); err != nil {
					return false, err
				}
				m, err := d.fence(ctx)
				switch {
				case err == nil:
					r.Progress(1)
					r.SetResult(d.result(m, *d.report(m)))
					return true, nil
				case errors.Is(err, api.ErrDrainFailed):
					return false, orchestrate.Permanent(d.failed(m, err))
				case !errors.Is(err, api.ErrNotDrained):
					return false, err
				}
				if rep := d.report(m); rep == nil {
					r.Message(fmt.Sprintf("the %s has not reported the drain yet", d.who))
				} else {
					r.Message(fmt.Sprintf("%s: %s %s, writes refused %v, final bookmark at journal sequence %d; %v", d.who, d.source, orDash(rep.SourceState), rep.WritesRefused, rep.BookmarkSeq, err))
				}
				return false, nil
			})
		}}
}
