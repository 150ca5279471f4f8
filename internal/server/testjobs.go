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

// testWait bounds how long a test failover job waits for the master
// target: exporting is cheap whatever the disks' size, starting a machine
// takes what its driver takes.
const testWait = 30 * time.Minute

// The test failover jobs follow the machine's test failover as the master
// target reports it: the API call moved the flag and published the
// desired state; the steps only read the store (and wake the desired
// state watches), so they are idempotent and simply look again after a
// restart of the server.

func testParams(job control.Job) (api.TestJobParams, error) {
	var p api.TestJobParams
	if err := json.Unmarshal(job.Params, &p); err != nil || p.Machine == "" || p.Test == "" {
		return p, orchestrate.Permanent(fmt.Errorf("%s job: params %s: want {\"machine\": ID, \"test\": ID}", job.Kind, job.Params))
	}
	return p, nil
}

// testFailoverPlanner: check the flag, publish, wait for the replica
// machine to run.
func (s *Server) testFailoverPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	p, err := testParams(job)
	if err != nil {
		return nil, err
	}
	return []orchestrate.StepSpec{
		{Name: "check the test failover", Idempotent: true, Retries: 3, Timeout: time.Minute,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if err := currentTest(m, p.Test, control.TestRunning); err != nil {
						return false, err
					}
					r.Message(fmt.Sprintf("point %s of %s, replica machine %s", m.Test.Point, m.Name, m.Test.Replica.Name))
					return true, nil
				})
			}},
		s.publishStep("publish the desired state"),
		{Name: "wait for the master target to start the replica machine", Idempotent: true, Retries: 3, Timeout: testWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if err := currentTest(m, p.Test, control.TestRunning); err != nil {
						return false, err
					}
					rep := m.Test.Report
					switch {
					case rep.Phase == control.TestPhaseFailed:
						return false, orchestrate.Permanent(fmt.Errorf("the master target could not run the test failover of %s: %s; clean it up: run `standby machines test-cleanup %s`", m.Name, rep.Error, m.Name))
					case rep.Phase == control.TestPhaseRunning && rep.MachineState == "running":
						r.Progress(1)
						r.SetResult(fmt.Sprintf("replica machine %s of %s runs from recovery point %d (%s), export %s; clean up with `standby machines test-cleanup %s`",
							m.Test.Replica.Name, m.Name, rep.PointID, rep.PointTime.UTC().Format(time.RFC3339), rep.Export, m.Name))
						return true, nil
					case rep.Phase == "":
						r.Message("the master target has not reported yet")
					default:
						r.Message(fmt.Sprintf("master target: %s, export %s, machine %s %s %s", rep.Phase, orDash(rep.Export), orDash(rep.Machine), orDash(rep.MachineState), rep.Error))
					}
					return false, nil
				})
			}},
	}, nil
}

// testCleanupPlanner: publish the removal, wait until the master target
// reports it done (its report moves the flag back to none).
func (s *Server) testCleanupPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	p, err := testParams(job)
	if err != nil {
		return nil, err
	}
	return []orchestrate.StepSpec{
		s.publishStep("publish the removal"),
		{Name: "wait for the master target to remove the replica machine and the export", Idempotent: true, Retries: 3, Timeout: testWait,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if m.Test == nil || m.Test.ID != p.Test {
						return false, orchestrate.Permanent(fmt.Errorf("machine %s: the test failover %s was replaced meanwhile", m.Name, p.Test))
					}
					rep := m.Test.Report
					if m.TestFailover == control.TestNone {
						r.Progress(1)
						r.SetResult(fmt.Sprintf("test failover of %s cleaned up: replica machine %s stopped, export %s and its overlay removed",
							m.Name, m.Test.Replica.Name, orDash(rep.Export)))
						return true, nil
					}
					msg := "the master target has not removed it yet"
					if rep.Error != "" {
						msg += ": " + rep.Error
					}
					r.Message(msg)
					return false, nil
				})
			}},
	}, nil
}

// currentTest refuses when the machine's test failover is no longer test
// in state want.
func currentTest(m control.Machine, test string, want control.TestFailoverState) error {
	if m.Test == nil || m.Test.ID != test {
		return orchestrate.Permanent(fmt.Errorf("machine %s: the test failover %s was replaced meanwhile", m.Name, test))
	}
	if m.TestFailover != want {
		return orchestrate.Permanent(fmt.Errorf("machine %s: its test failover is %s now", m.Name, orDash(string(m.TestFailover))))
	}
	return nil
}
