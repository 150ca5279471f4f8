package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
)

// The failover and commit jobs follow the machine's failover as the master
// target reports it: the API call moved the state, raised the epoch and
// published the desired state; the target's reports move the state on
// (internal/api's reportFailover). The steps only read the store, so they
// are idempotent and look again after a restart of the server.

// failoverWait bounds how long a failover job waits for the master target:
// fencing and exporting are cheap whatever the disks' size, starting the
// machine takes what its driver takes. Hydration is not waited for.
const failoverWait = 30 * time.Minute

func failoverParams(job control.Job) (api.FailoverJobParams, error) {
	var p api.FailoverJobParams
	if err := json.Unmarshal(job.Params, &p); err != nil || p.Machine == "" || p.Failover == "" {
		return p, orchestrate.Permanent(fmt.Errorf("%s job: params %s: want {\"machine\": ID, \"failover\": ID}", job.Kind, job.Params))
	}
	return p, nil
}

// currentFailover refuses when the machine's failover is no longer id.
func currentFailover(m control.Machine, id string) error {
	if m.Failover == nil || m.Failover.ID != id {
		return orchestrate.Permanent(fmt.Errorf("machine %s: the failover %s was replaced meanwhile (failed over again to another point?)", m.Name, id))
	}
	return nil
}

// failoverPlanner: publish, wait for fenced + exported + running.
func (s *Server) failoverPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	p, err := failoverParams(job)
	if err != nil {
		return nil, err
	}
	return []orchestrate.StepSpec{
		s.publishStep("publish the new epoch and the failover"),
		s.waitFailedOverStep(p),
	}, nil
}

// waitFailedOverStep waits until the master target reports the replica
// machine of failover p running from the point (failover-done).
func (s *Server) waitFailedOverStep(p api.FailoverJobParams) orchestrate.StepSpec {
	return orchestrate.StepSpec{Name: "wait for the master target to fence, export and start the replica machine", Idempotent: true, Retries: 3, Timeout: failoverWait,
		Run: func(ctx context.Context, r *orchestrate.StepRun) error {
			return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
				if err := currentFailover(m, p.Failover); err != nil {
					return false, err
				}
				rep := m.Failover.Report
				switch m.State {
				case control.StateFailedOver, control.StateFailoverCommitted:
					r.Progress(1)
					planned := ""
					if d := m.Failover.Drain; m.Failover.Planned && d != nil {
						planned = fmt.Sprintf("planned: source %s, writes refused, journal drained to the final bookmark: no data lost. ", orDash(d.SourceState))
					}
					r.SetResult(planned + fmt.Sprintf("%s failed over: replica machine %s runs from recovery point %d (%s), export %s; epoch %d (the old primary is fenced); hydration %s; commit with `standby machines commit %s`",
						m.Name, m.Failover.Replica.Name, rep.PointID, rep.PointTime.UTC().Format(time.RFC3339), rep.Export, m.Epoch, hydrationText(rep.Hydration), m.Name))
					return true, nil
				case control.StateFailoverFailed:
					return false, orchestrate.Permanent(fmt.Errorf("the master target could not fail %s over: %s; retry (perhaps with another point): run `standby machines failover %s --point SEL`", m.Name, rep.Error, m.Name))
				case control.StateFailoverStarted:
				default:
					return false, orchestrate.Permanent(fmt.Errorf("machine %s is %s now", m.Name, m.State))
				}
				if rep.Phase == "" {
					r.Message("the master target has not reported yet")
				} else {
					r.Message(fmt.Sprintf("master target: %s, fenced at epoch %d, export %s, machine %s %s %s", rep.Phase, rep.Fenced, orDash(rep.Export), orDash(rep.Machine), orDash(rep.MachineState), rep.Error))
				}
				return false, nil
			})
		}}
}

// commitPlanner: publish the commit, wait until the master target reports
// the history released (its report moves the state to
// failover-committed).
func (s *Server) commitPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	p, err := failoverParams(job)
	if err != nil {
		return nil, err
	}
	return []orchestrate.StepSpec{
		s.publishStep("publish the commit"),
		{Name: "wait for the master target to release the other points", Idempotent: true, Retries: 3, Timeout: failoverWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if err := currentFailover(m, p.Failover); err != nil {
						return false, err
					}
					rep := m.Failover.Report
					switch m.State {
					case control.StateFailoverCommitted:
						r.Progress(1)
						r.SetResult(fmt.Sprintf("failover of %s committed: recovery point %d is final, %d other points released; export %s stays",
							m.Name, rep.PointID, rep.Released, orDash(rep.Export)))
						return true, nil
					case control.StateFailedOver:
					default:
						return false, orchestrate.Permanent(fmt.Errorf("machine %s is %s now", m.Name, m.State))
					}
					msg := "the master target has not released the other points yet"
					if rep.Error != "" {
						msg += ": " + rep.Error
					}
					r.Message(msg)
					return false, nil
				})
			}},
	}, nil
}

// hydrationText says how far hydration is.
func hydrationText(h control.Hydration) string {
	switch {
	case h.Error != "":
		return "failed: " + h.Error
	case h.Complete:
		return "complete"
	case h.Total == 0:
		return "not started"
	}
	return fmt.Sprintf("%d%% (%d of %d bytes), continuing in the background (`standby machines show`)", h.Done*100/h.Total, h.Done, h.Total)
}
