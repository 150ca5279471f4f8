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
		{Name: "wait for the agent to stop the source machine and drain its journal to a final bookmark; then fence", Idempotent: true, Retries: 3, Timeout: drainWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if err := currentFailover(m, p.Failover); err != nil {
						return false, err
					}
					m, err := s.api.FenceDrained(ctx, p.Machine, p.Failover)
					switch {
					case err == nil:
						d := m.Failover.Drain
						r.Progress(1)
						r.SetResult(fmt.Sprintf("drained: source %s, writes refused; the final bookmark %s is recovery point %s (nothing the agent acknowledged before the stop is missing); epoch %d",
							orDash(d.SourceState), d.Label, m.Failover.Point, m.Epoch))
						return true, nil
					case errors.Is(err, api.ErrDrainFailed):
						return false, orchestrate.Permanent(fmt.Errorf("%w; the source machine may be stopped: start it again through its driver, or fail over unplanned with `standby machines failover %s`", err, m.Name))
					case !errors.Is(err, api.ErrNotDrained):
						return false, err
					}
					if d := m.Failover.Drain; d == nil {
						r.Message("the agent has not reported the drain yet")
					} else {
						r.Message(fmt.Sprintf("agent: source %s, writes refused %v, final bookmark at journal sequence %d; %v", orDash(d.SourceState), d.WritesRefused, d.BookmarkSeq, err))
					}
					return false, nil
				})
			}},
		s.publishStep("publish the new epoch and the failover"),
		s.waitFailedOverStep(p),
	}, nil
}
