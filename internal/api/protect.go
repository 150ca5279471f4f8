package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// heartbeatFresh is how old a server's last heartbeat may be for it to be
// picked for a new machine.
const heartbeatFresh = time.Minute

// notifier wakes the long polls of desired state when an assignment
// changes.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

type protectRequest struct {
	Group string `json:"group"`
	// Process and Target pin the process server and the master target
	// (name or id); by default the server picks the ones with the most
	// room.
	Process string `json:"process,omitempty"`
	Target  string `json:"target,omitempty"`
}

type unprotectRequest struct {
	// DeleteReplica removes the replica and its recovery points at the
	// master target too; without it they are kept.
	DeleteReplica bool `json:"delete_replica"`
}

// pick chooses the server of role with the most room: registered, not
// revoked, heard within heartbeatFresh, under its MaxMachines, fewest
// machines first (then most free bytes).
func (s *Server) pick(ctx context.Context, role control.Role) (control.Server, error) {
	all, err := s.o.Store.ListServers(ctx, role)
	if err != nil {
		return control.Server{}, err
	}
	now := s.now()
	var cands []control.Server
	var why []string
	for _, srv := range all {
		switch {
		case srv.Revoked:
			why = append(why, srv.Name+" is revoked")
		case now.Sub(srv.HeartbeatAt) > heartbeatFresh:
			why = append(why, fmt.Sprintf("%s was last heard %s", srv.Name, ago(now, srv.HeartbeatAt)))
		case srv.Capacity.MaxMachines > 0 && srv.Capacity.Machines >= srv.Capacity.MaxMachines:
			why = append(why, fmt.Sprintf("%s is full (%d machines)", srv.Name, srv.Capacity.Machines))
		case srv.Address == "":
			why = append(why, srv.Name+" has not said where it listens")
		default:
			cands = append(cands, srv)
		}
	}
	if len(cands) == 0 {
		what := map[control.Role]string{control.RoleProcess: "process server", control.RoleTarget: "master target"}[role]
		if len(all) == 0 {
			return control.Server{}, errorf(http.StatusConflict, "no %s has joined: make a token with `standby token create --role %s` and join one", what, role)
		}
		return control.Server{}, errorf(http.StatusConflict, "no %s can take the machine: %v", what, why)
	}
	slices.SortStableFunc(cands, func(a, b control.Server) int {
		if a.Capacity.Machines != b.Capacity.Machines {
			return a.Capacity.Machines - b.Capacity.Machines
		}
		switch {
		case a.Capacity.FreeBytes > b.Capacity.FreeBytes:
			return -1
		case a.Capacity.FreeBytes < b.Capacity.FreeBytes:
			return 1
		}
		return 0
	})
	return cands[0], nil
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return now.Sub(t).Round(time.Second).String() + " ago"
}

// protect enables protection of a machine in a group: it picks a process
// server and a master target, moves the machine to enabling and
// publishes the desired state; the agent's reports then move it on.
func (s *Server) protect(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req protectRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	if s.o.Jobs == nil {
		return nil, errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	m, err := s.protectMachine(ctx, name, req)
	var job control.Job
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, "protect", "machine/"+m.Name, map[string]string{"machine": m.ID}, principalOf(ctx).actor())
	}
	s.audit(ctx, "machine.protect", "machine/"+name, err, "group "+req.Group+", job "+job.ID)
	if err != nil {
		return nil, err
	}
	return protectResponse{Machine: m, Job: job}, nil
}

// protectResponse is the machine as protection left it, and the job that
// follows it to protected.
type protectResponse struct {
	Machine control.Machine `json:"machine"`
	Job     control.Job     `json:"job"`
}

func (s *Server) protectMachine(ctx context.Context, name string, req protectRequest) (control.Machine, error) {
	group := req.Group
	if group == "" {
		return control.Machine{}, errorf(http.StatusBadRequest, "say which protection group: {\"group\": \"NAME\"} (`standby groups list`)")
	}
	g, err := s.o.Store.GroupByName(ctx, group)
	if err != nil {
		return control.Machine{}, fmt.Errorf("group %s: %w", group, err)
	}
	choose := func(role control.Role, key string) (control.Server, error) {
		if key != "" {
			return s.serverByNameOrID(ctx, role, key)
		}
		return s.pick(ctx, role)
	}
	return s.changeMachine(ctx, name, func(m *control.Machine) error {
		next, err := control.Transition(m.State, control.EventEnable)
		if err != nil {
			return errorf(http.StatusConflict, "machine %s: %v", name, err)
		}
		ps, err := choose(control.RoleProcess, req.Process)
		if err != nil {
			return err
		}
		mt, err := choose(control.RoleTarget, req.Target)
		if err != nil {
			return err
		}
		m.State, m.Group, m.Process, m.Target = next, g.ID, ps.ID, mt.ID
		if m.Epoch == 0 {
			m.Epoch = 1
		}
		return nil
	})
}

func (s *Server) unprotect(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req unprotectRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	m, err := s.o.Store.MachineByName(ctx, name)
	if err == nil {
		var next control.MachineState
		if err = control.CheckTestFailover(m.Name, m.TestFailover, control.EventDisable); err != nil {
			err = errorf(http.StatusConflict, "%v", err)
		} else if next, err = control.Apply(m.State, control.EventDisable, control.EventDisabled); err != nil {
			err = errorf(http.StatusConflict, "machine %s: %v", name, err)
		} else {
			m.State, m.Group, m.Process, m.Target, m.UpdatedAt = next, "", "", "", s.now()
			m.Health, m.HealthReasons = control.HealthNormal, nil
			m, err = s.o.Store.UpdateMachine(ctx, m)
		}
	}
	detail := "replica kept"
	if req.DeleteReplica {
		detail = "replica deletion requested"
	}
	s.audit(ctx, "machine.unprotect", "machine/"+name, err, detail)
	if err != nil {
		return nil, err
	}
	s.desired.notify()
	return m, nil
}

// DesiredMachine is one machine a component should serve, as the server
// wants it.
type DesiredMachine struct {
	ID     string         `json:"id"`
	Name   string         `json:"name"`
	Epoch  uint64         `json:"epoch"`
	Policy control.Policy `json:"policy"`
	// Process is where the agent ships (agents' desired state).
	Process *Endpoint `json:"process,omitempty"`
	// Target is where the process server forwards (process servers').
	Target *Endpoint `json:"target,omitempty"`
	// Test is a test failover the master target should run or remove
	// (master targets'; testfailover.go).
	Test *DesiredTest `json:"test,omitempty"`
	// Failover is a failover the master target should run (master
	// targets'; failover.go).
	Failover *DesiredFailover `json:"failover,omitempty"`
	// Drain is a planned failover the agent takes part in (agents';
	// planned.go); Resume its continuing after a failback (reverse.go).
	Drain  *DesiredDrain  `json:"drain,omitempty"`
	Resume *DesiredResume `json:"resume,omitempty"`
	// Ship makes a master target the agent of the reverse direction;
	// Receive makes one its receiver (master targets'; reverse.go).
	Ship    *DesiredShip    `json:"ship,omitempty"`
	Receive *DesiredReceive `json:"receive,omitempty"`
	// Barrier is a consistency barrier the agent takes part in
	// (consistency.go).
	Barrier *DesiredBarrier `json:"barrier,omitempty"`
}

// Endpoint is a server a component connects to: its address and the
// identity its certificate must carry.
type Endpoint struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// Desired is a component's desired state. Version is a hash of the rest:
// a component passes the one it has (?have=) and the call waits until it
// changes.
type Desired struct {
	Version  string           `json:"version"`
	Machines []DesiredMachine `json:"machines"`
	// Actions are commands to run once and report (process servers and
	// master targets; actions.go).
	Actions []DesiredAction `json:"actions,omitempty"`
}

// desiredFor computes the desired state of component id of role.
//
// A machine protected in reverse (control.Reverse) is served by other
// components than its own: its process server and master target at the
// primary site (listed although the machine names others), and its
// failover's master target as its agent; the original process server
// does not forward it meanwhile. Those are found among every protected
// machine.
func (s *Server) desiredFor(ctx context.Context, role control.Role, id string) (Desired, error) {
	f := store.MachineFilter{Protected: true}
	if role == control.RoleAgent {
		f.Agent = id
	}
	ms, err := s.o.Store.ListMachines(ctx, f)
	if err != nil {
		return Desired{}, err
	}
	d := Desired{Machines: []DesiredMachine{}}
	servers := map[string]control.Server{}
	endpoint := func(sid string) (*Endpoint, error) {
		srv, ok := servers[sid]
		if !ok {
			var err error
			if srv, err = s.o.Store.GetServer(ctx, sid); err != nil {
				return nil, err
			}
			servers[sid] = srv
		}
		return &Endpoint{ID: srv.ID, Address: srv.Address}, nil
	}
	for _, m := range ms {
		rev := m.ReverseServing()
		var serves bool
		switch role {
		case control.RoleAgent:
			serves = true
		case control.RoleProcess:
			// Failed over: nothing to forward (failover.go), unless the
			// reverse direction goes through this one.
			serves = (m.Process == id && !m.State.InFailover() && rev == nil) || (rev != nil && rev.Process == id && rev.Report.Ready)
		case control.RoleTarget:
			// The receiver keeps it until the failback is done (it
			// releases the old primary's disks at the end).
			serves = m.Target == id || (m.Reverse != nil && m.Reverse.Target == id)
		}
		if !serves {
			continue
		}
		g, err := s.o.Store.GetGroup(ctx, m.Group)
		if err != nil {
			return Desired{}, err
		}
		dm := DesiredMachine{ID: m.ID, Name: m.Name, Epoch: m.Epoch, Policy: g.Policy}
		switch role {
		case control.RoleAgent:
			// Failed over or protected in reverse: the new epoch and no
			// process server fence the agent.
			if !m.State.InFailover() && m.Reverse == nil {
				dm.Process, err = endpoint(m.Process)
			}
			dm.Drain, dm.Resume = desiredDrain(m), desiredResume(m)
			dm.Barrier = s.barriers.desired(m.ID)
		case control.RoleProcess:
			if rev != nil {
				dm.Target, err = endpoint(rev.Target)
			} else {
				dm.Target, err = endpoint(m.Target)
			}
		case control.RoleTarget:
			if m.Target == id {
				dm.Test, dm.Failover = desiredTest(m), desiredFailover(m)
				dm.Ship, err = desiredShip(m, id, endpoint)
			}
			if m.Reverse != nil && m.Reverse.Target == id {
				dm.Receive = desiredReceive(m)
			}
		}
		if err != nil {
			return Desired{}, err
		}
		d.Machines = append(d.Machines, dm)
	}
	if role == control.RoleProcess || role == control.RoleTarget {
		d.Actions = s.actions.forComponent(id)
	}
	b, _ := json.Marshal(struct {
		M []DesiredMachine
		A []DesiredAction
	}{d.Machines, d.Actions})
	h := sha256.Sum256(b)
	d.Version = hex.EncodeToString(h[:8])
	return d, nil
}

// MaxWait bounds a desired-state long poll.
const MaxWait = 60 * time.Second

// desiredState answers GET /v1/desired?have=VERSION&wait=30s: the
// caller's desired state, at once when it differs from have, else when it
// changes or wait passes.
func (s *Server) desiredState(w http.ResponseWriter, r *http.Request) (any, error) {
	comp := principalOf(r.Context()).comp
	have := r.URL.Query().Get("have")
	wait := time.Duration(0)
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxWait {
			return nil, errorf(http.StatusBadRequest, "wait=%q: want a duration from 0s to %s", v, MaxWait)
		}
		wait = d
	}
	d, err := s.awaitDesired(r.Context(), comp, have, wait)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// awaitDesired returns comp's desired state at once when it differs from
// have (or have is ""), else when it changes or wait passes: the long
// poll of GET /v1/desired and each round of the gRPC WatchDesired.
func (s *Server) awaitDesired(ctx context.Context, comp *Identity, have string, wait time.Duration) (Desired, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		changed := s.desired.wait() // before computing: no change is missed
		d, err := s.desiredFor(ctx, comp.Role, comp.ID)
		if err != nil || have == "" || d.Version != have {
			return d, err
		}
		select {
		case <-changed:
		case <-deadline.C:
			return d, nil
		case <-ctx.Done():
			return Desired{}, ctx.Err()
		}
	}
}
