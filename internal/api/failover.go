package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"

	pb "github.com/standby-dr/standby/internal/api/componentpb"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// A failover (docs/control-plane.md) is declarative, as a test failover
// is: the user call moves the machine's protection state (failover),
// raises its epoch (fencing: the master target refuses the old primary's
// segments from then on), records the failover wanted and publishes the
// desired state. The master target fences its replica, exports the
// point, starts the replica machine and hydrates, and reports through
// ReportRecovery; its reports move the state (failover-done,
// failover-failed, commit); a job follows them.
//
// Protection stops with the failover: the process server's desired state
// no longer lists the machine, and the agent's lists it with the new
// epoch and no process server, so an agent that comes back knows it is
// fenced without shipping anything.

// Job kinds submitted here; their planners are internal/server's.
const (
	JobFailover = "failover"
	JobCommit   = "commit"
)

// FailoverJobParams are the parameters of the failover and commit jobs.
type FailoverJobParams struct {
	Machine  string `json:"machine"`  // the machine's ID
	Failover string `json:"failover"` // the failover's ID
}

type failoverRequest struct {
	// Point: latest (default), latest-app, a point id or an RFC 3339 time.
	Point string `json:"point,omitempty"`
	// Machine is the replica machine; every field is optional (the name
	// defaults to the machine's).
	Machine control.ReplicaSpec `json:"machine,omitzero"`
	// Network are the driver's network settings for the replica machine.
	Network map[string]string `json:"network,omitempty"`
}

type commitRequest struct{}

// failoverResponse is the machine as the call left it and the job that
// follows the master target.
type failoverResponse struct {
	Machine control.Machine `json:"machine"`
	Job     control.Job     `json:"job"`
}

// DesiredFailover is a failover a master target should run: fence the
// replica to Epoch, export Point, start the replica machine, hydrate;
// with Commit, keep only the chosen point.
type DesiredFailover struct {
	ID      string              `json:"id"`
	Point   string              `json:"point"`
	Epoch   uint64              `json:"epoch"`
	Replica control.ReplicaSpec `json:"replica"` // Name always set
	Network map[string]string   `json:"network,omitempty"`
	Commit  bool                `json:"commit,omitempty"`
}

func (s *Server) failover(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req failoverRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	var job control.Job
	m, err := s.startFailover(ctx, name, req)
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, JobFailover, failoverObject(m.Name), FailoverJobParams{Machine: m.ID, Failover: m.Failover.ID}, principalOf(ctx).actor())
	}
	detail := "point " + req.Point
	if err == nil {
		detail += fmt.Sprintf(", epoch %d (the old primary is fenced), replica machine %s, job %s", m.Epoch, m.Failover.Replica.Name, job.ID)
	}
	s.audit(ctx, "machine.failover", "machine/"+name, err, detail)
	if err != nil {
		return nil, err
	}
	return failoverResponse{Machine: m, Job: job}, nil
}

// startFailover moves machine name to failover-started, raises its epoch
// and records the failover wanted. A test failover of the machine does
// not stop it (a disaster must not wait for a forgotten test): the test
// keeps running beside it, and the commit waits for its cleanup.
func (s *Server) startFailover(ctx context.Context, name string, req failoverRequest) (control.Machine, error) {
	if s.o.Jobs == nil {
		return control.Machine{}, errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	if err := CheckPointSelector(req.Point); err != nil {
		return control.Machine{}, errorf(http.StatusBadRequest, "%v", err)
	}
	if err := errors.Join(req.Machine.Validate(), control.ValidateNetwork(req.Network)); err != nil {
		return control.Machine{}, errorf(http.StatusBadRequest, "%v", err)
	}
	if req.Point == "" {
		req.Point = "latest"
	}
	return s.changeMachine(ctx, name, func(m *control.Machine) error {
		if m.Failover != nil && m.Failover.Commit {
			return errorf(http.StatusConflict, "machine %s: its failover is being committed: it cannot move to another point", name)
		}
		next, err := control.Transition(m.State, control.EventFailover)
		if err != nil {
			return errorf(http.StatusConflict, "machine %s: %v", name, err)
		}
		if m.Target == "" {
			return errorf(http.StatusConflict, "machine %s has no master target", name)
		}
		spec := req.Machine
		if spec.Name == "" {
			spec.Name = m.Name
		}
		m.State, m.Epoch = next, m.Epoch+1
		m.Failover = &control.Failover{ID: newID(), Point: req.Point, Epoch: m.Epoch, Replica: spec,
			Network: maps.Clone(req.Network), RequestedAt: s.now()}
		return nil
	})
}

func (s *Server) commit(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req commitRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	var job control.Job
	var m control.Machine
	err := error(errorf(http.StatusNotImplemented, "this server runs no jobs"))
	if s.o.Jobs != nil {
		m, err = s.changeMachine(ctx, name, func(m *control.Machine) error {
			// The state moves when the master target reports the
			// history released; until then it stays failed-over.
			if _, err := control.Transition(m.State, control.EventCommit); err != nil {
				return errorf(http.StatusConflict, "machine %s: %v", name, err)
			}
			if err := control.CheckTestFailover(m.Name, m.TestFailover, control.EventCommit); err != nil {
				return errorf(http.StatusConflict, "%v", err)
			}
			if m.Failover == nil {
				return errorf(http.StatusConflict, "machine %s: no failover recorded to commit", name)
			}
			f := *m.Failover
			f.Commit = true
			m.Failover = &f
			return nil
		})
	}
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, JobCommit, failoverObject(m.Name), FailoverJobParams{Machine: m.ID, Failover: m.Failover.ID}, principalOf(ctx).actor())
	}
	detail := "job " + job.ID
	if err == nil {
		detail = fmt.Sprintf("point %d final, the rest of the history to be released, %s", m.Failover.Report.PointID, detail)
	}
	s.audit(ctx, "machine.commit", "machine/"+name, err, detail)
	if err != nil {
		return nil, err
	}
	return failoverResponse{Machine: m, Job: job}, nil
}

// failoverObject is the job object of a machine's failover and commit
// jobs: they run one at a time, but not behind a test failover job that
// waits for its replica machine (a disaster does not queue behind a test).
func failoverObject(name string) string { return "machine/" + name + "/failover" }

// changeMachine lets change check and change machine name, stores it and
// publishes the desired state. The record is read again and change applied
// again when it changed meanwhile (an agent's report, a point in the
// catalogue), a few times, before the caller is told to try again.
func (s *Server) changeMachine(ctx context.Context, name string, change func(*control.Machine) error) (control.Machine, error) {
	for attempt := 0; ; attempt++ {
		m, err := s.o.Store.MachineByName(ctx, name)
		if err != nil {
			return control.Machine{}, fmt.Errorf("machine %s: %w", name, err)
		}
		if err := change(&m); err != nil {
			return control.Machine{}, err
		}
		m.UpdatedAt = s.now()
		m, err = s.o.Store.UpdateMachine(ctx, m)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if errors.Is(err, store.ErrConflict) {
			return m, errorf(http.StatusConflict, "machine %s changed meanwhile: try again", name)
		}
		if err != nil {
			return m, err
		}
		s.desired.notify()
		return m, nil
	}
}

// desiredFailover is the failover a master target should run for m; nil
// when m is not failed over.
func desiredFailover(m control.Machine) *DesiredFailover {
	if (!m.State.InFailover() && m.Reverse == nil) || m.Failover == nil {
		return nil // (protected in reverse, the machine still runs from the failover's export)
	}
	f := m.Failover
	return &DesiredFailover{ID: f.ID, Point: f.Point, Epoch: f.Epoch, Replica: f.Replica, Network: maps.Clone(f.Network), Commit: f.Commit}
}

// reportFailover records the calling master target's report of a
// failover and moves the machine's state on what it says: fenced,
// exported and the replica machine running (failover-done), failed
// (failover-failed), committed (commit). A report of another failover
// than the machine's current one is refused (409): the target drops it.
func (s *Server) reportFailover(ctx context.Context, req RecoveryReport) error {
	target := principalOf(ctx).comp
	if err := req.Failover.Validate(); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	for attempt := 0; ; attempt++ {
		m, err := s.o.Store.GetMachine(ctx, req.Machine)
		if err != nil {
			return err
		}
		if m.Target != target.ID {
			return errorf(http.StatusConflict, "machine %s is not replicated to this master target (%s)", m.Name, target.ID)
		}
		if m.Failover == nil || m.Failover.ID != req.FailoverID {
			return errorf(http.StatusConflict, "machine %s: failover %q is not its current one", m.Name, req.FailoverID)
		}
		before := m.State
		rep := *req.Failover
		rep.ReportedAt = s.now()
		f := *m.Failover
		f.Report = rep
		m.Failover = &f
		ev := failoverEvent(m, rep)
		if ev != "" {
			if m.State, err = control.Transition(m.State, ev); err != nil {
				return err // cannot happen: failoverEvent checks the state
			}
		}
		m.UpdatedAt = s.now()
		m, err = s.o.Store.UpdateMachine(ctx, m)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if m.State != before {
			var detail string
			switch ev {
			case control.EventFailoverDone:
				detail = fmt.Sprintf("fenced at epoch %d; point %d exported as %s; replica machine %s %s", rep.Fenced, rep.PointID, rep.Export, rep.Machine, rep.MachineState)
			case control.EventFailoverFailed:
				detail = rep.Error
			case control.EventCommit:
				detail = fmt.Sprintf("point %d final; %d other points released", rep.PointID, rep.Released)
			}
			s.audit(ctx, "machine."+string(ev), "machine/"+m.Name, nil, detail)
			s.desired.notify()
		}
		return nil
	}
}

// failoverEvent is the protection event report rep means for m, or "".
func failoverEvent(m control.Machine, rep control.FailoverReport) control.Event {
	switch {
	case m.State == control.StateFailoverStarted && rep.Phase == control.FailoverPhaseFailed:
		return control.EventFailoverFailed
	case m.State == control.StateFailoverStarted && rep.Phase == control.FailoverPhaseRunning &&
		rep.Fenced >= m.Failover.Epoch && rep.Export != "" && rep.MachineState == "running":
		return control.EventFailoverDone
	case m.State == control.StateFailedOver && m.Failover.Commit && rep.Phase == control.FailoverPhaseCommitted:
		return control.EventCommit
	}
	return ""
}

func failoverToPB(f *DesiredFailover) *pb.DesiredFailover {
	if f == nil {
		return nil
	}
	return &pb.DesiredFailover{Id: f.ID, Point: f.Point, Epoch: f.Epoch, Replica: pb.FromReplicaSpec(f.Replica), Network: f.Network, Commit: f.Commit}
}

func failoverFromPB(f *pb.DesiredFailover) *DesiredFailover {
	if f == nil {
		return nil
	}
	return &DesiredFailover{ID: f.GetId(), Point: f.GetPoint(), Epoch: f.GetEpoch(), Replica: pb.ToReplicaSpec(f.GetReplica()),
		Network: f.GetNetwork(), Commit: f.GetCommit()}
}
