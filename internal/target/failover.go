package target

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/driver"
)

// Failovers of a managed master target (docs/control-plane.md): the
// configuration server's desired state says, per machine, which failover
// to run. The target reconciles, in this order:
//
//  1. fence: the replica's epoch is raised to the failover's
//     (replica.Fence), durably, before anything is exported, so no
//     segment of the old primary is applied after the point is chosen;
//  2. export the point as "failover-<machine name>";
//  3. start the replica machine through the machine driver with the
//     export's disks and the failover's network settings (not isolated);
//  4. hydrate the export to standalone images in the background
//     (hydrate.go), reporting progress;
//  5. on commit, keep only the exported point (replica.KeepOnly): every
//     other point not in use is removed and the history before it is
//     released. The export stays: the machine runs from it.
//
// A failover with another id (failing over again before commit) first
// stops the replica machine, the hydration and the export of the earlier
// one. What was made is recorded in <data dir>/failovers/<machine id>.json.
// A machine the desired state no longer mentions keeps its replica
// machine: stopping a failed-over machine is the operator's decision.

// failoverRecord is what the target made for one machine's failover.
type failoverRecord struct {
	Failover    string `json:"failover"` // the DesiredFailover's ID
	Machine     string `json:"machine"`
	MachineName string `json:"machine_name"`
	Fenced      uint64 `json:"fenced,omitempty"`
	Export      string `json:"export,omitempty"`
	PointID     uint64 `json:"point_id,omitempty"`
	Handle      string `json:"handle,omitempty"`
	Committed   bool   `json:"committed,omitempty"`
	Released    int    `json:"released,omitempty"`
	// Failed holds the error of a step that could not be done; it is not
	// tried again until the operator fails over again.
	Failed string `json:"failed,omitempty"`
}

// failoverState is the reconciler's memory.
type failoverState struct {
	records map[string]*failoverRecord // machine id ->
	hyd     map[string]*hydration      // machine id ->
	sent    map[string]api.RecoveryReport
	report  func(context.Context, api.RecoveryReport) error // as testState's
}

func (t *Target) failoversDir() string { return filepath.Join(t.o.DataDir, "failovers") }

func (t *Target) loadFailoverRecords() map[string]*failoverRecord {
	return loadRecords(t, t.failoversDir(), "failover", func(r *failoverRecord) string { return r.Machine })
}

func (t *Target) saveFailoverRecord(r *failoverRecord) error {
	return saveRecord(t.failoversDir(), r.Machine, r)
}

func newFailoverState(t *Target, report func(context.Context, api.RecoveryReport) error) *failoverState {
	return &failoverState{records: t.loadFailoverRecords(), hyd: map[string]*hydration{}, sent: map[string]api.RecoveryReport{}, report: report}
}

// reconcileFailovers runs the failovers d asks for.
func (t *Target) reconcileFailovers(ctx context.Context, st *failoverState, d api.Desired) {
	for _, dm := range d.Machines {
		if dm.Failover == nil {
			continue
		}
		rep := t.ensureFailover(ctx, st, dm, *dm.Failover)
		if ctx.Err() != nil {
			return
		}
		t.sendFailoverReport(ctx, st, api.RecoveryReport{Machine: dm.ID, FailoverID: dm.Failover.ID, Failover: &rep})
	}
}

// failoverExportName is the deterministic export name of a failover.
func failoverExportName(machineName, machineID string) string {
	n := "failover-" + machineName
	if !exportNameRE.MatchString(n) {
		n = "failover-" + strings.ReplaceAll(machineID, "-", "")[:12]
	}
	return n
}

// ensureFailover does what is left of the failover and reports it.
func (t *Target) ensureFailover(ctx context.Context, st *failoverState, dm api.DesiredMachine, want api.DesiredFailover) control.FailoverReport {
	r := st.records[dm.ID]
	if r != nil && r.Failover != want.ID {
		// Failing over again (to another point): away with the earlier one.
		if err := t.undoFailover(ctx, st, r); err != nil {
			return control.FailoverReport{Phase: control.FailoverPhaseFailed, Error: err.Error()}
		}
		r = nil
	}
	if r == nil {
		r = &failoverRecord{Failover: want.ID, Machine: dm.ID, MachineName: dm.Name}
		st.records[dm.ID] = r
	}
	rep := control.FailoverReport{Phase: control.FailoverPhaseStarting, Fenced: r.Fenced, Export: r.Export, PointID: r.PointID, Machine: r.Handle}
	failed := func(err error) control.FailoverReport {
		r.Failed = err.Error()
		if serr := t.saveFailoverRecord(r); serr != nil {
			t.log.Warn("keep the failover record", "machine", dm.Name, "err", serr)
		}
		t.log.Warn("failover failed; fail over again to retry", "machine", dm.Name, "failover", want.ID, "err", err)
		rep.Phase, rep.Error = control.FailoverPhaseFailed, r.Failed
		return rep
	}
	if r.Failed != "" {
		rep.Phase, rep.Error = control.FailoverPhaseFailed, r.Failed
		return rep
	}
	rp, _, ok := t.Lookup(dm.ID)
	if !ok {
		return failed(fmt.Errorf("machine %s: %w", dm.Name, ErrNoMachine))
	}
	// 1. Fence, before the point is chosen.
	if err := rp.Fence(ctx, want.Epoch); err != nil {
		return failed(fmt.Errorf("fence the replica to epoch %d: %w", want.Epoch, err))
	}
	r.Fenced = rp.Status().Epoch
	rep.Fenced = r.Fenced
	// 2. Export, once; found again after a restart.
	name := failoverExportName(dm.Name, dm.ID)
	x, err := t.ExportByName(name)
	if err != nil && r.Export != "" {
		return failed(fmt.Errorf("export %s is gone (unexported by hand?); fail over again", r.Export))
	}
	if err != nil {
		if x, err = t.Export(ctx, ExportRequest{Machine: dm.ID, Point: want.Point, Name: name}); err != nil {
			return failed(err)
		}
		t.log.Info("failover: replica fenced and point exported", "machine", dm.Name, "epoch", r.Fenced, "point", x.Point.ID, "export", x.Name)
	}
	r.Export, r.PointID = x.Name, x.Point.ID
	if err := t.saveFailoverRecord(r); err != nil {
		return failed(fmt.Errorf("record the failover: %w", err))
	}
	rep.PointID, rep.PointTime, rep.Export = x.Point.ID, x.Point.Time, x.Name
	// 3. The replica machine.
	m := driver.Machine{Name: want.Replica.Name, CPUs: want.Replica.CPUs, MemoryMiB: want.Replica.MemoryMiB,
		Network: driver.Network{Settings: want.Network}}
	for _, d := range x.Disks {
		uri := d.UnixURI
		if uri == "" {
			uri = d.URI
		}
		m.Disks = append(m.Disks, driver.Disk{Name: d.Name, URI: uri})
		rep.Disks = append(rep.Disks, uri)
	}
	if t.o.Driver == nil {
		return failed(errors.New("this master target has no machine driver: add a driver: section to its configuration (docs/drivers.md)"))
	}
	if r.Handle == "" {
		h, err := t.o.Driver.Start(ctx, m)
		if err != nil {
			return failed(fmt.Errorf("start replica machine %s: %w", m.Name, err))
		}
		r.Handle = string(h)
		if err := t.saveFailoverRecord(r); err != nil {
			t.log.Warn("keep the failover record", "machine", dm.Name, "err", err)
		}
		t.log.Info("failover: replica machine started", "machine", dm.Name, "replica", m.Name, "handle", h, "export", x.Name)
	}
	rep.Phase, rep.Machine = control.FailoverPhaseRunning, r.Handle
	if s, err := t.o.Driver.Status(ctx, driver.Handle(r.Handle)); err != nil {
		rep.MachineState, rep.Error = string(driver.Unknown), err.Error()
	} else {
		rep.MachineState = string(s.State)
	}
	// 4. Hydration, in the background.
	h := st.hyd[dm.ID]
	if h == nil || h.export != x.Name {
		if h, err = t.startHydration(t.ctx, dm.ID, x.Name); err != nil {
			rep.Hydration.Error = err.Error()
		} else {
			st.hyd[dm.ID] = h
		}
	}
	if h != nil {
		rep.Hydration = h.status()
	}
	// 5. Commit.
	if want.Commit && !r.Committed {
		_, remove, err := rp.KeepOnly(ctx, r.PointID)
		if err != nil {
			rep.Error = fmt.Sprintf("commit: %v", err)
			return rep
		}
		r.Committed, r.Released = true, len(remove)
		if err := t.saveFailoverRecord(r); err != nil {
			t.log.Warn("keep the failover record", "machine", dm.Name, "err", err)
		}
		t.log.Info("failover committed: the other points released", "machine", dm.Name, "point", r.PointID, "released", r.Released)
	}
	if r.Committed {
		rep.Phase, rep.Released = control.FailoverPhaseCommitted, r.Released
	}
	return rep
}

// undoFailover stops the replica machine, the hydration and the export
// of an earlier failover of the same machine.
func (t *Target) undoFailover(ctx context.Context, st *failoverState, r *failoverRecord) error {
	if h := st.hyd[r.Machine]; h != nil {
		h.stop()
		delete(st.hyd, r.Machine)
	}
	if r.Handle != "" && t.o.Driver != nil {
		sctx, cancel := context.WithTimeout(ctx, testStopWait)
		err := t.o.Driver.Stop(sctx, driver.Handle(r.Handle), false)
		cancel()
		if err != nil && ctx.Err() == nil {
			fctx, cancel := context.WithTimeout(ctx, testStopWait)
			err = t.o.Driver.Stop(fctx, driver.Handle(r.Handle), true)
			cancel()
		}
		if err != nil && !errors.Is(err, driver.ErrNotFound) {
			return fmt.Errorf("stop the replica machine %s of the earlier failover: %w", r.Handle, err)
		}
	}
	if r.Export != "" {
		if err := t.Unexport(ctx, r.Export); err != nil && !errors.Is(err, ErrNoExport) && !errors.Is(err, ErrExportsOff) {
			return fmt.Errorf("unexport the earlier failover's export: %w", err)
		}
	}
	if err := os.RemoveAll(t.hydratedDir(r.Machine)); err != nil {
		t.log.Warn("remove the earlier failover's hydrated images", "machine", r.MachineName, "err", err)
	}
	if err := os.Remove(filepath.Join(t.failoversDir(), r.Machine+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.log.Warn("remove the failover record", "machine", r.MachineName, "err", err)
	}
	delete(st.records, r.Machine)
	t.log.Info("earlier failover undone: failing over again", "machine", r.MachineName, "export", r.Export, "handle", r.Handle)
	return nil
}

// sendFailoverReport reports when the report differs from the last one
// sent, as sendTestReport does.
func (t *Target) sendFailoverReport(ctx context.Context, st *failoverState, r api.RecoveryReport) {
	if last, ok := st.sent[r.Machine]; ok && reflect.DeepEqual(last, r) {
		return
	}
	err := st.report(ctx, r)
	var ce *client.Error
	switch {
	case err == nil:
		st.sent[r.Machine] = r
	case errors.As(err, &ce) && (ce.Status == http.StatusConflict || ce.Status == http.StatusNotFound):
		t.log.Warn("the configuration server refused a failover report", "machine", r.Machine, "failover", r.FailoverID, "err", err)
		st.sent[r.Machine] = r
	default:
		t.log.Warn("report a failover", "machine", r.Machine, "err", err)
	}
}
