package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
	"github.com/standby-dr/standby/internal/store"
)

// Job kinds.
const (
	JobProtect = "protect"
)

// protectParams are a protect job's parameters.
type protectParams struct {
	Machine string `json:"machine"` // the machine's ID
}

// jobPoll is how often a waiting step looks at the machine again when
// nothing wakes it (a machine written through the server wakes it at
// once: changes).
const jobPoll = time.Second

// protectPlanner follows a machine from enabling to protected: the
// assignment is made by the API call that submits the job; the job
// waits for the agent's stream, then for the initial replication, with
// its progress. Both steps only read the store, so they are idempotent:
// after a restart of the server they simply wait again.
func (s *Server) protectPlanner(job control.Job) ([]orchestrate.StepSpec, error) {
	var p protectParams
	if err := json.Unmarshal(job.Params, &p); err != nil || p.Machine == "" {
		return nil, orchestrate.Permanent(fmt.Errorf("protect job: params %s: want {\"machine\": ID}", job.Params))
	}
	return []orchestrate.StepSpec{
		{Name: "wait for the agent's replication stream", Idempotent: true, Retries: 3, Timeout: 24 * time.Hour,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					if m.State == control.StateEnabling {
						r.Message(fmt.Sprintf("the agent of %s has not started replicating yet (its state: %s)", m.Name, orDash(m.Replication.State)))
						return false, nil
					}
					return true, nil
				})
			}},
		{Name: "initial replication", Idempotent: true, Retries: 3, Timeout: 30 * 24 * time.Hour,
			Run: func(ctx context.Context, r *orchestrate.StepRun) error {
				return s.waitMachine(ctx, r, p.Machine, func(m control.Machine) (bool, error) {
					switch m.State {
					case control.StateProtected:
						r.Progress(1)
						r.SetResult(fmt.Sprintf("machine %s is protected", m.Name))
						return true, nil
					case control.StateInitialReplication, control.StateResynchronizing, control.StateCritical, control.StatePaused:
						rep := m.Replication
						if rep.ResyncBytes > 0 {
							r.Progress(1 - float64(rep.ResyncLeft)/float64(rep.ResyncBytes))
						}
						r.Message(fmt.Sprintf("%s: %s left of %s", m.State, control.FormatBytes(rep.ResyncLeft), control.FormatBytes(rep.ResyncBytes)))
						return false, nil
					}
					return false, orchestrate.Permanent(fmt.Errorf("machine %s is %s: protection was not completed", m.Name, m.State))
				})
			}},
	}, nil
}

// waitMachine polls the machine until done says so or fails.
func (s *Server) waitMachine(ctx context.Context, r *orchestrate.StepRun, id string, done func(control.Machine) (bool, error)) error {
	t := time.NewTicker(jobPoll)
	defer t.Stop()
	for {
		changed := s.changes.wait() // before reading: no change is missed
		m, err := s.st.GetMachine(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return orchestrate.Permanent(fmt.Errorf("machine %s is gone", id))
		}
		if err != nil {
			return err
		}
		switch m.State {
		case control.StateUnprotected, control.StateDisabling:
			return orchestrate.Permanent(fmt.Errorf("machine %s: protection was disabled meanwhile", m.Name))
		}
		ok, err := done(m)
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
	}
}

// publishStep wakes the components' desired-state polls: what the API
// call stored (a new epoch, a failover, a drain, a removal) reaches them.
func (s *Server) publishStep(name string) orchestrate.StepSpec {
	return orchestrate.StepSpec{Name: name, Idempotent: true, Retries: 3, Timeout: time.Minute,
		Run: func(ctx context.Context, r *orchestrate.StepRun) error {
			s.api.DesiredChanged()
			return nil
		}}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
