package target

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/trust"
)

// Reverse replication (docs/control-plane.md, internal/api/reverse.go).
// A managed master target plays one of two parts for a machine:
//
//   - the shipper (DesiredShip): it failed the machine over, and the
//     replica machine runs from its failover export. It opens an embedded
//     agent (internal/agent/embedded.go) whose disks are the export's
//     overlays, routes the export through the agent's capture (so every
//     write the replica machine makes is journaled, in order), and ships
//     to the process server named. The agent's first session compares
//     the disks with the receiver's replica and sends only what differs.
//     On a failback it stops the replica machine through the driver,
//     refuses writes and drains to a final bookmark. Its journal lives in
//     <data dir>/reverse/<machine id>/.
//   - the receiver (DesiredReceive): at the primary site, it makes the
//     machine's replica in place over the old primary's disk files
//     (replica.CreateInPlace: nothing copied; the base is lazy) before
//     anything is shipped, and reports ready; on release (the failback's
//     epoch is raised) it closes the replica and removes its directory,
//     leaving the disk files, which hold the final state, to the original
//     agent.
//
// When a machine's failover is over (its desired state lists it with no
// failover: the failback is done), the shipper stops the agent and
// removes the failover: export, hydrated images, journal.

// ReverseAgent is the embedded agent of a reverse direction: internal/
// agent's *Agent, given through Options.ReverseAgent (the agent package's
// tests run a master target, so this package does not import it).
type ReverseAgent interface {
	// Run serves until ctx ends.
	Run(ctx context.Context) error
	// ShipTo ships to the process server at addr with identity id.
	ShipTo(addr, id string)
	// Disks are the capture's disks, to route the export through.
	Disks() []nbd.Backend
	// Freeze refuses writes from now on.
	Freeze(why string)
	// FinalBookmark bookmarks and ships until the bookmark is applied.
	FinalBookmark(ctx context.Context, label string, app bool, progress func(seq uint64, err error)) (uint64, error)
	// Report is the agent's replication, as a reverse report carries it.
	Report() control.ReverseReport
}

// ReverseAgentConfig is what a reverse agent is opened with.
type ReverseAgentConfig struct {
	Machine   string // the machine's name
	MachineID string
	Epoch     uint64
	StateDir  string
	Disks     []ReverseDisk
	Identity  string // the join directory of this master target
	Revoked   *trust.RevocationSet
	// BookmarkInterval of crash-consistent bookmarks; 0: the default.
	BookmarkInterval time.Duration
}

// ReverseDisk is one disk of a reverse agent: the export's overlay.
type ReverseDisk struct {
	Name    string
	Backend nbd.Backend
}

// reverseState is the reconciler's memory of reverse directions.
type reverseState struct {
	ships    map[string]*reverseShip // machine id ->
	received map[string]bool         // machine id -> the in-place replica was made
	sent     map[string]api.RecoveryReport
	report   func(context.Context, api.RecoveryReport) error
}

// reverseShip is a running embedded agent of a reverse direction.
type reverseShip struct {
	id      string // the reverse direction's
	machine string
	a       ReverseAgent
	export  *exported
	cancel  context.CancelFunc
	done    chan struct{}
	to      api.Endpoint

	mu       sync.Mutex
	failback string // the failback whose drain ran or runs
	drain    *control.DrainReport
}

func newReverseState(report func(context.Context, api.RecoveryReport) error) *reverseState {
	return &reverseState{ships: map[string]*reverseShip{}, received: map[string]bool{}, sent: map[string]api.RecoveryReport{}, report: report}
}

func (t *Target) reverseDir(id string) string { return filepath.Join(t.o.DataDir, "reverse", id) }

// reconcileReverse plays the parts d asks for, and removes failovers
// that are over.
func (t *Target) reconcileReverse(ctx context.Context, st *reverseState, fst *failoverState, d api.Desired) {
	listed := map[string]api.DesiredMachine{}
	for _, dm := range d.Machines {
		listed[dm.ID] = dm
		if dm.Receive != nil {
			rep := t.ensureReceive(ctx, st, dm)
			t.sendReverseReport(ctx, st, api.RecoveryReport{Machine: dm.ID, ReverseID: dm.Receive.ID, Reverse: &rep}, "receive")
		}
		if dm.Ship != nil {
			rep := t.ensureShip(ctx, st, fst, dm)
			t.sendReverseReport(ctx, st, api.RecoveryReport{Machine: dm.ID, ReverseID: dm.Ship.ID, Reverse: &rep}, "ship")
		}
		if ctx.Err() != nil {
			return
		}
	}
	for id, s := range st.ships {
		if dm, ok := listed[id]; !ok || dm.Ship == nil || dm.Ship.ID != s.id {
			t.stopShip(st, s)
		}
	}
	for id, r := range fst.records {
		if dm, ok := listed[id]; ok && dm.Failover == nil && dm.Test == nil {
			// Listed without a failover: the failback is done.
			if err := t.undoFailover(ctx, fst, r); err != nil {
				t.log.Warn("remove the failover after the failback", "machine", r.MachineName, "err", err)
				continue
			}
			os.RemoveAll(t.reverseDir(id))
			t.log.Info("failback done: the failover's replica machine, export, images and reverse journal are removed", "machine", r.MachineName)
		}
	}
}

// ensureReceive makes the in-place replica, or releases it.
func (t *Target) ensureReceive(ctx context.Context, st *reverseState, dm api.DesiredMachine) control.ReverseReport {
	want := dm.Receive
	if want.Release {
		if err := t.releaseReplica(dm.ID); err != nil {
			return control.ReverseReport{Ready: true, Seeded: true, Error: "release: " + err.Error()}
		}
		delete(st.received, dm.ID)
		return control.ReverseReport{Released: true}
	}
	if rp, _, ok := t.Lookup(dm.ID); ok {
		return control.ReverseReport{Ready: true, Seeded: rp.Status().InPlace}
	}
	disks := make([]replica.DiskInfo, len(want.Disks))
	for i, d := range want.Disks {
		disks[i] = replica.DiskInfo{Name: d.Name, Size: d.Size}
	}
	if len(disks) == 0 || len(want.Seed) != len(disks) {
		return control.ReverseReport{Error: fmt.Sprintf("the desired state names %d disks and %d seed images", len(disks), len(want.Seed))}
	}
	if err := replica.CreateInPlace(t.dir(dm.ID), dm.ID, disks, want.Seed); err != nil {
		return control.ReverseReport{Error: err.Error()}
	}
	os.WriteFile(filepath.Join(t.dir(dm.ID), "name"), []byte(dm.Name+"\n"), 0o644)
	if _, err := t.open(ctx, dm.ID); err != nil {
		return control.ReverseReport{Error: err.Error()}
	}
	st.received[dm.ID] = true
	t.log.Info("reverse direction: replica made in place over the old primary's disks", "machine", dm.Name, "images", want.Seed)
	return control.ReverseReport{Ready: true, Seeded: true}
}

// releaseReplica closes an in-place replica and removes its directory:
// the links go, the disk files stay.
func (t *Target) releaseReplica(id string) error {
	t.mu.Lock()
	m, ok := t.machines[id]
	delete(t.machines, id)
	t.mu.Unlock()
	if ok {
		if !m.rep.Status().InPlace {
			t.mu.Lock()
			t.machines[id] = m
			t.mu.Unlock()
			return fmt.Errorf("the replica of %s is not in place; not released", id)
		}
		if err := m.rep.Close(); err != nil {
			t.log.Warn("close the released replica", "machine", id, "err", err)
		}
	}
	if err := os.RemoveAll(t.dir(id)); err != nil {
		return err
	}
	if ok {
		t.log.Info("failback: the old primary's disks released (they hold the final state)", "machine", m.name)
	}
	return nil
}

// ensureShip runs the embedded agent of a reverse direction, and a
// failback's drain.
func (t *Target) ensureShip(ctx context.Context, st *reverseState, fst *failoverState, dm api.DesiredMachine) control.ReverseReport {
	want := dm.Ship
	s := st.ships[dm.ID]
	if s == nil {
		var err error
		if s, err = t.startShip(ctx, fst, dm); err != nil {
			return control.ReverseReport{Error: err.Error()}
		}
		st.ships[dm.ID] = s
	}
	if want.Process != nil && *want.Process != s.to {
		s.to = *want.Process
		s.a.ShipTo(want.Process.Address, want.Process.ID)
		t.log.Info("reverse direction: shipping", "machine", dm.Name, "process", want.Process.ID, "address", want.Process.Address)
	}
	if want.Failback != "" {
		s.mu.Lock()
		start := s.failback != want.Failback
		if start {
			s.failback, s.drain = want.Failback, &control.DrainReport{ID: want.Failback}
		}
		s.mu.Unlock()
		if start {
			go t.failbackDrain(s, fst.records[dm.ID])
		}
	}
	rep := s.a.Report()
	rep.Ready = true
	s.mu.Lock()
	if s.drain != nil {
		d := *s.drain
		rep.Drain = &d
	}
	s.mu.Unlock()
	return rep
}

// startShip opens the embedded agent over the failover export and routes
// the export through its capture.
func (t *Target) startShip(ctx context.Context, fst *failoverState, dm api.DesiredMachine) (*reverseShip, error) {
	r := fst.records[dm.ID]
	if r == nil || r.Export == "" {
		return nil, fmt.Errorf("machine %s was not failed over here (no failover export)", dm.Name)
	}
	var e *exported
	if t.front != nil {
		t.front.mu.Lock()
		e = t.front.exports[r.Export]
		t.front.mu.Unlock()
	}
	if e == nil {
		return nil, fmt.Errorf("the failover export %s is not served", r.Export)
	}
	if t.o.ReverseAgent == nil {
		return nil, errors.New("this master target cannot ship a machine back (built without reverse agents)")
	}
	ec := ReverseAgentConfig{Machine: dm.Name, MachineID: dm.ID, Epoch: dm.Ship.Epoch, StateDir: t.reverseDir(dm.ID),
		Identity: t.o.Control.Identity, Revoked: t.mgd.revoked, BookmarkInterval: dm.Policy.PointInterval.D()}
	for i, o := range e.overlays {
		ec.Disks = append(ec.Disks, ReverseDisk{Name: e.info.Disks[i].Name, Backend: o})
	}
	a, err := t.o.ReverseAgent(ctx, ec, t.log.With("reverse", dm.Name))
	if err != nil {
		return nil, fmt.Errorf("reverse agent of %s: %w", dm.Name, err)
	}
	e.route(a.Disks())
	actx, cancel := context.WithCancel(t.ctx)
	s := &reverseShip{id: dm.Ship.ID, machine: dm.ID, a: a, export: e, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := a.Run(actx); err != nil {
			t.log.Warn("reverse agent stopped", "machine", dm.Name, "err", err)
		}
	}()
	t.log.Info("reverse direction: the failover export's writes are captured", "machine", dm.Name, "export", r.Export)
	return s, nil
}

// stopShip stops an embedded agent; the export goes back to its
// overlays (what the capture wrote is there too).
func (t *Target) stopShip(st *reverseState, s *reverseShip) {
	s.export.route(nil)
	s.cancel()
	<-s.done
	delete(st.ships, s.machine)
	t.log.Info("reverse direction: agent stopped", "machine", s.machine)
}

// failbackDrain stops the replica machine, refuses writes, takes the
// final bookmark and ships until it is applied at the primary site.
func (t *Target) failbackDrain(s *reverseShip, r *failoverRecord) {
	update := func(fn func(*control.DrainReport)) {
		s.mu.Lock()
		d := *s.drain
		fn(&d)
		s.drain = &d
		s.mu.Unlock()
	}
	s.mu.Lock()
	id := s.failback
	s.mu.Unlock()
	ctx := t.ctx
	state, stopped := "no replica machine", false
	if r != nil && r.Handle != "" && t.o.Driver != nil {
		st, err := driver.StopAndWait(ctx, t.o.Driver, driver.Handle(r.Handle), 30)
		if err != nil {
			update(func(d *control.DrainReport) { d.SourceState, d.Error = st, "the replica machine: "+err.Error() })
			return
		}
		state, stopped = st, true
	}
	s.a.Freeze("failback " + id + ": the replica machine is stopped")
	update(func(d *control.DrainReport) { d.SourceState, d.SourceStopped, d.WritesRefused = state, stopped, true })
	label := control.DrainLabel(id)
	seq, err := s.a.FinalBookmark(ctx, label, stopped, func(seq uint64, err error) {
		if err != nil {
			update(func(d *control.DrainReport) { d.Error = "final bookmark: " + err.Error() + " (retrying)" })
			return
		}
		update(func(d *control.DrainReport) { d.BookmarkSeq, d.Label, d.Error = seq, label, "" })
	})
	if err != nil {
		update(func(d *control.DrainReport) { d.Error = err.Error() })
		return
	}
	t.log.Info("failback: drained; the final bookmark is applied at the primary site", "machine", s.machine, "seq", seq)
	update(func(d *control.DrainReport) { d.Done = true })
}

// sendReverseReport reports when the report differs from the last one
// sent for that part.
func (t *Target) sendReverseReport(ctx context.Context, st *reverseState, r api.RecoveryReport, part string) {
	key := r.Machine + "/" + part
	if last, ok := st.sent[key]; ok && reflect.DeepEqual(last, r) {
		return
	}
	err := st.report(ctx, r)
	var ce *client.Error
	switch {
	case err == nil:
		st.sent[key] = r
	case errors.As(err, &ce) && (ce.Status == http.StatusConflict || ce.Status == http.StatusNotFound):
		t.log.Warn("the configuration server refused a reverse report", "machine", r.Machine, "err", err)
		st.sent[key] = r
	default:
		t.log.Warn("report a reverse direction", "machine", r.Machine, "err", err)
	}
}
