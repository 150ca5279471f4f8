package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	pb "github.com/standby-dr/standby/internal/api/componentpb"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Re-protection and failback (docs/control-plane.md, control.Reverse).
//
// Re-protect (POST /v1/machines/{name}/reprotect, from failed-over or
// failover-committed) protects a failed-over machine back to the primary
// site:
//
//  1. The old primary's agent stops the source machine (if it runs) and
//     refuses writes (its DesiredDrain: the planned failover's, or a
//     stop-only one). What it holds that never reached the secondary
//     (its backlog when it last reported) would be discarded: refused
//     without force.
//  2. The master target at the primary site (Reverse.Target) makes its
//     replica of the machine in place over the old primary's disk files
//     (DesiredReceive) and reports ready.
//  3. The failover's master target becomes the machine's agent
//     (DesiredShip): it captures the replica machine's writes to the
//     export and ships them through Reverse.Process; its comparison with
//     the replica over the old disks sends only what differs. Its reports
//     move the machine (reprotect-done: protected, in reverse).
//
// Failback (POST /v1/machines/{name}/failback, from protected in
// reverse) is a planned failover the other way:
//
//  1. The shipping master target stops the replica machine, refuses
//     writes, takes a final bookmark and drains (DesiredShip.failback).
//  2. FenceFailback raises the epoch; the receiving master target
//     releases the old primary's disks, which now hold the final state.
//  3. The original agent continues at the new epoch on them
//     (DesiredResume): it drops its journal, compares its disks with the
//     original replica (sending what the machine wrote at the secondary),
//     accepts writes and starts the source machine. FinishFailback then
//     clears Reverse and Failover: failback-done, resynchronizing, and
//     protected in the original direction again.

// Job kinds of re-protection and failback (internal/server plans them).
const (
	JobReprotect = "reprotect"
	JobFailback  = "failback"
)

// ReverseJobParams are the parameters of the reprotect and failback jobs.
type ReverseJobParams struct {
	Machine  string `json:"machine"`
	Reverse  string `json:"reverse"`            // the Reverse's ID
	Failback string `json:"failback,omitempty"` // the Failback's ID
}

// DesiredShip makes the master target that failed the machine over its
// agent in the reverse direction: capture the replica machine's writes
// to the failover export and ship them to Process; with Failback, stop the
// replica machine, refuse writes and drain to a final bookmark.
type DesiredShip struct {
	ID       string    `json:"id"`
	Process  *Endpoint `json:"process"`
	Epoch    uint64    `json:"epoch"`
	Failback string    `json:"failback,omitempty"`
}

// DesiredReceive makes a master target at the primary site receive the
// reverse direction, its replica made in place over Seed; with Release
// it lets go of them (the failback is done).
type DesiredReceive struct {
	ID      string         `json:"id"`
	Seed    []string       `json:"seed"`
	Disks   []control.Disk `json:"disks"` // the machine's, in order
	Release bool           `json:"release,omitempty"`
}

// DesiredResume makes the original agent continue at Epoch after a
// failback: drop its journal, compare its disks with the replica, accept
// writes, start the source machine.
type DesiredResume struct {
	Epoch uint64 `json:"epoch"`
}

type reprotectRequest struct {
	// Target is the master target at the primary site (name or id);
	// Process the process server the reverse direction goes through
	// (default: the machine's own).
	Target  string `json:"target"`
	Process string `json:"process,omitempty"`
	// Force discards writes of the old primary that never reached the
	// secondary.
	Force bool `json:"force,omitempty"`
}

type failbackRequest struct{}

type reverseResponse struct {
	Machine control.Machine `json:"machine"`
	Job     control.Job     `json:"job"`
}

// ErrUnreplicated: the old primary holds writes that never reached the
// secondary; re-protecting discards them.
var ErrUnreplicated = errors.New("unreplicated writes would be discarded")

func (s *Server) reprotect(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req reprotectRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	var job control.Job
	m, err := s.startReprotect(ctx, name, req)
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, JobReprotect, failoverObject(m.Name), ReverseJobParams{Machine: m.ID, Reverse: m.Reverse.ID}, principalOf(ctx).actor())
	}
	detail := ""
	if err == nil {
		detail = fmt.Sprintf("to master target %s through process server %s, seeded in place from %v; job %s", m.Reverse.Target, m.Reverse.Process, m.Reverse.Seed, job.ID)
		if m.Reverse.Force {
			detail += fmt.Sprintf("; forced: %d bytes of unreplicated writes of the old primary discarded", m.Reverse.Unreplicated)
		}
	}
	s.audit(ctx, "machine.reprotect", "machine/"+name, err, detail)
	if err != nil {
		return nil, err
	}
	return reverseResponse{Machine: m, Job: job}, nil
}

// serverByNameOrID finds a server of role by name or id.
func (s *Server) serverByNameOrID(ctx context.Context, role control.Role, key string) (control.Server, error) {
	srvs, err := s.o.Store.ListServers(ctx, role)
	if err != nil {
		return control.Server{}, err
	}
	for _, srv := range srvs {
		if (srv.ID == key || srv.Name == key) && !srv.Revoked {
			return srv, nil
		}
	}
	return control.Server{}, errorf(http.StatusBadRequest, "no %s named %q (standby servers list)", role, key)
}

func (s *Server) startReprotect(ctx context.Context, name string, req reprotectRequest) (control.Machine, error) {
	if s.o.Jobs == nil {
		return control.Machine{}, errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	if req.Target == "" {
		return control.Machine{}, errorf(http.StatusBadRequest, "target: required: the master target at the primary site that receives the reverse direction")
	}
	tgt, err := s.serverByNameOrID(ctx, control.RoleTarget, req.Target)
	if err != nil {
		return control.Machine{}, err
	}
	var proc control.Server
	if req.Process != "" {
		if proc, err = s.serverByNameOrID(ctx, control.RoleProcess, req.Process); err != nil {
			return control.Machine{}, err
		}
	}
	return s.changeMachine(ctx, name, func(m *control.Machine) error {
		next, err := control.Transition(m.State, control.EventReprotect)
		if err != nil {
			return errorf(http.StatusConflict, "machine %s: %v", name, err)
		}
		if m.Failover == nil || m.Failover.Report.Export == "" {
			return errorf(http.StatusConflict, "machine %s: its failover has no export to protect", name)
		}
		if tgt.ID == m.Target {
			return errorf(http.StatusBadRequest, "target %s is the master target the machine failed over to; name one at the primary site", req.Target)
		}
		seed := make([]string, len(m.Disks))
		for i, d := range m.Disks {
			if d.Path == "" {
				return errorf(http.StatusConflict, "machine %s: its agent did not report where disk %s is: update the agent", name, d.Name)
			}
			seed[i] = d.Path
		}
		// What the old primary holds that the secondary never got: its
		// backlog, unless a planned failover drained it.
		var unreplicated int64
		if !m.Failover.Planned || m.Failover.Drain == nil || !m.Failover.Drain.Done {
			unreplicated = m.Replication.BacklogBytes
		}
		if unreplicated > 0 && !req.Force {
			return errorf(http.StatusConflict, "machine %s: %v: the old primary's agent holds %d bytes of writes that never reached the secondary (its backlog when it last reported, %s); re-protecting overwrites its disks with the secondary's: run again with force (--force) to discard them",
				name, ErrUnreplicated, unreplicated, m.Replication.ReportedAt.UTC().Format("2006-01-02T15:04:05Z"))
		}
		process := m.Process
		if proc.ID != "" {
			process = proc.ID
		}
		m.State = next
		m.Reverse = &control.Reverse{ID: newID(), Agent: m.Target, Process: process, Target: tgt.ID, Seed: seed, Epoch: m.Epoch,
			Force: req.Force, Unreplicated: unreplicated, RequestedAt: s.now()}
		if req.Force {
			m.Reverse.Unreplicated = unreplicated
		}
		return nil
	})
}

func (s *Server) failback(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req failbackRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	var job control.Job
	m, err := s.changeMachine(ctx, name, func(m *control.Machine) error {
		if m.Reverse == nil {
			return errorf(http.StatusConflict, "machine %s is not protected in reverse: re-protect it first (standby machines reprotect)", name)
		}
		if m.Reverse.Failback != nil {
			return errorf(http.StatusConflict, "machine %s: a failback is under way (job on machine/%s/failover)", name, name)
		}
		next, err := control.Transition(m.State, control.EventPlannedFailover)
		if err != nil {
			return errorf(http.StatusConflict, "machine %s: %v (a failback needs the reverse direction in delta)", name, err)
		}
		m.State = next
		r := *m.Reverse
		r.Failback = &control.Failback{ID: newID(), RequestedAt: s.now()}
		m.Reverse = &r
		return nil
	})
	if err == nil && s.o.Jobs == nil {
		err = errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, JobFailback, failoverObject(m.Name), ReverseJobParams{Machine: m.ID, Reverse: m.Reverse.ID, Failback: m.Reverse.Failback.ID}, principalOf(ctx).actor())
	}
	detail := ""
	if err == nil {
		detail = "master target " + m.Reverse.Agent + " stops the replica machine and drains; job " + job.ID
	}
	s.audit(ctx, "machine.failback", "machine/"+name, err, detail)
	if err != nil {
		return nil, err
	}
	return reverseResponse{Machine: m, Job: job}, nil
}

// desiredShip is the reverse agent's part for master target id, once the
// receiver is ready.
func desiredShip(m control.Machine, id string, endpoint func(string) (*Endpoint, error)) (*DesiredShip, error) {
	r := m.ReverseServing()
	if r == nil || r.Agent != id || !r.Report.Ready {
		return nil, nil
	}
	ep, err := endpoint(r.Process)
	if err != nil {
		return nil, err
	}
	d := &DesiredShip{ID: r.ID, Process: ep, Epoch: r.Epoch}
	if r.Failback != nil {
		d.Failback = r.Failback.ID
	}
	return d, nil
}

// OldPrimaryFrozen says whether m's old primary agent refuses writes, so
// that its disks may be written by the reverse direction: it reported
// the planned failover's drain, or the re-protection's stop-only one,
// with writes refused.
func OldPrimaryFrozen(m control.Machine) bool {
	if m.Failover == nil || m.Failover.Drain == nil || !m.Failover.Drain.WritesRefused {
		return false
	}
	d := m.Failover.Drain
	return (m.Failover.Planned && d.ID == m.Failover.ID && d.Done) || (m.Reverse != nil && d.ID == m.Reverse.ID)
}

// desiredReceive is the receiving master target's part, once the old
// primary's agent refuses writes.
func desiredReceive(m control.Machine) *DesiredReceive {
	r := m.Reverse
	if r == nil || !OldPrimaryFrozen(m) {
		return nil
	}
	return &DesiredReceive{ID: r.ID, Seed: slices.Clone(r.Seed), Disks: slices.Clone(m.Disks), Release: r.Failback != nil && r.Failback.Epoch > 0}
}

// desiredResume is the original agent's part of a failback, once the
// receiver let go of its disks.
func desiredResume(m control.Machine) *DesiredResume {
	r := m.Reverse
	if r == nil || r.Failback == nil || r.Failback.Epoch == 0 || !r.Report.Released {
		return nil
	}
	return &DesiredResume{Epoch: r.Failback.Epoch}
}

// reportReverse records a master target's report of a machine's reverse
// direction: the receiver's (ready, released) or the shipper's (its
// replication, which moves the state as an agent's does, and a
// failback's drain).
func (s *Server) reportReverse(ctx context.Context, req RecoveryReport) error {
	target := principalOf(ctx).comp
	if err := req.Reverse.Validate(); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	for attempt := 0; ; attempt++ {
		m, err := s.o.Store.GetMachine(ctx, req.Machine)
		if err != nil {
			return err
		}
		if m.Reverse == nil || m.Reverse.ID != req.ReverseID {
			return errorf(http.StatusConflict, "machine %s: reverse direction %q is not its current one", m.Name, req.ReverseID)
		}
		in := *req.Reverse
		r := *m.Reverse
		before := m.State
		var ev control.Event
		switch target.ID {
		case r.Target:
			r.Report.Ready, r.Report.Seeded, r.Report.Released = in.Ready, in.Seeded, in.Released
			if in.Error != "" || r.Report.Error != "" {
				r.Report.Error = in.Error
			}
		case r.Agent:
			in.Replication.ReportedAt = s.now()
			r.Report.Replication, r.Report.SentBytes, r.Report.ResyncBytes = in.Replication, in.SentBytes, in.ResyncBytes
			if in.Error != "" {
				r.Report.Error = in.Error
			}
			if f := r.Failback; f != nil && in.Drain != nil && in.Drain.ID == f.ID && f.Epoch == 0 {
				d := *in.Drain
				d.ReportedAt = s.now()
				fb := *f
				fb.Drain = &d
				r.Failback = &fb
			}
			if m.ReverseServing() != nil {
				evs := control.ReportEvents(m.State, in.Replication.State)
				if len(evs) > 0 {
					ev = evs[len(evs)-1]
					if m.State, err = control.Apply(m.State, evs...); err != nil {
						s.o.Log.Warn("reverse report refused by the state machine", "machine", m.Name, "state", before, "reverse_state", in.Replication.State, "err", err)
					}
				}
			}
		default:
			return errorf(http.StatusConflict, "machine %s: this master target (%s) is not part of its reverse direction", m.Name, target.ID)
		}
		m.Reverse = &r
		m.UpdatedAt = s.now()
		m, err = s.o.Store.UpdateMachine(ctx, m)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if m.State != before {
			s.audit(ctx, "machine."+string(ev), "machine/"+m.Name, nil, fmt.Sprintf("%s -> %s (reverse agent %s)", before, m.State, in.Replication.State))
		}
		s.desired.notify()
		return nil
	}
}

// FenceFailback ends the drain of a failback: once the shipping master
// target reports the final bookmark applied at the primary site, the
// epoch is raised (the replica machine's capture is fenced) and the
// machine moves to failover-started; the receiving master target then
// releases the old primary's disks. Idempotent; it waits (ErrNotDrained)
// and fails (ErrDrainFailed) as FenceDrained does.
func (s *Server) FenceFailback(ctx context.Context, id, failback string) (control.Machine, error) {
	return s.fenceAfterDrain(ctx, id, drainSide{
		who: "the failover's master target",
		drain: func(m *control.Machine) (*control.DrainReport, bool, error) {
			if m.Reverse == nil || m.Reverse.Failback == nil || m.Reverse.Failback.ID != failback {
				return nil, false, fmt.Errorf("machine %s: the failback %s was replaced meanwhile", m.Name, failback)
			}
			f := m.Reverse.Failback
			return f.Drain, f.Epoch > 0, nil
		},
		failed: func(*control.Machine, control.DrainReport) {},
		fence: func(_ context.Context, m *control.Machine, d control.DrainReport, epoch uint64) (string, error) {
			r := *m.Reverse
			fb := *r.Failback
			fb.Epoch = epoch
			r.Failback = &fb
			m.Reverse = &r
			return fmt.Sprintf("failback: replica machine %s, final bookmark %s at journal sequence %d applied at the primary site; epoch %d",
				orNone(d.SourceState), d.Label, d.BookmarkSeq, epoch), nil
		},
	})
}

// ErrNotFailedBack is returned by FinishFailback while the failback
// cannot end yet: the caller waits.
var ErrNotFailedBack = errors.New("failback not done yet")

// FinishFailback ends a failback once the original agent continues at
// the failback's epoch: the reverse direction and the failover are
// cleared (the master targets tear down their parts), and the machine
// moves with failback-done to resynchronizing, protected in the original
// direction again when the agent's comparison ends. Idempotent.
func (s *Server) FinishFailback(ctx context.Context, id, failback string) (control.Machine, error) {
	for attempt := 0; ; attempt++ {
		m, err := s.o.Store.GetMachine(ctx, id)
		if err != nil {
			return m, err
		}
		if m.Reverse == nil {
			if m.State == control.StateFailoverStarted || m.State == control.StateFailoverDraining {
				return m, fmt.Errorf("machine %s is %s with no failback", m.Name, m.State)
			}
			return m, nil // done
		}
		f := m.Reverse.Failback
		if f == nil || f.ID != failback {
			return m, fmt.Errorf("machine %s: the failback %s was replaced meanwhile", m.Name, failback)
		}
		if !m.Reverse.Report.Released {
			return m, fmt.Errorf("%w: master target %s has not released the primary's disks", ErrNotFailedBack, m.Reverse.Target)
		}
		if m.Replication.Epoch < f.Epoch || m.Replication.ReportedAt.Before(f.RequestedAt) {
			return m, fmt.Errorf("%w: the original agent has not continued at epoch %d yet (it reports epoch %d, %s)", ErrNotFailedBack, f.Epoch, m.Replication.Epoch, orNone(m.Replication.State))
		}
		before := m.State
		if m.State, err = control.Transition(m.State, control.EventFailbackDone); err != nil {
			return m, err
		}
		rev := m.Reverse
		m.Reverse, m.Failover = nil, nil
		m.UpdatedAt = s.now()
		m, err = s.o.Store.UpdateMachine(ctx, m)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return m, err
		}
		s.audit(ctx, "machine.failback-done", "machine/"+m.Name, nil, fmt.Sprintf("%s -> %s: the agent continues at epoch %d on the primary's disks (released by master target %s)", before, m.State, m.Epoch, rev.Target))
		s.desired.notify()
		return m, nil
	}
}

func shipToPB(d *DesiredShip) *pb.DesiredShip {
	if d == nil {
		return nil
	}
	return &pb.DesiredShip{Id: d.ID, Process: endpointToPB(d.Process), Epoch: d.Epoch, Failback: d.Failback}
}

func shipFromPB(d *pb.DesiredShip) *DesiredShip {
	if d == nil {
		return nil
	}
	return &DesiredShip{ID: d.GetId(), Process: endpointFromPB(d.GetProcess()), Epoch: d.GetEpoch(), Failback: d.GetFailback()}
}

func receiveToPB(d *DesiredReceive) *pb.DesiredReceive {
	if d == nil {
		return nil
	}
	return &pb.DesiredReceive{Id: d.ID, Seed: d.Seed, Disks: pb.FromDisks(d.Disks), Release: d.Release}
}

func receiveFromPB(d *pb.DesiredReceive) *DesiredReceive {
	if d == nil {
		return nil
	}
	return &DesiredReceive{ID: d.GetId(), Seed: d.GetSeed(), Disks: pb.ToDisks(d.GetDisks()), Release: d.GetRelease()}
}

func resumeToPB(d *DesiredResume) *pb.DesiredResume {
	if d == nil {
		return nil
	}
	return &pb.DesiredResume{Epoch: d.Epoch}
}

func resumeFromPB(d *pb.DesiredResume) *DesiredResume {
	if d == nil {
		return nil
	}
	return &DesiredResume{Epoch: d.GetEpoch()}
}
