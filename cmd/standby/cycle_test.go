package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/nbd"
)

// srcScript is the source machine's exec driver: a process that start
// makes, status sees and stop kills.
const srcScript = `#!/bin/sh
set -eu
cmd=$1; shift
case $cmd in
start)
  sleep 600 >/dev/null 2>&1 </dev/null &
  echo $! > "$STATE/$STANDBY_MACHINE.pid"
  echo started >> "$STATE/$STANDBY_MACHINE.starts"
  echo "$STANDBY_MACHINE"
  ;;
stop)
  [ -f "$STATE/$1.pid" ] || exit 0
  kill "$(cat "$STATE/$1.pid")" 2>/dev/null || true
  rm -f "$STATE/$1.pid"
  echo stopped >> "$STATE/$1.stops"
  ;;
status)
  if [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; then
    echo "running pid $(cat "$STATE/$1.pid")"; exit 0
  fi
  exit 3
  ;;
esac
`

// cycleMarker is marker i of phase p, in its own 4 KiB block.
func cycleMarker(p, i int) ([]byte, int64) {
	return []byte(fmt.Sprintf("CYCLE phase %d marker %04d", p, i)), int64(12<<20) + int64(p)*(2<<20) + int64(i)*4096
}

// writeMarkers writes n flushed markers of phase p through an NBD export.
func writeMarkers(t *testing.T, network, addr, export string, p, n int) {
	t.Helper()
	c, err := nbd.Dial(t.Context(), network, addr, export, nbd.ClientOptions{})
	if err != nil {
		t.Fatalf("connect to %s %s: %v", addr, export, err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		b, off := cycleMarker(p, i)
		if _, err := c.WriteAt(b, off); err != nil {
			t.Fatalf("phase %d marker %d: %v", p, i, err)
		}
		if err := c.Flush(); err != nil {
			t.Fatalf("phase %d marker %d flush: %v", p, i, err)
		}
	}
}

// hasMarkers says whether img holds the n markers of phase p.
func hasMarkers(img []byte, p, n int) bool {
	for i := 0; i < n; i++ {
		b, off := cycleMarker(p, i)
		if int64(len(img)) < off+int64(len(b)) || !bytes.Equal(img[off:off+int64(len(b))], b) {
			return false
		}
	}
	return true
}

// The whole recovery cycle through the CLI, every role a separate
// process, with the data checked at each step: protect → write → test
// failover (the test copy equals the point; its writes reach neither the
// replica nor the source) → cleanup → planned failover (every write
// acknowledged before the stop is there) → re-protect to a second master
// target at the primary site, in place over the old primary's disks
// (only what differs is sent) → writes at the secondary reach the
// primary's disks → failback (zero loss; the source machine started
// again) → protected in the original direction, and new writes at the
// primary reach the secondary again.
func TestRecoveryCycleThroughTheCLI(t *testing.T) {
	needNBDTools(t)
	vmDir, srcDir := t.TempDir(), t.TempDir()
	vm, src := filepath.Join(vmDir, "vm"), filepath.Join(srcDir, "src")
	writeFile(t, vm, vmScript)
	writeFile(t, src, srcScript)
	os.Chmod(vm, 0o755)
	os.Chmod(src, 0o755)
	sock := filepath.Join(t.TempDir(), "exports.sock")
	md := startManagedWith(t, fmt.Sprintf("exports:\n  unix: %s\ndriver:\n%s", sock, execDriverSection(vm, vmDir, "  ")),
		"source:\n  handle: web01-src\n  driver:\n"+execDriverSection(src, srcDir, "    "))
	srv := md.srv
	// The source machine runs.
	if out, err := runCmd(src, "start", srcDir, "web01-src"); err != nil {
		t.Fatalf("start the source machine: %v\n%s", err, out)
	}
	// The master target at the primary site, for the reverse direction.
	_, mt2Addr, mt2Status := md.startTarget("mt2", "")
	waitCLI(t, srv, "mt2 to heartbeat", func() bool { return strings.Contains(srv.cli("servers", "list"), mt2Addr) }, func() string { return srv.cli("servers", "list") })

	show := func() control.Machine {
		var m control.Machine
		json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
		return m
	}
	latest := func() uint64 {
		var b struct {
			Points []control.RecoveryPoint `json:"points"`
		}
		json.Unmarshal([]byte(srv.cli("machines", "points", "web01", "-o", "json")), &b)
		var id uint64
		for _, p := range b.Points {
			id = max(id, p.ID)
		}
		return id
	}
	step := func(what string, start time.Time) { t.Logf("%-40s %6.2f s", what, time.Since(start).Seconds()) }

	// 1. Protect, write.
	start := time.Now()
	srv.cli("groups", "create", "web", "--policy", `{"point_interval": "1s", "rpo_threshold": "30s"}`)
	if out, err := jobCLI(t, srv, "machines", "protect", "web01", "--group", "web", "--target", "mt1"); err != nil {
		t.Fatalf("machines protect --wait: %v\n%s", err, out)
	}
	step("protect", start)
	writeMarkers(t, "unix", md.agentSock, "vda", 1, 40)
	first := latest()
	waitCLI(t, srv, "a point after the first markers", func() bool {
		id := latest()
		return id > first && hasMarkers(pointBytes(t, md.tgtStatus, id, 0, 32<<20), 1, 40)
	}, func() string { return srv.cli("machines", "points", "web01") })

	// 2. Test failover: the copy equals the point; its own write (the
	// exec machine writes 0x5a at 4 MiB) reaches neither side.
	start = time.Now()
	out, err := jobCLI(t, srv, "machines", "test-failover", "web01", "--replica", "web01-test")
	if err != nil {
		t.Fatalf("machines test-failover --wait: %v\n%s", err, out)
	}
	step("test failover", start)
	m := show()
	tested := m.Test.Report.PointID
	copyImg, err := os.ReadFile(filepath.Join(vmDir, "web01-test.img"))
	if err != nil || !bytes.Equal(copyImg, pointBytes(t, md.tgtStatus, tested, 0, 32<<20)) || !hasMarkers(copyImg, 1, 40) {
		t.Fatalf("the test copy differs from point %d (%d bytes, %v)", tested, len(copyImg), err)
	}
	time.Sleep(1500 * time.Millisecond) // a point or two after the test copy's write
	ff := bytes.Repeat([]byte{0x5a}, 4096)
	if b := pointBytes(t, md.tgtStatus, latest(), 4<<20, 4096); bytes.Equal(b, ff) {
		t.Fatal("the test copy's write reached the replica")
	}
	if src := readAt(t, md.disk, 4<<20, 4096); bytes.Equal(src, ff) {
		t.Fatal("the test copy's write reached the source")
	}
	start = time.Now()
	if out, err := jobCLI(t, srv, "machines", "test-cleanup", "web01"); err != nil {
		t.Fatalf("machines test-cleanup --wait: %v\n%s", err, out)
	}
	step("test cleanup", start)

	// 3. Planned failover: every acknowledged write is there.
	writeMarkers(t, "unix", md.agentSock, "vda", 2, 40)
	start = time.Now()
	if out, err := jobCLI(t, srv, "machines", "planned-failover", "web01"); err != nil || !strings.Contains(out, "no data lost") {
		t.Fatalf("machines planned-failover --wait: %v\n%s", err, out)
	}
	step("planned failover", start)
	img, err := os.ReadFile(filepath.Join(vmDir, "web01.img"))
	if err != nil || !hasMarkers(img, 1, 40) || !hasMarkers(img, 2, 40) {
		t.Fatalf("the failed-over machine lacks acknowledged markers (%d bytes, %v)", len(img), err)
	}
	if stops, _ := os.ReadFile(filepath.Join(srcDir, "web01-src.stops")); !strings.Contains(string(stops), "stopped") {
		t.Fatal("the source machine was not stopped")
	}

	// 4. Re-protect to mt2, in place over the old primary's disk: only what
	// the replica machine wrote since differs.
	start = time.Now()
	out, err = jobCLI(t, srv, "machines", "reprotect", "web01", "--target", "mt2")
	if err != nil || !strings.Contains(out, "protected in reverse") {
		t.Fatalf("machines reprotect --wait: %v\n%s\n%s", err, out, srv.cli("machines", "show", "web01", "-o", "json"))
	}
	step("re-protect", start)
	m = show()
	if m.State != control.StateProtected || m.Reverse == nil || !m.Reverse.Report.Seeded {
		t.Fatalf("after re-protect: %s %+v", m.State, m.Reverse)
	}
	t.Logf("re-protect: %d bytes differed, %d bytes sent", m.Reverse.Report.ResyncBytes, m.Reverse.Report.SentBytes)
	if m.Reverse.Report.ResyncBytes > 1<<20 {
		t.Fatalf("re-protect found %d bytes differing; the replica machine wrote 4 KiB", m.Reverse.Report.ResyncBytes)
	}

	// 5. Writes at the secondary (through the failover export, as the
	// replica machine writes) reach the primary's disk.
	writeMarkers(t, "unix", sock, "failover-web01/vda", 3, 40)
	waitCLI(t, srv, "the secondary's writes in the primary's disk", func() bool {
		return hasMarkers(readAt(t, md.disk, 0, 32<<20), 3, 40)
	}, func() string { return srv.cli("machines", "show", "web01") })
	_ = mt2Status

	// 6. Failback: zero loss, the source machine starts again.
	writeMarkers(t, "unix", sock, "failover-web01/vda", 4, 40)
	start = time.Now()
	out, err = jobCLI(t, srv, "machines", "failback", "web01")
	if err != nil || !strings.Contains(out, "protected in the original direction again") {
		t.Fatalf("machines failback --wait: %v\n%s\n%s", err, out, srv.cli("machines", "show", "web01", "-o", "json"))
	}
	step("failback", start)
	if disk := readAt(t, md.disk, 0, 32<<20); !hasMarkers(disk, 4, 40) || !hasMarkers(disk, 3, 40) || !hasMarkers(disk, 1, 40) {
		t.Fatal("the primary's disk lacks writes acknowledged at the secondary before the failback")
	}
	if starts, _ := os.ReadFile(filepath.Join(srcDir, "web01-src.starts")); strings.Count(string(starts), "started") < 2 {
		t.Fatal("the source machine was not started again")
	}
	m = show()
	if m.State != control.StateProtected || m.Reverse != nil || m.Failover != nil {
		t.Fatalf("after failback: %s reverse %+v failover %+v", m.State, m.Reverse, m.Failover)
	}

	// 7. Protected in the original direction: new writes at the primary
	// reach mt1, on top of everything written at the secondary.
	writeMarkers(t, "unix", md.agentSock, "vda", 5, 40)
	waitCLI(t, srv, "the primary's new writes at mt1", func() bool {
		b := pointBytes(t, md.tgtStatus, latest(), 0, 32<<20)
		return hasMarkers(b, 5, 40) && hasMarkers(b, 4, 40) && hasMarkers(b, 3, 40)
	}, func() string { return srv.cli("machines", "show", "web01") })
}

// jobCLI runs a job command without --wait and follows the job for up
// to 2 minutes (a job that hangs fails the test with the roles' logs);
// it returns the job's `jobs show` text and an error when it failed.
func jobCLI(t *testing.T, srv *serverProc, args ...string) (string, error) {
	t.Helper()
	out, err := srv.cliErr(append(args, "-o", "json")...)
	if err != nil {
		return out, err
	}
	var r struct {
		Job control.Job `json:"job"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Job.ID == "" {
		t.Fatalf("standby %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var j control.Job
		json.Unmarshal([]byte(srv.cli("jobs", "show", r.Job.ID, "-o", "json")), &j)
		show := srv.cli("jobs", "show", r.Job.ID)
		switch j.State {
		case control.JobSucceeded:
			return show, nil
		case control.JobFailed, control.JobCancelled:
			return show, fmt.Errorf("job %s %s", j.ID, j.State)
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby %s: the job did not end:\n%s\n%s", strings.Join(args, " "), show, srv.cli("machines", "show", "web01", "-o", "json"))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// execDriverSection is a driver: section of the exec driver running
// script with STATE=state, each line indented by indent.
func execDriverSection(script, state, indent string) string {
	s := fmt.Sprintf("name: exec\nsettings:\n  start: [%s, start]\n  stop: [%s, stop]\n  status: [%s, status]\n  env: [STATE=%s]\n  timeout: 1m\n", script, script, script, state)
	return indent + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+indent) + "\n"
}

// writeScript writes an executable shell script and returns its path.
func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script")
	writeFile(t, p, "#!/bin/sh\n"+body)
	os.Chmod(p, 0o755)
	return p
}

// readAt reads n bytes at off of a file.
func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	k, _ := f.ReadAt(b, off)
	return b[:k]
}

// runCmd runs script cmd with STATE=state and its argument.
func runCmd(script, cmd, state, arg string) ([]byte, error) {
	c := exec.Command(script, cmd, arg)
	c.Env = append(os.Environ(), "STATE="+state, "STANDBY_MACHINE="+arg)
	return c.CombinedOutput()
}
