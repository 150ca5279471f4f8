package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/fsutil"
)

// The agent's part of a planned failover (docs/control-plane.md): while
// the desired state carries a DesiredDrain, the agent
//
//  1. stops the source machine through its machine driver (source: in
//     the configuration; without it the operator stopped the machine),
//     so the guest shuts down cleanly and flushes;
//  2. refuses every write from then on (capture.Machine.Freeze: NBD
//     clients get EPERM), so nothing can be written after the final
//     bookmark;
//  3. takes the final bookmark, labelled control.DrainLabel(id) and
//     app-consistent when the driver stopped the machine;
//  4. ships until that bookmark is applied at the master target, and
//     reports the drain done with the bookmark's journal sequence.
//
// The configuration server then finds the bookmark's recovery point,
// raises the epoch and fails over to it: every write the agent
// acknowledged before the stop is in that point. Writes stay refused
// while the desired state carries the drain (the machine is failed over
// elsewhere); when it no longer does, the agent thaws.
//
// What was done is kept in <state dir>/drain.json, so that a restarted
// agent does not bookmark again after the epoch was raised (its segments
// would be fenced and the drain would never end).

// drainFile is the drain's record in the state directory.
const drainFile = "drain.json"

// drainer runs the drains of one agent.
type drainer struct {
	c      *controller
	source driver.Driver // nil: no source: section

	mu     sync.Mutex
	rep    *control.DrainReport // the current drain's report; nil when none
	cancel context.CancelFunc
	done   chan struct{}
}

// SetSourceDriver gives the agent the machine driver of its source:
// section (cmd builds it from the registry of drivers). Call it before
// Run.
func (a *Agent) SetSourceDriver(d driver.Driver) {
	if a.ctl != nil {
		a.ctl.drain.source = d
	}
}

func (dr *drainer) path() string { return filepath.Join(dr.c.a.cfg.StateDir, drainFile) }

// load returns the drain record kept by save, if any.
func (dr *drainer) load() *control.DrainReport {
	b, err := os.ReadFile(dr.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var r control.DrainReport
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil || r.ID == "" {
		dr.c.log.Warn("drain record unreadable; ignored", "path", dr.path(), "err", err)
		return nil
	}
	return &r
}

func (dr *drainer) save(r control.DrainReport) {
	b, _ := json.Marshal(r)
	if err := fsutil.WriteAtomic(dr.path(), b, nil); err != nil {
		dr.c.log.Warn("keep the drain record", "path", dr.path(), "err", err)
	}
}

// report is the drain to report, nil when none.
func (dr *drainer) report() *control.DrainReport {
	dr.mu.Lock()
	defer dr.mu.Unlock()
	if dr.rep == nil {
		return nil
	}
	r := *dr.rep
	return &r
}

func (dr *drainer) update(fn func(*control.DrainReport)) {
	dr.mu.Lock()
	r := *dr.rep
	fn(&r)
	dr.rep = &r
	dr.mu.Unlock()
	dr.c.reportSoon()
}

// set acts on the desired drain: start the one named (once per id), or,
// with none, stop any and accept writes again.
func (dr *drainer) set(d *api.DesiredDrain) {
	dr.mu.Lock()
	cur := dr.rep
	dr.mu.Unlock()
	if d == nil {
		if cur == nil {
			return
		}
		dr.stop()
		dr.mu.Lock()
		dr.rep = nil
		dr.mu.Unlock()
		os.Remove(dr.path())
		dr.c.a.machine.Thaw()
		dr.c.log.Info("the planned failover is over: writes accepted again", "failover", cur.ID)
		return
	}
	if cur != nil && cur.ID == d.ID {
		return
	}
	dr.stop()
	rep := &control.DrainReport{ID: d.ID}
	stopOnly := d.StopOnly
	if kept := dr.load(); kept != nil && kept.ID == d.ID {
		rep = kept
	}
	dr.mu.Lock()
	dr.rep = rep
	ctx, cancel := context.WithCancel(context.Background())
	dr.cancel, dr.done = cancel, make(chan struct{})
	done := dr.done
	dr.mu.Unlock()
	go func() {
		defer close(done)
		dr.run(ctx, *rep, stopOnly)
	}()
}

// stop cancels a running drain and waits for it.
func (dr *drainer) stop() {
	dr.mu.Lock()
	cancel, done := dr.cancel, dr.done
	dr.cancel, dr.done = nil, nil
	dr.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// run drains for failover rep.ID; rep is what a restarted agent kept.
// With stopOnly (a re-protection after an unplanned failover: the agent
// is fenced, nothing more can be shipped) it stops the source and
// refuses writes, and that is the drain.
func (dr *drainer) run(ctx context.Context, rep control.DrainReport, stopOnly bool) {
	log := dr.c.log.With("failover", rep.ID)
	m := dr.c.a.machine
	if rep.Done {
		// Drained before a restart: only refuse writes again.
		m.Freeze("planned failover " + rep.ID + ": the machine runs at the other site")
		dr.update(func(r *control.DrainReport) { r.WritesRefused = true })
		return
	}
	log.Info("planned failover: stopping the source machine and draining the journal")
	state, stopped, err := dr.stopSource(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		log.Error("planned failover: the source machine could not be stopped; writes are still accepted", "err", err)
		dr.update(func(r *control.DrainReport) { r.SourceState, r.Error = state, err.Error() })
		return
	}
	m.Freeze("planned failover " + rep.ID + ": the source machine is stopped")
	dr.update(func(r *control.DrainReport) {
		r.SourceState, r.SourceStopped, r.WritesRefused, r.Error = state, stopped, true, ""
	})
	if stopOnly {
		log.Info("re-protection: the source machine is stopped and writes refused; the reverse direction may write these disks")
		dr.update(func(r *control.DrainReport) { r.Done = true })
		dr.save(*dr.report())
		return
	}
	label := control.DrainLabel(rep.ID)
	seq, err := dr.c.a.FinalBookmark(ctx, label, stopped, func(seq uint64, err error) {
		if err != nil {
			dr.update(func(r *control.DrainReport) { r.Error = "final bookmark: " + err.Error() + " (retrying)" })
			return
		}
		log.Info("planned failover: final bookmark taken; shipping it", "seq", seq)
		dr.update(func(r *control.DrainReport) { r.BookmarkSeq, r.Label, r.Error = seq, label, "" })
	})
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		dr.update(func(r *control.DrainReport) { r.Error = err.Error() })
		return
	}
	log.Info("planned failover: drained; the final bookmark is applied at the master target", "seq", seq)
	dr.update(func(r *control.DrainReport) { r.Done = true })
	dr.save(*dr.report())
}

// resume continues the agent after a failback (DesiredResume): the
// journal goes on at the new epoch (its old records dropped: the disks
// were written in place by the reverse direction), the shipper compares
// the disks with the replica before anything else, and the source
// machine is started through its driver once writes are accepted again
// (the caller thaws, by clearing the drain).
func (dr *drainer) resume(epoch uint64) error {
	a := dr.c.a
	if a.machine.Stats().Epoch < epoch {
		if err := a.machine.AdoptEpoch(epoch); err != nil {
			return fmt.Errorf("continue the journal at epoch %d: %w", epoch, err)
		}
		a.ship.unfence()
		a.ship.RequestResync()
		dr.c.log.Info("failed back: the journal continues at the new epoch; comparing the disks with the replica", "epoch", epoch)
	}
	return nil
}

// startSource starts the source machine through its driver on the
// agent's own exports, after a failback.
func (dr *drainer) startSource(ctx context.Context) {
	if dr.source == nil {
		dr.c.log.Info("failed back: no source driver configured; start the machine yourself")
		return
	}
	a := dr.c.a
	m := driver.Machine{Name: a.cfg.Source.Handle}
	for _, d := range a.cfg.Disks {
		uri := ""
		if a.cfg.Listen.Unix != "" {
			uri = fmt.Sprintf("nbd+unix:///%s?socket=%s", d.Name, a.cfg.Listen.Unix)
		} else {
			uri = fmt.Sprintf("nbd://%s/%s", a.cfg.Listen.TCP, d.Name)
		}
		m.Disks = append(m.Disks, driver.Disk{Name: d.Name, URI: uri})
	}
	if _, err := dr.source.Start(ctx, m); err != nil && !errors.Is(err, driver.ErrAlreadyRunning) {
		dr.c.log.Error("failed back: the source machine could not be started", "handle", m.Name, "err", err)
		return
	}
	dr.c.log.Info("failed back: the source machine started", "handle", m.Name)
}

// stopSource stops the source machine through its driver and confirms it
// stopped. Without a driver it says so: the agent only refuses writes.
func (dr *drainer) stopSource(ctx context.Context) (state string, stopped bool, err error) {
	if dr.source == nil {
		return "no source driver configured: writes refused from now on", false, nil
	}
	h := driver.Handle(dr.c.a.cfg.Source.Handle)
	state, err = driver.StopAndWait(ctx, dr.source, h, 30)
	if err != nil {
		return state, false, fmt.Errorf("the source machine: %w", err)
	}
	return state, true, nil
}
