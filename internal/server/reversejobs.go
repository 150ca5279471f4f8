package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
)

// The reprotect and failback jobs (internal/api/reverse.go says what
// each component does). Their steps read the store or call the
// idempotent FenceFailback and FinishFailback, so a restarted server
// resumes them.

// reverseWait bounds the waits of re-protection and failback: a
// comparison of the disks and the copy of what differs, or a guest's
// shutdown and a drain.
const reverseWait = 2 * time.Hour

func reverseParams(job control.Job) (api.ReverseJobParams, error) {
	var p api.ReverseJobParams
	if err := json.Unmarshal(job.Params, &p); err != nil || p.Machine == "" || p.Reverse == "" || (job.Kind == api.JobFailback && p.Failback == "") {
		return p, orchestrate.Permanent(fmt.Errorf("%s job: params %s: want {\"machine\": ID, \"reverse\": ID[, \"failback\": ID]}", job.Kind, job.Params))
	}
	return p, nil
}

func currentReverse(m control.Machine, id string) error {
	if m.Reverse == nil || m.Reverse.ID != id {
		return orchestrate.Permanent(fmt.Errorf("machine %s: the re-protection %s was replaced or ended meanwhile", m.Name, id))
	}
	return nil
}

// reprotectPlanner: the old primary's agent refuses writes; the master
// target at the primary site makes its replica over the old disks; the
// failover's master target ships; protected in reverse.
func (s *Server) reprotectPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	p, err := reverseParams(job)
	if err != nil {
		return nil, err
	}
	return []orchestrate.StepSpec{
		s.publishStep("publish the re-protection"),
		{Name: "wait for the old primary's agent to stop the source machine and refuse writes", Idempotent: true, Retries: 3, Timeout: reverseWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if err := currentReverse(m, p.Reverse); err != nil {
						return false, err
					}
					if api.OldPrimaryFrozen(m) {
						d := m.Failover.Drain
						r.SetResult(fmt.Sprintf("the old primary's agent refuses writes; source %s", orDash(d.SourceState)))
						return true, nil
					}
					if d := m.Failover.Drain; d != nil && d.ID == p.Reverse && d.Error != "" {
						r.Message("the old primary's agent: " + d.Error)
					} else {
						r.Message("the old primary's agent has not reported yet (it must be running to give its disks as the seed)")
					}
					return false, nil
				})
			}},
		s.publishStep("publish the receiver at the primary site"),
		{Name: "wait for the master target at the primary site to make its replica over the old disks", Idempotent: true, Retries: 3, Timeout: reverseWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if err := currentReverse(m, p.Reverse); err != nil {
						return false, err
					}
					rep := m.Reverse.Report
					if rep.Ready {
						r.SetResult(fmt.Sprintf("master target %s holds the replica in place over %v", m.Reverse.Target, m.Reverse.Seed))
						return true, nil
					}
					r.Message("master target: " + orDash(rep.Error))
					return false, nil
				})
			}},
		s.publishStep("publish the reverse agent"),
		{Name: "wait for the failover's master target to compare, send what differs and ship in delta", Idempotent: true, Retries: 3, Timeout: reverseWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if err := currentReverse(m, p.Reverse); err != nil {
						return false, err
					}
					rep := m.Reverse.Report
					switch m.State {
					case control.StateProtected, control.StateResynchronizing:
						r.Progress(1)
						r.SetResult(fmt.Sprintf("%s protected in reverse: master target %s ships to %s through process server %s; the comparison found %d bytes differing, %d bytes sent; fail back with `standby machines failback %s`",
							m.Name, m.Reverse.Agent, m.Reverse.Target, m.Reverse.Process, rep.ResyncBytes, rep.SentBytes, m.Name))
						return true, nil
					case control.StateReprotecting:
					default:
						return false, orchestrate.Permanent(fmt.Errorf("machine %s is %s now", m.Name, m.State))
					}
					repl := rep.Replication
					if repl.ResyncBytes > 0 {
						r.Progress(float64(repl.ResyncBytes-repl.ResyncLeft) / float64(repl.ResyncBytes))
					}
					r.Message(fmt.Sprintf("reverse agent: %s, %d of %d differing bytes sent %s", orDash(repl.State), repl.ResyncBytes-repl.ResyncLeft, repl.ResyncBytes, rep.Error))
					return false, nil
				})
			}},
	}, nil
}

// failbackPlanner: the failover's master target stops the replica
// machine and drains back; fence; the receiver releases the old disks;
// the original agent continues on them; protected in the original
// direction.
func (s *Server) failbackPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	p, err := reverseParams(job)
	if err != nil {
		return nil, err
	}
	return []orchestrate.StepSpec{
		s.publishStep("publish the failback"),
		s.drainStep(drainStepSpec{
			name:    "wait for the master target to stop the replica machine and drain it to the primary site; then fence",
			machine: p.Machine, who: "master target", source: "replica machine",
			current: func(m control.Machine) error { return currentReverse(m, p.Reverse) },
			fence: func(ctx context.Context) (control.Machine, error) {
				return s.api.FenceFailback(ctx, p.Machine, p.Failback)
			},
			report: func(m control.Machine) *control.DrainReport {
				if m.Reverse == nil || m.Reverse.Failback == nil {
					return nil
				}
				return m.Reverse.Failback.Drain
			},
			result: func(m control.Machine, d control.DrainReport) string {
				return fmt.Sprintf("replica machine %s, writes refused, drained to the final bookmark at journal sequence %d: no data lost; epoch %d", orDash(d.SourceState), d.BookmarkSeq, m.Epoch)
			},
			failed: func(_ control.Machine, err error) error { return err },
		}),
		s.publishStep("publish the release and the resumption"),
		{Name: "wait for the primary's disks to be released and the original agent to continue on them", Idempotent: true, Retries: 3, Timeout: reverseWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					m, err := s.api.FinishFailback(ctx, p.Machine, p.Failback)
					switch {
					case err == nil:
						r.SetResult(fmt.Sprintf("the agent continues at epoch %d on the primary's disks; the secondary's failover is removed", m.Epoch))
						return true, nil
					case !errors.Is(err, api.ErrNotFailedBack):
						return false, orchestrate.Permanent(err)
					}
					r.Message(err.Error())
					return false, nil
				})
			}},
		{Name: "wait for protection in the original direction", Idempotent: true, Retries: 3, Timeout: reverseWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					switch m.State {
					case control.StateProtected:
						r.Progress(1)
						r.SetResult(fmt.Sprintf("failed back with no data lost: %s is protected in the original direction again (agent %s, master target %s); the comparison sent %d bytes the machine wrote at the secondary",
							m.Name, m.Agent, m.Target, m.Replication.ResyncBytes))
						return true, nil
					case control.StateResynchronizing:
					default:
						return false, orchestrate.Permanent(fmt.Errorf("machine %s is %s now", m.Name, m.State))
					}
					r.Message(fmt.Sprintf("agent: %s, %d of %d differing bytes sent", orDash(m.Replication.State), m.Replication.ResyncBytes-m.Replication.ResyncLeft, m.Replication.ResyncBytes))
					return false, nil
				})
			}},
	}, nil
}
