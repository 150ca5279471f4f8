package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/nbd"
)

// A planned failover through the CLI, every role a separate process: the
// source machine (a process the exec driver stops) writes markers through
// the agent without pause, each flushed before the next; `machines
// planned-failover --wait` has the agent stop the source through its
// driver, refuse writes, bookmark and drain, then fails over to that
// bookmark's point. Zero data loss: every marker whose flush the agent
// acknowledged is in what the replica machine read, and the writer's
// next write was refused, not lost.
func TestPlannedFailoverThroughTheCLI(t *testing.T) {
	needNBDTools(t)
	vmDir, srcDir := t.TempDir(), t.TempDir()
	script := filepath.Join(vmDir, "vm")
	writeFile(t, script, vmScript)
	os.Chmod(script, 0o755)
	// The source machine: a process the driver's status sees running and
	// its stop kills.
	src := exec.Command("sleep", "600")
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Process.Kill(); src.Wait() })
	go src.Wait()
	writeFile(t, filepath.Join(srcDir, "web01-src.pid"), strconv.Itoa(src.Process.Pid))
	sock := filepath.Join(t.TempDir(), "exports.sock")
	driverSection := func(state string) string {
		return fmt.Sprintf(`  name: exec
  settings:
    start: [%s, start]
    stop: [%s, stop]
    status: [%s, status]
    env: [STATE=%s]
    timeout: 1m
`, script, script, script, state)
	}
	md := startManagedWith(t, fmt.Sprintf("exports:\n  unix: %s\ndriver:\n%s", sock, driverSection(vmDir)),
		fmt.Sprintf("source:\n  handle: web01-src\n  driver:\n%s", "  "+strings.ReplaceAll(strings.TrimSuffix(driverSection(srcDir), "\n"), "\n", "\n  ")+"\n"))
	srv := md.srv
	srv.cli("groups", "create", "web", "--policy", `{"point_interval": "1s", "rpo_threshold": "30s"}`)
	if out, err := srv.cliErr("machines", "planned-failover", "web01"); err == nil || !strings.Contains(out+err.Error(), `event "planned-failover" is not allowed in state unprotected`) {
		t.Fatalf("planned failover of an unprotected machine: %v\n%s", err, out)
	}
	if out, err := srv.cliErr("machines", "protect", "web01", "--group", "web", "--wait"); err != nil {
		t.Fatalf("machines protect --wait: %v\n%s", err, out)
	}

	// The source machine's workload: markers, each flushed, until a
	// write is refused.
	c, err := nbd.Dial(t.Context(), "unix", md.agentSock, "vda", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	var refused atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		for i := 0; markerAt(i) < 32<<20; i++ {
			_, err := c.WriteAt(marker(i), markerAt(i))
			if err == nil {
				err = c.Flush()
			}
			if err != nil {
				refused.Store(err)
				return
			}
			acked.Store(int64(i + 1))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	waitCLI(t, srv, "markers written", func() bool { return acked.Load() > 30 }, func() string { return "" })

	out, err := srv.cliErr("machines", "planned-failover", "web01", "--net", "bridge=br0", "--wait")
	if err != nil || !strings.Contains(out, "planned: source stopped, writes refused, journal drained to the final bookmark: no data lost. web01 failed over") || !strings.Contains(out, "web01 failed over") {
		t.Fatalf("machines planned-failover --wait: %v\n%s\n%s", err, out, srv.cli("machines", "show", "web01", "-o", "json"))
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the workload still writes after the planned failover")
	}
	n := int(acked.Load())
	werr, _ := refused.Load().(error)
	if werr == nil || !errors.Is(werr, syscall.EPERM) {
		t.Fatalf("the write after the stop: %v; want EPERM (refused)", werr)
	}
	var m control.Machine
	json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
	f := m.Failover
	if m.State != control.StateFailedOver || m.Epoch != 2 || f == nil || !f.Planned || f.Drain == nil || !f.Drain.Done ||
		!f.Drain.SourceStopped || f.Drain.Label != control.DrainLabel(f.ID) || f.Point != strconv.FormatUint(f.Report.PointID, 10) {
		t.Fatalf("machine after the planned failover: %s epoch %d %+v drain %+v", m.State, m.Epoch, f, f.Drain)
	}
	if stops, _ := os.ReadFile(filepath.Join(srcDir, "web01-src.stops")); !strings.Contains(string(stops), "stopped") {
		t.Fatal("the source machine was not stopped through its driver")
	}
	// The failed-over point is app-consistent (the source was shut down)
	// and labelled as the drain's final bookmark.
	var pts struct {
		Points []control.RecoveryPoint `json:"points"`
	}
	json.Unmarshal([]byte(srv.cli("machines", "points", "web01", "-o", "json")), &pts)
	found := false
	for _, p := range pts.Points {
		if p.ID == f.Report.PointID {
			found = p.AppConsistent && p.Label == f.Drain.Label
		}
	}
	if !found {
		t.Fatalf("point %d in the catalogue: %+v", f.Report.PointID, pts.Points)
	}

	// Zero data loss: every acknowledged marker is in what the replica
	// machine read at its start.
	img, err := os.ReadFile(filepath.Join(vmDir, "web01.img"))
	if err != nil || len(img) != 32<<20 {
		t.Fatalf("what the replica machine read: %d bytes, %v", len(img), err)
	}
	for i := 0; i < n; i++ {
		if !bytes.Equal(img[markerAt(i):markerAt(i)+int64(len(marker(i)))], marker(i)) {
			t.Fatalf("marker %d of %d acknowledged before the stop is missing from the failed-over point", i, n)
		}
	}
	t.Logf("all %d acknowledged markers are in point %d; the next write was refused: %v", n, f.Report.PointID, werr)

	// The agent goes on refusing writes while the machine runs at the
	// other site, and says why.
	var st struct {
		Control struct {
			Drain *control.DrainReport `json:"drain"`
		} `json:"control"`
	}
	if err := getJSON(t, "http://"+md.agentStatus+"/status", &st); err != nil {
		t.Fatal(err)
	}
	if st.Control.Drain == nil || !st.Control.Drain.WritesRefused || !st.Control.Drain.Done {
		t.Fatalf("agent status drain: %+v", st.Control.Drain)
	}
	c2, err := nbd.Dial(t.Context(), "unix", md.agentSock, "vda", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.WriteAt([]byte("late"), 0); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("a write to the old primary after the failover: %v; want EPERM", err)
	}
}
