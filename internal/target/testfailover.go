package target

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/standby-dr/standby/internal/manage"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/fsutil"
)

// Test failovers of a managed master target (docs/control-plane.md): the
// configuration server's desired state says, per machine, which test
// failover to run (a point selector and a replica machine) or to remove.
// The target reconciles: it exports the point as "test-<machine name>",
// tags the point "tested" and starts the replica machine through its
// machine driver with the export's disks, on an isolated network; on
// removal it stops the machine (forced after testStopWait) and unexports
// (the overlay goes). It reports each change through ReportRecovery.
//
// What it made is recorded in <data dir>/tests/<machine id>.json, so a
// restarted target finds the export and the machine handle to clean up.

// testLook is how often the desired state is asked for when it does not
// change (and so how often a replica machine's state is looked at).
const testLook = 5 * time.Second

// testStopWait is how long a clean stop of a replica machine may take
// before it is forced. A variable only so that tests can shorten it.
var testStopWait = 2 * time.Minute

// TestedTag is the tag a point gets when a test failover used it.
const TestedTag = "tested"

// testRecord is what the target made for one machine's test failover.
type testRecord struct {
	Test        string `json:"test"` // the DesiredTest's ID
	Machine     string `json:"machine"`
	MachineName string `json:"machine_name"`
	Export      string `json:"export,omitempty"`
	Handle      string `json:"handle,omitempty"`
	// Failed holds the error of a start that could not be done: it is
	// not tried again until the operator cleans up.
	Failed string `json:"failed,omitempty"`
}

// testState is the reconciler's memory: records and the last report sent
// per machine.
type testState struct {
	records map[string]*testRecord // machine id ->
	sent    map[string]api.RecoveryReport
	// report sends a report to the configuration server
	// (client.Component.Recovery; tests record them).
	report func(context.Context, api.RecoveryReport) error
}

func (t *Target) testsDir() string { return filepath.Join(t.o.DataDir, "tests") }

// loadTestRecords reads the records a previous run left.
func (t *Target) loadTestRecords() map[string]*testRecord {
	return loadRecords(t, t.testsDir(), "test failover", func(r *testRecord) string { return r.Machine })
}

func (t *Target) saveTestRecord(r *testRecord) error { return saveRecord(t.testsDir(), r.Machine, r) }

// loadRecords reads the JSON records of dir (one per machine, named
// <machine id>.json), by machine id (key); an unreadable one, or one
// without a machine, is logged and ignored.
func loadRecords[R any](t *Target, dir, what string, key func(*R) string) map[string]*R {
	out := map[string]*R{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		r := new(R)
		if err == nil {
			err = json.Unmarshal(b, r)
		}
		if err != nil || key(r) == "" {
			t.log.Warn(what+" record unreadable; ignored", "file", e.Name(), "err", err)
			continue
		}
		out[key(r)] = r
	}
	return out
}

// saveRecord keeps record r of machine in dir, atomically.
func saveRecord(dir, machine string, r any) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	return fsutil.WriteAtomic(filepath.Join(dir, machine+".json"), b, nil)
}

// testLoop follows the desired state and reconciles test failovers until
// the target closes. Until the first desired state arrives nothing is
// done: the records on disk stay as they are.
func (t *Target) testLoop(ctx context.Context) {
	st := &testState{records: t.loadTestRecords(), sent: map[string]api.RecoveryReport{}, report: t.mgd.comp.Recovery}
	fst := newFailoverState(t, t.mgd.comp.Recovery) // failovers follow the same desired state (failover.go)
	rst := newReverseState(t.mgd.comp.Recovery)     // and reverse directions (reverse.go)
	defer func() {
		for _, s := range rst.ships {
			t.stopShip(rst, s)
		}
	}()
	out := manage.Outage{Log: t.log, What: "desired state from the configuration server"}
	have := ""
	var cur *api.Desired
	for {
		look := testLook
		if len(rst.ships) > 0 {
			look = time.Second // the reverse agent's progress is reported this often
		}
		d, err := t.mgd.comp.Desired(ctx, have, look)
		if ctx.Err() != nil {
			return
		}
		out.Note(err)
		if err == nil {
			cur, have = &d, d.Version
			t.actions.Run(ctx, d.Actions) // a recovery plan's scripts (manage/actions.go)
		}
		if cur != nil {
			t.reconcileFailovers(ctx, fst, *cur)
			t.reconcileTests(ctx, st, *cur)
			t.reconcileReverse(ctx, rst, fst, *cur)
		}
		if err != nil && !manage.Sleep(ctx, testLook) {
			return
		}
	}
}

// reconcileTests makes the test failovers what d says.
func (t *Target) reconcileTests(ctx context.Context, st *testState, d api.Desired) {
	wanted := map[string]bool{}
	for _, dm := range d.Machines {
		if dm.Test == nil {
			continue
		}
		wanted[dm.ID] = true
		var rep control.TestReport
		if dm.Test.Remove {
			rep = t.removeTest(ctx, st, dm.ID, dm.Name, dm.Test.ID)
		} else {
			rep = t.ensureTest(ctx, st, dm, *dm.Test)
		}
		if ctx.Err() != nil {
			return
		}
		t.sendTestReport(ctx, st, api.RecoveryReport{Machine: dm.ID, TestID: dm.Test.ID, Test: rep})
	}
	// What the server no longer mentions (the machine moved away, or its
	// flag went back to none) is removed without a report.
	for id, r := range st.records {
		if !wanted[id] {
			t.removeTest(ctx, st, id, r.MachineName, r.Test)
			delete(st.sent, id)
		}
	}
}

// testExportName is the deterministic export name of a machine's test
// failover.
func testExportName(machineName, machineID string) string {
	n := "test-" + machineName
	if !exportNameRE.MatchString(n) {
		n = "test-" + strings.ReplaceAll(machineID, "-", "")[:12]
	}
	return n
}

// ensureTest exports the point and starts the replica machine, or
// reports what is there already.
func (t *Target) ensureTest(ctx context.Context, st *testState, dm api.DesiredMachine, want api.DesiredTest) control.TestReport {
	r := st.records[dm.ID]
	if r != nil && r.Test != want.ID {
		// An earlier test failover the server forgot: away with it first.
		// If it cannot be removed (its machine will not stop), the new one
		// does not start: its export would be the old one's, at the old
		// point, and the old machine would be lost from the record.
		if old := t.removeTest(ctx, st, dm.ID, r.MachineName, r.Test); old.Phase == control.TestPhaseFailed {
			return control.TestReport{Phase: control.TestPhaseFailed,
				Error: fmt.Sprintf("an earlier test failover (%s) of this machine could not be removed: %s", r.Test, old.Error)}
		}
		r = nil
	}
	if r == nil {
		r = &testRecord{Test: want.ID, Machine: dm.ID, MachineName: dm.Name}
		st.records[dm.ID] = r
	}
	failed := func(rep control.TestReport, err error) control.TestReport {
		r.Failed = err.Error()
		if serr := t.saveTestRecord(r); serr != nil {
			t.log.Warn("keep the test failover record", "machine", dm.Name, "err", serr)
		}
		t.log.Warn("test failover failed; clean it up to try again", "machine", dm.Name, "test", want.ID, "err", err)
		rep.Phase, rep.Error = control.TestPhaseFailed, r.Failed
		return rep
	}
	var rep control.TestReport
	if r.Failed != "" {
		rep.Phase, rep.Error, rep.Export, rep.Machine = control.TestPhaseFailed, r.Failed, r.Export, r.Handle
		return rep
	}
	// The export: made once, found again after a restart.
	name := testExportName(dm.Name, dm.ID)
	x, err := t.ExportByName(name)
	if err != nil && r.Export != "" {
		// Made, then unexported by hand: exporting again could choose
		// another point under the running machine.
		return failed(rep, fmt.Errorf("export %s is gone (unexported by hand?); clean the test failover up", r.Export))
	}
	if err != nil {
		x, err = t.Export(ctx, ExportRequest{Machine: dm.ID, Point: want.Point, Name: name})
		if err != nil {
			return failed(rep, err)
		}
	}
	r.Export = x.Name
	if err := t.saveTestRecord(r); err != nil {
		return failed(rep, fmt.Errorf("record the test failover: %w", err))
	}
	rep.PointID, rep.PointTime, rep.Export = x.Point.ID, x.Point.Time, x.Name
	if rp, _, ok := t.Lookup(dm.ID); ok {
		if err := rp.Tag(x.Point.ID, TestedTag); err != nil {
			t.log.Warn("tag the tested point", "machine", dm.Name, "point", x.Point.ID, "err", err)
		}
	}
	m := driver.Machine{Name: want.Replica.Name, CPUs: want.Replica.CPUs, MemoryMiB: want.Replica.MemoryMiB,
		Network: driver.Network{Isolated: true}}
	for _, d := range x.Disks {
		uri := d.UnixURI // the replica runs beside the target: the socket needs no network
		if uri == "" {
			uri = d.URI
		}
		m.Disks = append(m.Disks, driver.Disk{Name: d.Name, URI: uri})
		rep.Disks = append(rep.Disks, uri)
	}
	if t.o.Driver == nil {
		return failed(rep, errors.New("this master target has no machine driver: add a driver: section to its configuration (docs/drivers.md)"))
	}
	if r.Handle != "" {
		// Started already: report its state as it is (a guest that shut
		// itself down is stopped, not started again).
		rep.Phase, rep.Machine = control.TestPhaseRunning, r.Handle
		s, err := t.o.Driver.Status(ctx, driver.Handle(r.Handle))
		if err != nil {
			rep.MachineState, rep.Error = string(driver.Unknown), err.Error()
			return rep
		}
		rep.MachineState = string(s.State)
		return rep
	}
	h, err := t.o.Driver.Start(ctx, m)
	if err != nil {
		return failed(rep, fmt.Errorf("start replica machine %s: %w", m.Name, err))
	}
	r.Handle = string(h)
	if err := t.saveTestRecord(r); err != nil {
		t.log.Warn("keep the test failover record", "machine", dm.Name, "err", err)
	}
	t.log.Info("test failover: replica machine started", "machine", dm.Name, "replica", m.Name, "handle", h, "export", x.Name, "point", x.Point.ID)
	rep.Phase, rep.Machine, rep.MachineState = control.TestPhaseRunning, r.Handle, string(driver.Running)
	if s, err := t.o.Driver.Status(ctx, h); err == nil {
		rep.MachineState = string(s.State)
	}
	return rep
}

// removeTest stops the replica machine (forced after testStopWait) and
// unexports; it reports removed, or what is left with the error.
func (t *Target) removeTest(ctx context.Context, st *testState, id, name, test string) control.TestReport {
	r := st.records[id]
	if r == nil {
		// Nothing recorded (a start that never got here, or a lost
		// record): look for the export by its name all the same.
		r = &testRecord{Test: test, Machine: id, MachineName: name, Export: testExportName(name, id)}
	}
	rep := control.TestReport{Phase: control.TestPhaseRemoved, Export: r.Export, Machine: r.Handle}
	var errs []error
	if r.Handle != "" && t.o.Driver != nil {
		sctx, cancel := context.WithTimeout(ctx, testStopWait)
		err := t.o.Driver.Stop(sctx, driver.Handle(r.Handle), false)
		cancel()
		if err != nil && ctx.Err() == nil {
			t.log.Warn("replica machine did not stop cleanly; forcing it", "machine", name, "handle", r.Handle, "err", err)
			fctx, cancel := context.WithTimeout(ctx, time.Minute)
			err = t.o.Driver.Stop(fctx, driver.Handle(r.Handle), true)
			cancel()
		}
		if err != nil && !errors.Is(err, driver.ErrNotFound) {
			errs = append(errs, fmt.Errorf("stop replica machine %s: %w", r.Handle, err))
		} else {
			rep.MachineState = string(driver.Stopped)
		}
	}
	if r.Export != "" && len(errs) == 0 {
		if err := t.Unexport(ctx, r.Export); err != nil && !errors.Is(err, ErrNoExport) && !errors.Is(err, ErrExportsOff) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		st.records[id] = r
		rep.Phase, rep.Error = control.TestPhaseFailed, err.Error()
		return rep
	}
	if err := os.Remove(filepath.Join(t.testsDir(), id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.log.Warn("remove the test failover record", "machine", name, "err", err)
	}
	if st.records[id] != nil {
		t.log.Info("test failover removed", "machine", name, "export", r.Export, "handle", r.Handle)
	}
	delete(st.records, id)
	return rep
}

// sendTestReport reports when the report differs from the last one sent
// for the machine. A refusal (the test failover is not the server's
// current one) is logged once and not sent again; other failures are
// tried again at the next look.
func (t *Target) sendTestReport(ctx context.Context, st *testState, r api.RecoveryReport) {
	if last, ok := st.sent[r.Machine]; ok && reflect.DeepEqual(last, r) {
		return
	}
	err := st.report(ctx, r)
	var ce *client.Error
	switch {
	case err == nil:
		st.sent[r.Machine] = r
	case errors.As(err, &ce) && (ce.Status == http.StatusConflict || ce.Status == http.StatusNotFound):
		t.log.Warn("the configuration server refused a test failover report", "machine", r.Machine, "test", r.TestID, "err", err)
		st.sent[r.Machine] = r
	default:
		t.log.Warn("report a test failover", "machine", r.Machine, "err", err)
	}
}
