package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// HeartbeatRequest is what every component sends every few seconds
// (POST /v1/heartbeat).
type HeartbeatRequest struct {
	Version  string           `json:"version"`
	Address  string           `json:"address,omitempty"` // process servers and master targets: where peers reach them
	Capacity control.Capacity `json:"capacity"`
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) (any, error) {
	var req HeartbeatRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	return nil, s.recordHeartbeat(r.Context(), req)
}

// recordHeartbeat is a heartbeat of the component calling (ctx's
// principal), over HTTP/JSON or gRPC.
func (s *Server) recordHeartbeat(ctx context.Context, req HeartbeatRequest) error {
	id := principalOf(ctx).comp
	if req.Capacity.Machines < 0 || req.Capacity.MaxMachines < 0 || req.Capacity.FreeBytes < 0 {
		return errorf(http.StatusBadRequest, "capacity: negative numbers")
	}
	if req.Address != "" {
		srv, err := s.o.Store.GetServer(ctx, id.ID)
		if err != nil {
			return err
		}
		if srv.Address != req.Address {
			srv.Address = req.Address
			if err := s.o.Store.UpdateServer(ctx, srv); err != nil {
				return err
			}
		}
	}
	return s.o.Store.Heartbeat(ctx, id.ID, s.now(), req.Version, req.Capacity)
}

// AgentReport is what an agent reports of its machine (POST
// /v1/agent/report): identity, disks and replication.
type AgentReport struct {
	ID          string                    `json:"id"`   // the machine ID the agent's journal carries
	Name        string                    `json:"name"` // unique across the deployment
	Disks       []control.Disk            `json:"disks"`
	Replication control.ReplicationReport `json:"replication"`
	// Drain is the agent's part of a planned failover (DesiredDrain).
	Drain *control.DrainReport `json:"drain,omitempty"`
	// Barrier is the agent's part of a consistency barrier
	// (consistency.go).
	Barrier *control.BarrierReport `json:"barrier,omitempty"`
}

func (s *Server) agentReport(w http.ResponseWriter, r *http.Request) (any, error) {
	var req AgentReport
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	m, err := s.reportMachine(r.Context(), req)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// reportMachine takes the calling agent's report of its machine and
// returns the machine as the server holds it after.
func (s *Server) reportMachine(ctx context.Context, req AgentReport) (control.Machine, error) {
	agent := principalOf(ctx).comp
	if err := checkName("machine", req.Name); err != nil {
		return control.Machine{}, err
	}
	if !validName.MatchString(req.ID) {
		return control.Machine{}, errorf(http.StatusBadRequest, "machine id %q: want the agent's machine ID", req.ID)
	}
	if len(req.Disks) == 0 || len(req.Disks) > 64 {
		return control.Machine{}, errorf(http.StatusBadRequest, "a machine reports 1 to 64 disks, not %d", len(req.Disks))
	}
	for _, d := range req.Disks {
		if d.Name == "" || d.Size <= 0 {
			return control.Machine{}, errorf(http.StatusBadRequest, "disk %q of size %d: want a name and a positive size", d.Name, d.Size)
		}
	}
	req.Replication.ReportedAt = s.now()
	for attempt := 0; ; attempt++ {
		m, err := s.o.Store.GetMachine(ctx, req.ID)
		if errors.Is(err, store.ErrNotFound) {
			m = control.Machine{ID: req.ID, Name: req.Name, Agent: agent.ID, Disks: req.Disks, State: control.StateUnprotected, Health: control.HealthNormal, Replication: req.Replication, UpdatedAt: s.now()}
			m, err = s.o.Store.CreateMachine(ctx, m)
			if err == nil {
				s.audit(ctx, "machine.discover", "machine/"+req.Name, nil, "")
				return m, nil
			}
			if errors.Is(err, store.ErrExists) && attempt < 3 {
				continue // created meanwhile, or the name is taken: look again
			}
			return control.Machine{}, err
		}
		if err != nil {
			return control.Machine{}, err
		}
		if m.Agent != agent.ID {
			return control.Machine{}, errorf(http.StatusConflict, "machine %s (%s) is reported by agent %s, not this one (%s)", m.Name, m.ID, m.Agent, agent.ID)
		}
		m.Disks, m.Name, m.UpdatedAt = req.Disks, req.Name, s.now()
		drained, err := s.applyDrainReport(&m, req.Drain)
		if err != nil {
			return control.Machine{}, err
		}
		// What the agent does moves the protection state on; protected in
		// reverse, the reverse direction's agent does (reverse.go).
		var evs []control.Event
		if m.ReverseServing() == nil {
			m.Replication = req.Replication
			evs = control.ReportEvents(m.State, req.Replication.State)
		}
		before := m.State
		if m.State, err = control.Apply(m.State, evs...); err != nil {
			s.o.Log.Warn("agent report refused by the state machine", "machine", m.Name, "state", before, "agent_state", req.Replication.State, "err", err)
		}
		m, err = s.o.Store.UpdateMachine(ctx, m)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return control.Machine{}, err
		}
		if m.State != before {
			s.audit(ctx, "machine.state", "machine/"+m.Name, nil, fmt.Sprintf("%s -> %s (agent %s)", before, m.State, req.Replication.State))
		}
		if drained {
			s.desired.notify() // wakes the planned-failover job
		}
		if req.Barrier != nil {
			s.barriers.report(m.ID, req.Barrier)
			s.desired.notify() // wakes the barrier round
		}
		return m, nil
	}
}

// PointsReport is a master target's catalogue of one machine's
// recovery points: all of them, replacing what was there.
type PointsReport struct {
	Machine string                  `json:"machine"` // the machine ID
	Points  []control.RecoveryPoint `json:"points"`
}

func (s *Server) targetPoints(w http.ResponseWriter, r *http.Request) (any, error) {
	var req PointsReport
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	return nil, s.reportPoints(r.Context(), req)
}

// reportPoints replaces the catalogue of a machine replicated to the
// calling master target.
func (s *Server) reportPoints(ctx context.Context, req PointsReport) error {
	target := principalOf(ctx).comp
	m, err := s.o.Store.GetMachine(ctx, req.Machine)
	if err != nil {
		return err
	}
	// Protected in reverse, the catalogue lists the primary site's points
	// (what a failback can use); the secondary's are not listed meanwhile.
	from := target.ID
	if r := m.ReverseServing(); r != nil {
		if from == r.Target {
			from = m.Target // take them
		} else if from == m.Target {
			return nil
		}
	}
	if m.Target != from {
		return errorf(http.StatusConflict, "machine %s is not replicated to this master target (%s)", m.Name, target.ID)
	}
	if len(req.Points) > 100000 {
		return errorf(http.StatusBadRequest, "%d points: at most 100000", len(req.Points))
	}
	for i := range req.Points {
		req.Points[i].Machine = m.ID
	}
	slices.SortFunc(req.Points, func(a, b control.RecoveryPoint) int { return b.Time.Compare(a.Time) })
	return s.o.Store.ReplacePoints(ctx, m.ID, req.Points)
}
