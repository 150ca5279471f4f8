package target

import (
	"context"
	"encoding/json"
	"github.com/standby-dr/standby/internal/server/servertest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/execdriver"
)

// Unit tests of the reconciler of test failovers and failovers
// (testfailover.go, failover.go): desired states are handed to
// reconcileTests and reconcileFailovers directly, with a real replica,
// real exports and the exec driver running reconcileVM.

// reconcileVM plays a hypervisor: a machine is a sleep process. Every
// command appends a line to STATE/log, so a test sees what was done in
// which order. A file STATE/stuck makes a clean stop hang (a guest that
// ignores the shutdown request); a forced stop kills.
const reconcileVM = `#!/bin/sh
set -eu
cmd=$1; shift
case $cmd in
start)
  echo "start $STANDBY_MACHINE $*" >> "$STATE/log"
  sleep 600 >/dev/null 2>&1 </dev/null &
  echo $! > "$STATE/$STANDBY_MACHINE.pid"
  echo $! >> "$STATE/pids"
  echo "$STANDBY_MACHINE"
  ;;
stop)
  echo "stop $1 $STANDBY_FORCE" >> "$STATE/log"
  if [ -f "$STATE/unstoppable" ]; then exit 1; fi
  if [ "$STANDBY_FORCE" != 1 ] && [ -f "$STATE/stuck" ]; then sleep 60; fi
  [ -f "$STATE/$1.pid" ] || exit 0
  kill -s KILL "$(cat "$STATE/$1.pid")" 2>/dev/null || true
  rm -f "$STATE/$1.pid"
  ;;
status)
  if [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; then
    echo "running pid $(cat "$STATE/$1.pid")"; exit 0
  fi
  exit 3
  ;;
esac
`

// reconcileTarget is an export target of web01 with two points and the
// exec driver, and the reports the reconciler sent.
type reconcileTarget struct {
	*exportTarget
	state   string // the script's STATE
	pts     []uint64
	reports []api.RecoveryReport
}

func newReconcileTarget(t *testing.T, diskSize int64) *reconcileTarget {
	t.Helper()
	state := t.TempDir()
	script := filepath.Join(state, "vm")
	if err := os.WriteFile(script, []byte(reconcileVM), 0o755); err != nil {
		t.Fatal(err)
	}
	drv, err := execdriver.New(execdriver.Options{
		Start: []string{script, "start"}, Stop: []string{script, "stop"}, Status: []string{script, "status"},
		Env: []string{"STATE=" + state}, Timeout: driver.Duration(20 * time.Second),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// No sleep outlives the test, whatever it found.
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(state, "pids"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	src := newSource(t, 1<<20) // writes land in the first MiB
	et := newExportTarget(t, diskSize)
	et.o.Driver = drv // for the restarts
	et.Target.o.Driver = drv
	r := &reconcileTarget{exportTarget: et, state: state}
	for range 2 {
		seg, _ := src.segment(10, true)
		et.apply(t, seg)
	}
	for _, p := range et.rep.Points() {
		r.pts = append(r.pts, p.ID)
	}
	if len(r.pts) != 2 {
		t.Fatalf("%d points, want 2", len(r.pts))
	}
	return r
}

func (r *reconcileTarget) report(_ context.Context, rep api.RecoveryReport) error {
	r.reports = append(r.reports, rep)
	return nil
}

// testState is what testLoop starts with: the records on disk.
func (r *reconcileTarget) testState() *testState {
	return &testState{records: r.loadTestRecords(), sent: map[string]api.RecoveryReport{}, report: r.report}
}

// lastTest is the last test failover report sent.
func (r *reconcileTarget) lastTest(t *testing.T) control.TestReport {
	t.Helper()
	if len(r.reports) == 0 {
		t.Fatal("no report sent")
	}
	return r.reports[len(r.reports)-1].Test
}

// scriptLog is the script's log, a line a command.
func (r *reconcileTarget) scriptLog(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.state, "log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// pid is the replica machine's process, from the file its start wrote.
func (r *reconcileTarget) pid(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.state, name+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// alive says whether pid runs (a zombie no init reaped does not).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	servertest.WaitFor(t, "the replica machine's process to end", 5*time.Second, func() bool { return !alive(pid) })
}

func desiredTest(test *api.DesiredTest) api.Desired {
	return api.Desired{Version: "v", Machines: []api.DesiredMachine{{ID: exportMachine, Name: "web01", Epoch: 1, Test: test}}}
}

var runTest = &api.DesiredTest{ID: "test-1", Point: "latest", Replica: control.ReplicaSpec{Name: "web01-test"}}

// startTest runs runTest and checks what it made: the export, the
// machine and the record.
func (r *reconcileTarget) startTest(t *testing.T) int {
	t.Helper()
	r.reconcileTests(t.Context(), r.testState(), desiredTest(runTest))
	rep := r.lastTest(t)
	if rep.Phase != control.TestPhaseRunning || rep.Export != "test-web01" || rep.Machine != "web01-test" ||
		rep.MachineState != string(driver.Running) || rep.PointID != r.pts[1] || len(rep.Disks) != 1 || rep.Error != "" {
		t.Fatalf("report after the start: %+v", rep)
	}
	if _, err := r.ExportByName("test-web01"); err != nil {
		t.Fatal(err)
	}
	var rec testRecord
	b, err := os.ReadFile(filepath.Join(r.o.DataDir, "tests", exportMachine+".json"))
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil || rec.Test != runTest.ID || rec.Export != "test-web01" || rec.Handle != "web01-test" {
		t.Fatalf("record %+v: %v", rec, err)
	}
	for _, p := range r.rep.Points() {
		if p.ID == r.pts[1] && !slices.Contains(p.Tags, TestedTag) {
			t.Fatalf("the tested point has tags %v", p.Tags)
		}
	}
	pid := r.pid(t, "web01-test")
	if !alive(pid) {
		t.Fatal("the replica machine does not run")
	}
	return pid
}

// checkTestGone checks that a test failover left nothing: machine,
// export, overlay, record.
func (r *reconcileTarget) checkTestGone(t *testing.T, pid int) {
	t.Helper()
	waitDead(t, pid)
	if xs := r.Exports(); len(xs) != 0 {
		t.Fatalf("exports left: %+v", xs)
	}
	if ents, _ := os.ReadDir(filepath.Join(r.o.DataDir, "exports")); len(ents) != 0 {
		t.Fatalf("overlays left: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(r.o.DataDir, "tests", exportMachine+".json")); !os.IsNotExist(err) {
		t.Fatalf("the record is left: %v", err)
	}
	for _, p := range r.rep.Points() {
		if p.InUse {
			t.Fatalf("point %d still in use", p.ID)
		}
	}
}

// A test failover runs, the target restarts: the record on disk lets
// the new target remove it when the desired state asks.
func TestReconcileTestRemovedAfterRestart(t *testing.T) {
	r := newReconcileTarget(t, 1<<20)
	pid := r.startTest(t)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	if !alive(pid) {
		t.Fatal("the replica machine ended with the target")
	}
	st := r.testState()
	if st.records[exportMachine] == nil {
		t.Fatalf("records after the restart: %+v", st.records)
	}
	// The same desired state again: nothing started twice.
	r.reconcileTests(t.Context(), st, desiredTest(runTest))
	if rep := r.lastTest(t); rep.Phase != control.TestPhaseRunning || rep.Machine != "web01-test" {
		t.Fatalf("report after the restart: %+v", rep)
	}
	if n := strings.Count(strings.Join(r.scriptLog(t), "\n"), "start "); n != 1 {
		t.Fatalf("%d starts: %q", n, r.scriptLog(t))
	}

	remove := *runTest
	remove.Remove = true
	r.reconcileTests(t.Context(), st, desiredTest(&remove))
	rep := r.lastTest(t)
	if rep.Phase != control.TestPhaseRemoved || rep.MachineState != string(driver.Stopped) || rep.Error != "" {
		t.Fatalf("report after the removal: %+v", rep)
	}
	if last := r.reports[len(r.reports)-1]; last.Machine != exportMachine || last.TestID != runTest.ID {
		t.Fatalf("the removal reported as %+v", last)
	}
	r.checkTestGone(t, pid)
	if log := r.scriptLog(t); !slices.Contains(log, "stop web01-test 0") {
		t.Fatalf("script log %q: no clean stop", log)
	}
	if len(st.records) != 0 {
		t.Fatalf("records left in memory: %+v", st.records)
	}
}

// A record the desired state no longer mentions when the target starts
// (the machine moved away, or its test flag went back to none) is
// cleaned up without a report.
func TestReconcileOrphanedTest(t *testing.T) {
	r := newReconcileTarget(t, 1<<20)
	pid := r.startTest(t)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r.start(t)
	r.reports = nil
	st := r.testState()
	r.reconcileTests(t.Context(), st, api.Desired{Version: "v2", Machines: []api.DesiredMachine{{ID: exportMachine, Name: "web01", Epoch: 1}}})
	r.checkTestGone(t, pid)
	if len(r.reports) != 0 {
		t.Fatalf("reports about an orphan: %+v", r.reports)
	}
	if len(st.records) != 0 {
		t.Fatalf("records left in memory: %+v", st.records)
	}
}

// A replica machine that does not stop when asked is stopped with force
// after testStopWait, and the test failover is removed all the same.
func TestReconcileTestForcedStop(t *testing.T) {
	defer func(d time.Duration) { testStopWait = d }(testStopWait)
	testStopWait = 300 * time.Millisecond
	r := newReconcileTarget(t, 1<<20)
	pid := r.startTest(t)
	if err := os.WriteFile(filepath.Join(r.state, "stuck"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	remove := *runTest
	remove.Remove = true
	began := time.Now()
	r.reconcileTests(t.Context(), r.testState(), desiredTest(&remove))
	took := time.Since(began)
	rep := r.lastTest(t)
	if rep.Phase != control.TestPhaseRemoved || rep.MachineState != string(driver.Stopped) {
		t.Fatalf("report after the removal: %+v", rep)
	}
	if took < testStopWait || took > 5*time.Second {
		t.Fatalf("the removal took %v with a stop wait of %v", took, testStopWait)
	}
	log := r.scriptLog(t)
	i, j := slices.Index(log, "stop web01-test 0"), slices.Index(log, "stop web01-test 1")
	if i < 0 || j < i {
		t.Fatalf("script log %q: want a clean stop, then a forced one", log)
	}
	r.checkTestGone(t, pid)
}

// Failing over again to another point before commit: the first replica
// machine is stopped and its export removed before the second starts,
// and the first hydration is cancelled. The disk is large (sparse) so
// that the first hydration cannot have finished.
func TestReconcileFailoverAgain(t *testing.T) {
	r := newReconcileTarget(t, 8<<30)
	fst := newFailoverState(r.Target, r.report)
	desired := func(f api.DesiredFailover) api.Desired {
		return api.Desired{Version: f.ID, Machines: []api.DesiredMachine{{ID: exportMachine, Name: "web01", Epoch: 1, Failover: &f}}}
	}
	last := func() control.FailoverReport {
		t.Helper()
		if len(r.reports) == 0 || r.reports[len(r.reports)-1].Failover == nil {
			t.Fatalf("no failover report: %+v", r.reports)
		}
		return *r.reports[len(r.reports)-1].Failover
	}

	first := api.DesiredFailover{ID: "fo-1", Point: strconv.FormatUint(r.pts[0], 10), Epoch: 2, Replica: control.ReplicaSpec{Name: "web01-fo1"}}
	r.reconcileFailovers(t.Context(), fst, desired(first))
	rep := last()
	if rep.Phase != control.FailoverPhaseRunning || rep.Fenced != 2 || rep.PointID != r.pts[0] || rep.Export != "failover-web01" ||
		rep.Machine != "web01-fo1" || rep.MachineState != string(driver.Running) || rep.Error != "" {
		t.Fatalf("report of the first failover: %+v", rep)
	}
	h1 := fst.hyd[exportMachine]
	if h1 == nil {
		t.Fatal("no hydration of the first failover")
	}
	pid1 := r.pid(t, "web01-fo1")

	second := api.DesiredFailover{ID: "fo-2", Point: strconv.FormatUint(r.pts[1], 10), Epoch: 3, Replica: control.ReplicaSpec{Name: "web01-fo2"}}
	r.reconcileFailovers(t.Context(), fst, desired(second))
	rep = last()
	if rep.Phase != control.FailoverPhaseRunning || rep.Fenced != 3 || rep.PointID != r.pts[1] || rep.Export != "failover-web01" ||
		rep.Machine != "web01-fo2" || rep.Error != "" {
		t.Fatalf("report of the second failover: %+v", rep)
	}
	if r.reports[len(r.reports)-1].FailoverID != "fo-2" {
		t.Fatalf("reported as %+v", r.reports[len(r.reports)-1])
	}

	// The first machine stopped before the second started.
	log := r.scriptLog(t)
	start1, stop1, start2 := -1, -1, -1
	for i, l := range log {
		switch {
		case strings.HasPrefix(l, "start web01-fo1 "):
			start1 = i
		case l == "stop web01-fo1 0":
			stop1 = i
		case strings.HasPrefix(l, "start web01-fo2 "):
			start2 = i
		}
	}
	if start1 < 0 || stop1 < start1 || start2 < stop1 {
		t.Fatalf("script log %q: want the first started, stopped, then the second started", log)
	}
	waitDead(t, pid1)
	if !alive(r.pid(t, "web01-fo2")) {
		t.Fatal("the second replica machine does not run")
	}

	// The first export went: the name now serves the second point, and
	// the first point is no longer held.
	xs := r.Exports()
	if len(xs) != 1 || xs[0].Name != "failover-web01" || xs[0].Point.ID != r.pts[1] {
		t.Fatalf("exports after failing over again: %+v", xs)
	}
	for _, p := range r.rep.Points() {
		if p.ID == r.pts[0] && p.InUse {
			t.Fatal("the first failover's point is still in use")
		}
	}

	// The first hydration was cancelled, not completed; a new one runs
	// on the second export.
	select {
	case <-h1.done:
	default:
		t.Fatal("the first hydration still runs")
	}
	if s := h1.status(); s.Complete || !strings.Contains(s.Error, "context canceled") {
		t.Fatalf("first hydration: %+v, want cancelled", s)
	}
	if h2 := fst.hyd[exportMachine]; h2 == nil || h2 == h1 || h2.export != "failover-web01" {
		t.Fatalf("hydration after failing over again: %+v", h2)
	}

	// The record is the second failover's.
	var rec failoverRecord
	b, err := os.ReadFile(filepath.Join(r.o.DataDir, "failovers", exportMachine+".json"))
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil || rec.Failover != "fo-2" || rec.Handle != "web01-fo2" || rec.PointID != r.pts[1] || rec.Fenced != 3 {
		t.Fatalf("record %+v: %v", rec, err)
	}
}

// A new test failover while an earlier one cannot be removed (its machine
// will not stop, even forced) does not start: it is reported failed, and
// the earlier one keeps its record and export; once the machine stops,
// the new one starts.
func TestReconcileNewTestWhileOldCannotGo(t *testing.T) {
	defer func(d time.Duration) { testStopWait = d }(testStopWait)
	testStopWait = 200 * time.Millisecond
	r := newReconcileTarget(t, 1<<20)
	pid := r.startTest(t)
	if err := os.WriteFile(filepath.Join(r.state, "unstoppable"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	second := *runTest
	second.ID = "test-2"
	st := r.testState()
	r.reconcileTests(t.Context(), st, desiredTest(&second))
	rep := r.lastTest(t)
	if rep.Phase != control.TestPhaseFailed || !strings.Contains(rep.Error, "could not be removed") {
		t.Fatalf("report: %+v, want failed because the earlier test failover could not be removed", rep)
	}
	if rec := st.records[exportMachine]; rec == nil || rec.Test != runTest.ID || rec.Handle != "web01-test" {
		t.Fatalf("record after the refusal: %+v, want the earlier test failover's", rec)
	}
	if _, err := r.ExportByName("test-web01"); err != nil {
		t.Fatalf("the earlier export is gone: %v", err)
	}
	if !alive(pid) {
		t.Fatal("the earlier replica machine died")
	}
	os.Remove(filepath.Join(r.state, "unstoppable"))
	r.reconcileTests(t.Context(), st, desiredTest(&second))
	if rep := r.lastTest(t); rep.Phase != control.TestPhaseRunning || rep.Error != "" {
		t.Fatalf("once the machine stops, the new test failover should run: %+v", rep)
	}
	if rec := st.records[exportMachine]; rec == nil || rec.Test != "test-2" {
		t.Fatalf("record: %+v, want test-2", rec)
	}
}
