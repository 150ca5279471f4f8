package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"

	pb "github.com/standby-dr/standby/internal/api/componentpb"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// A planned failover (docs/control-plane.md) loses no data: the source
// machine is stopped first and the journal drained to a final bookmark,
// and only then is the epoch raised and that bookmark's point failed
// over to. The user call moves the machine to failover-draining and
// records the failover (Planned, no point yet); the agent's desired state
// carries a DesiredDrain; the agent stops the source through its machine
// driver, refuses writes, bookmarks and ships until the bookmark is
// applied, and reports (AgentReport.Drain). The planned-failover job then
// calls FenceDrained, which finds the bookmark's point in the catalogue,
// raises the epoch and moves the machine to failover-started: from there
// it is the failover of failover.go, to that point.

// JobPlannedFailover is the planned failover's job kind (internal/server).
const JobPlannedFailover = "planned-failover"

// DesiredDrain is a planned failover an agent takes part in. It stays in
// the agent's desired state while the machine is failed over, so that
// the agent goes on refusing writes to the old primary's disks.
type DesiredDrain struct {
	ID string `json:"id"` // the failover's, or the reverse direction's with StopOnly
	// StopOnly: stop the source machine and refuse writes, no bookmark
	// (a re-protection after an unplanned failover: the agent is fenced).
	StopOnly bool `json:"stop_only,omitempty"`
}

type plannedFailoverRequest struct {
	Machine control.ReplicaSpec `json:"machine,omitzero"`
	Network map[string]string   `json:"network,omitempty"`
}

func (s *Server) plannedFailover(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req plannedFailoverRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	var job control.Job
	m, err := s.startPlannedFailover(ctx, name, req)
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, JobPlannedFailover, failoverObject(m.Name), FailoverJobParams{Machine: m.ID, Failover: m.Failover.ID}, principalOf(ctx).actor())
	}
	detail := ""
	if err == nil {
		detail = fmt.Sprintf("the agent stops the source machine and drains; replica machine %s; job %s", m.Failover.Replica.Name, job.ID)
	}
	s.audit(ctx, "machine.planned-failover", "machine/"+name, err, detail)
	if err != nil {
		return nil, err
	}
	return failoverResponse{Machine: m, Job: job}, nil
}

// startPlannedFailover moves machine name to failover-draining and
// records the planned failover. The epoch stays: the drain's segments
// must still be applied.
func (s *Server) startPlannedFailover(ctx context.Context, name string, req plannedFailoverRequest) (control.Machine, error) {
	if s.o.Jobs == nil {
		return control.Machine{}, errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	if err := errors.Join(req.Machine.Validate(), control.ValidateNetwork(req.Network)); err != nil {
		return control.Machine{}, errorf(http.StatusBadRequest, "%v", err)
	}
	return s.changeMachine(ctx, name, func(m *control.Machine) error {
		next, err := control.Transition(m.State, control.EventPlannedFailover)
		if err != nil {
			return errorf(http.StatusConflict, "machine %s: %v (a planned failover needs the machine protected: its replica in delta)", name, err)
		}
		if m.Target == "" {
			return errorf(http.StatusConflict, "machine %s has no master target", name)
		}
		spec := req.Machine
		if spec.Name == "" {
			spec.Name = m.Name
		}
		m.State = next
		m.Failover = &control.Failover{ID: newID(), Planned: true, Replica: spec, Network: maps.Clone(req.Network), RequestedAt: s.now()}
		return nil
	})
}

// desiredDrain is the drain an agent takes part in for m: from the start
// of a planned failover while the machine is failed over or protected in
// reverse; and, after an unplanned failover, a stop-only one from the
// re-protection on. It ends when the agent resumes after a failback.
func desiredDrain(m control.Machine) *DesiredDrain {
	if m.Failover == nil || desiredResume(m) != nil {
		return nil
	}
	if m.Failover.Planned && (m.State == control.StateFailoverDraining || m.State.InFailover() || m.Reverse != nil) {
		return &DesiredDrain{ID: m.Failover.ID}
	}
	if m.Reverse != nil {
		return &DesiredDrain{ID: m.Reverse.ID, StopOnly: true}
	}
	return nil
}

// applyDrainReport keeps rep on m when it reports m's current planned
// failover; it says whether it did.
func (s *Server) applyDrainReport(m *control.Machine, rep *control.DrainReport) (bool, error) {
	if rep == nil || m.Failover == nil {
		return false, nil
	}
	stopOnly := m.Reverse != nil && m.Reverse.ID == rep.ID // a re-protection's (reverse.go)
	if !(m.Failover.Planned && m.Failover.ID == rep.ID) && !stopOnly {
		return false, nil
	}
	if err := rep.Validate(); err != nil {
		return false, errorf(http.StatusBadRequest, "%v", err)
	}
	if old := m.Failover.Drain; old != nil && old.ID == rep.ID && old.Done && m.State != control.StateFailoverDraining {
		return false, nil // the failover moved on: the drain's result is history
	}
	r := *rep
	r.ReportedAt = s.now()
	f := *m.Failover
	f.Drain = &r
	m.Failover = &f
	return true, nil
}

// ErrNotDrained is returned by FenceDrained while the drain is not done
// or its point is not in the catalogue yet: the caller waits.
var ErrNotDrained = errors.New("not drained yet")

// FenceDrained ends the drain of machine id's planned failover failover:
// it finds the final bookmark's recovery point in the catalogue, raises
// the epoch (the old primary is fenced from now) and moves the machine
// to failover-started with that point: from there the master target
// fails it over as any failover. It is idempotent: once done, it returns
// the machine as it is. While the agent has not reported the drain done,
// or the master target has not reported the point, it returns an error
// wrapping ErrNotDrained; a drain the agent reports failed moves the
// machine to failover-failed and returns an error wrapping ErrDrainFailed.
func (s *Server) FenceDrained(ctx context.Context, id, failover string) (control.Machine, error) {
	return s.fenceAfterDrain(ctx, id, drainSide{
		who: "the agent",
		drain: func(m *control.Machine) (*control.DrainReport, bool, error) {
			if m.Failover == nil || m.Failover.ID != failover {
				return nil, false, fmt.Errorf("machine %s: the planned failover %s was replaced meanwhile", m.Name, failover)
			}
			if m.State != control.StateFailoverDraining {
				if m.Failover.Point == "" {
					return nil, false, fmt.Errorf("machine %s is %s: the planned failover did not end its drain", m.Name, m.State)
				}
				return nil, true, nil // done earlier
			}
			return m.Failover.Drain, false, nil
		},
		failed: func(m *control.Machine, d control.DrainReport) {
			f := *m.Failover
			f.Report.Phase, f.Report.Error = control.FailoverPhaseFailed, "drain: "+d.Error
			m.Failover = &f
		},
		fence: func(ctx context.Context, m *control.Machine, d control.DrainReport, epoch uint64) (string, error) {
			pts, err := s.o.Store.ListPoints(ctx, m.ID)
			if err != nil {
				return "", err
			}
			var point *control.RecoveryPoint
			for i := range pts {
				if pts[i].Seq == d.BookmarkSeq && pts[i].Label == d.Label {
					point = &pts[i]
				}
			}
			if point == nil {
				return "", fmt.Errorf("%w: the final bookmark (journal sequence %d, %s) is applied, but the master target has not reported its point yet", ErrNotDrained, d.BookmarkSeq, d.Label)
			}
			f := *m.Failover
			f.Point, f.Epoch = strconv.FormatUint(point.ID, 10), epoch
			m.Failover = &f
			return fmt.Sprintf("source %s; final bookmark %s at journal sequence %d is recovery point %d; epoch %d (the old primary is fenced)",
				orNone(d.SourceState), d.Label, d.BookmarkSeq, point.ID, epoch), nil
		},
	})
}

// drainSide is what fenceAfterDrain needs to know of one kind of drain:
// a planned failover's (the agent drains) or a failback's (the master
// target that failed the machine over drains).
type drainSide struct {
	who string // who drains, for messages
	// drain returns the drain report (nil: none yet), or done when the
	// fence was made earlier, or an error when the operation is no longer
	// the machine's.
	drain func(m *control.Machine) (d *control.DrainReport, done bool, err error)
	// failed records a failed drain on m (besides failover-failed).
	failed func(m *control.Machine, d control.DrainReport)
	// fence records on m what the drain ended at, with the new epoch, and
	// says it for the audit; an error wrapping ErrNotDrained waits.
	fence func(ctx context.Context, m *control.Machine, d control.DrainReport, epoch uint64) (string, error)
}

// fenceAfterDrain is FenceDrained and FenceFailback: once the drain is
// reported done, raise the epoch and move the machine from
// failover-draining to failover-started (drained); a drain reported
// failed moves it to failover-failed. Optimistic: retried on a conflict.
func (s *Server) fenceAfterDrain(ctx context.Context, id string, side drainSide) (control.Machine, error) {
	for attempt := 0; ; attempt++ {
		m, err := s.o.Store.GetMachine(ctx, id)
		if err != nil {
			return m, err
		}
		d, done, err := side.drain(&m)
		if err != nil || done {
			return m, err
		}
		if d != nil && d.Error != "" && !d.Done {
			if m.State == control.StateFailoverDraining {
				m.State, _ = control.Transition(m.State, control.EventFailoverFailed)
				side.failed(&m, *d)
				m.UpdatedAt = s.now()
				if _, err := s.o.Store.UpdateMachine(ctx, m); errors.Is(err, store.ErrConflict) && attempt < 3 {
					continue
				} else if err != nil {
					return m, err
				}
				s.audit(ctx, "machine.failover-failed", "machine/"+m.Name, nil, "drain: "+d.Error)
				s.desired.notify()
			}
			return m, fmt.Errorf("%w: %s could not drain %s: %s", ErrDrainFailed, side.who, m.Name, d.Error)
		}
		if d == nil || !d.Done {
			return m, fmt.Errorf("%w: %s has not reported the drain done", ErrNotDrained, side.who)
		}
		detail, err := side.fence(ctx, &m, *d, m.Epoch+1)
		if err != nil {
			return m, err
		}
		if m.State, err = control.Transition(m.State, control.EventDrained); err != nil {
			return m, err
		}
		m.Epoch++
		m.UpdatedAt = s.now()
		m, err = s.o.Store.UpdateMachine(ctx, m)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return m, err
		}
		s.audit(ctx, "machine.drained", "machine/"+m.Name, nil, detail)
		s.desired.notify()
		return m, nil
	}
}

// ErrDrainFailed: the agent reported that it could not drain.
var ErrDrainFailed = errors.New("drain failed")

func orNone(s string) string {
	if s == "" {
		return "not reported"
	}
	return s
}

func drainToPB(d *DesiredDrain) *pb.DesiredDrain {
	if d == nil {
		return nil
	}
	return &pb.DesiredDrain{Id: d.ID, StopOnly: d.StopOnly}
}

func drainFromPB(d *pb.DesiredDrain) *DesiredDrain {
	if d == nil {
		return nil
	}
	return &DesiredDrain{ID: d.GetId(), StopOnly: d.GetStopOnly()}
}
