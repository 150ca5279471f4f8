package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/replica"
)

// markerAt is where sequence-numbered marker i is written: distinct
// 4 KiB blocks from 8 MiB on (the replica machine's own write is at 4 MiB).
func markerAt(i int) int64 { return 8<<20 + int64(i)*4096 }

func marker(i int) []byte { return []byte(fmt.Sprintf("FAILOVER-MARKER %06d", i)) }

// An unplanned failover through the CLI, with every role a separate
// process: markers are written through the agent without pause, the agent
// is killed (SIGKILL: the primary site is lost), `machines failover
// --wait` fences the replica, exports the latest point and starts the
// replica machine (exec driver, not isolated), which reads a prefix of
// the markers; hydration completes and its image equals the export; the
// old agent, restarted, is fenced and nothing of it is applied; commit
// leaves only the failed-over point in the catalogue.
func TestFailoverThroughTheCLI(t *testing.T) {
	needNBDTools(t)
	vmDir := t.TempDir()
	script := filepath.Join(vmDir, "vm")
	writeFile(t, script, vmScript)
	os.Chmod(script, 0o755)
	sock := filepath.Join(t.TempDir(), "exports.sock")
	md := startManaged(t, fmt.Sprintf(`exports:
  unix: %s
driver:
  name: exec
  settings:
    start: [%s, start]
    stop: [%s, stop]
    status: [%s, status]
    env: [STATE=%s]
    timeout: 1m
`, sock, script, script, script, vmDir))
	srv := md.srv
	srv.cli("groups", "create", "web", "--policy", `{"point_interval": "1s", "rpo_threshold": "30s"}`)
	if out, err := srv.cliErr("machines", "failover", "web01"); err == nil || !strings.Contains(out+err.Error(), `event "failover" is not allowed in state unprotected`) {
		t.Fatalf("failover of an unprotected machine: %v\n%s", err, out)
	}
	if out, err := srv.cliErr("machines", "protect", "web01", "--group", "web", "--wait"); err != nil {
		t.Fatalf("machines protect --wait: %v\n%s", err, out)
	}
	if out, err := srv.cliErr("machines", "commit", "web01"); err == nil || !strings.Contains(out+err.Error(), `event "commit" is not allowed in state protected`) {
		t.Fatalf("commit before a failover: %v\n%s", err, out)
	}

	// The workload: markers, each flushed, until the agent dies.
	c, err := nbd.Dial(t.Context(), "unix", md.agentSock, "vda", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.Close()
		for i := 0; markerAt(i) < 32<<20; i++ {
			if _, err := c.WriteAt(marker(i), markerAt(i)); err != nil {
				return
			}
			if err := c.Flush(); err != nil {
				return
			}
			written.Store(int64(i + 1))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	points := func() []control.RecoveryPoint {
		var b struct {
			Points []control.RecoveryPoint `json:"points"`
		}
		json.Unmarshal([]byte(srv.cli("machines", "points", "web01", "-o", "json")), &b)
		return b.Points
	}
	// Let a few points be made with markers in them, then lose the site.
	start := len(points())
	waitCLI(t, srv, "points made during the workload", func() bool { return len(points()) >= start+3 && written.Load() > 20 },
		func() string { return srv.cli("machines", "points", "web01") })
	md.agentP.signal(syscall.SIGKILL)
	<-done
	n := int(written.Load())
	t.Logf("%d markers written before the agent was killed; %d points", n, len(points()))

	out, err := srv.cliErr("machines", "failover", "web01", "--point", "latest", "--net", "bridge=br0", "--wait")
	if err != nil || !strings.Contains(out, "web01 failed over: replica machine web01 runs from recovery point") || !strings.Contains(out, "export failover-web01") {
		t.Fatalf("machines failover --wait: %v\n%s\n%s", err, out, srv.cli("machines", "show", "web01", "-o", "json"))
	}
	var m control.Machine
	json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
	if m.State != control.StateFailedOver || m.Epoch != 2 || m.Failover == nil || m.Failover.Report.Fenced != 2 ||
		m.Failover.Report.MachineState != "running" || len(m.Failover.Report.Disks) != 1 {
		t.Fatalf("machine after the failover: %s epoch %d %+v", m.State, m.Epoch, m.Failover)
	}
	pointID := m.Failover.Report.PointID

	// The replica machine read a prefix of the writes: every marker up to
	// some k, none after; and it is not on an isolated network.
	img, err := os.ReadFile(filepath.Join(vmDir, "web01.img"))
	if err != nil || len(img) != 32<<20 {
		t.Fatalf("what the replica machine read: %d bytes, %v", len(img), err)
	}
	k := 0
	for k < n && bytes.Equal(img[markerAt(k):markerAt(k)+int64(len(marker(k)))], marker(k)) {
		k++
	}
	for i := k; i < n+1 && markerAt(i) < 32<<20; i++ {
		if b := img[markerAt(i) : markerAt(i)+int64(len(marker(i)))]; !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatalf("marker %d is missing but block %d holds %q: not a prefix of the writes", k, i, b)
		}
	}
	if k == 0 {
		t.Fatalf("the failed-over point holds none of the %d markers", n)
	}
	t.Logf("the failed-over point holds markers 0..%d of %d", k-1, n)
	env, _ := os.ReadFile(filepath.Join(vmDir, "web01.env"))
	if strings.Contains(string(env), "STANDBY_NET_ISOLATED=1") || !strings.Contains(string(env), "STANDBY_NET_BRIDGE=br0\n") ||
		!strings.Contains(string(env), "STANDBY_DISK_0_URI=nbd+unix:///failover-web01/vda") {
		t.Fatalf("replica machine environment:\n%s", env)
	}

	// Hydration completes; its image equals the export's content.
	waitCLI(t, srv, "hydration to complete", func() bool {
		json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
		h := m.Failover.Report.Hydration
		if h.Error != "" {
			t.Fatalf("hydration failed: %s", h.Error)
		}
		return h.Complete
	}, func() string { return srv.cli("machines", "show", "web01") })
	h := m.Failover.Report.Hydration
	if h.Total != 32<<20 || h.Done != h.Total || len(h.Images) != 1 {
		t.Fatalf("hydration report %+v", h)
	}
	exported := filepath.Join(t.TempDir(), "export.img")
	if out, err := exec.Command("nbdcopy", m.Failover.Report.Disks[0], exported).CombinedOutput(); err != nil {
		t.Fatalf("read the export: %v\n%s", err, out)
	}
	want, _ := os.ReadFile(exported)
	got, err := os.ReadFile(h.Images[0])
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the hydrated image (%d bytes, %v) differs from the export (%d bytes)", len(got), err, len(want))
	}
	if !bytes.Equal(got[4<<20:4<<20+4096], bytes.Repeat([]byte{0x5a}, 4096)) {
		t.Fatal("the hydrated image lacks the replica machine's own write")
	}
	if !strings.Contains(srv.cli("machines", "show", "web01"), "hydration 33554432 of 33554432 bytes, complete") {
		t.Fatalf("machines show:\n%s", srv.cli("machines", "show", "web01"))
	}

	// The old agent comes back: it is fenced and nothing of it is applied.
	before := targetReplica(t, md.tgtStatus)
	md.agentP.start()
	waitCLI(t, srv, "the restarted agent to say it is fenced", func() bool {
		return agentReplState(t, md.agentStatus) == "fenced"
	}, func() string { return srv.cli("machines", "show", "web01") })
	time.Sleep(2 * time.Second) // give anything it might still send time to arrive
	after := targetReplica(t, md.tgtStatus)
	// (Retention may release segments meanwhile: fewer is fine, more or a
	// new applied position is not.)
	if after.Applied != before.Applied || after.Segments > before.Segments || after.Epoch != 2 {
		t.Fatalf("the replica changed after the old agent came back: %+v, before %+v", after, before)
	}

	// Commit: only the failed-over point remains; the export stays.
	if out, err := srv.cliErr("machines", "commit", "web01", "--wait"); err != nil || !strings.Contains(out, "committed") {
		t.Fatalf("machines commit --wait: %v\n%s", err, out)
	}
	waitCLI(t, srv, "only the failed-over point in the catalogue", func() bool {
		p := points()
		return len(p) == 1 && p[0].ID == pointID
	}, func() string { return srv.cli("machines", "points", "web01") })
	json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
	if m.State != control.StateFailoverCommitted {
		t.Fatalf("state after commit: %s", m.State)
	}
	if out := run(t, "target", "exports", "--status", md.tgtStatus); !strings.Contains(out, "failover-web01") {
		t.Fatalf("the export after commit:\n%s", out)
	}

	// The old primary comes back and its machine writes on (split brain:
	// its agent is fenced, the writes stay in its journal). Re-protecting
	// would discard them: refused, naming the bytes, unless --force.
	_, mt2Addr, _ := md.startTarget("mt2", "")
	waitCLI(t, srv, "mt2 to heartbeat", func() bool { return strings.Contains(srv.cli("servers", "list"), mt2Addr) }, func() string { return srv.cli("servers", "list") })
	c2, err := nbd.Dial(t.Context(), "unix", md.agentSock, "vda", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	late := []int{n + 40, n + 41, n + 300}
	for _, i := range late {
		if _, err := c2.WriteAt(marker(i), markerAt(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c2.Flush(); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	waitCLI(t, srv, "the old primary to report its unreplicated writes", func() bool {
		json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
		return m.Replication.BacklogBytes > 0
	}, func() string { return srv.cli("machines", "show", "web01") })
	if out, err := srv.cliErr("machines", "reprotect", "web01", "--target", "mt2"); err == nil || !strings.Contains(out+err.Error(), "bytes of writes that never reached the secondary") || !strings.Contains(out+err.Error(), "--force") {
		t.Fatalf("re-protect over unreplicated writes without --force: %v\n%s", err, out)
	}
	out, err = srv.cliErr("machines", "reprotect", "web01", "--target", "mt2", "--force", "--wait")
	if err != nil || !strings.Contains(out, "protected in reverse") {
		t.Fatalf("machines reprotect --force --wait: %v\n%s\n%s", err, out, srv.cli("machines", "show", "web01", "-o", "json"))
	}
	json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
	// Only the blocks that differ were sent: the 64 KiB blocks of the
	// markers the failed-over point lacks, and the replica machine's own.
	// (Marker n was in flight when the agent died: its block may differ
	// too.)
	blocks := map[int64]bool{4 << 20 >> 16: true}
	for i := k; i < n; i++ {
		blocks[markerAt(i)>>16] = true
	}
	for _, i := range late {
		blocks[markerAt(i)>>16] = true
	}
	want1, want2 := int64(len(blocks))<<16, int64(len(blocks))<<16
	if !blocks[markerAt(n)>>16] {
		want2 += 1 << 16
	}
	if r := m.Reverse; r == nil || !r.Force || r.Unreplicated <= 0 || (r.Report.ResyncBytes != want1 && r.Report.ResyncBytes != want2) || r.Report.SentBytes > r.Report.ResyncBytes*11/10 {
		t.Fatalf("re-protect: %+v; want %d (or %d) bytes differing and at most 1.1x that sent", m.Reverse, want1, want2)
	}
	t.Logf("re-protect --force: %d bytes of unreplicated writes discarded; %d bytes differed, %d sent", m.Reverse.Unreplicated, m.Reverse.Report.ResyncBytes, m.Reverse.Report.SentBytes)
	// The old primary's disk now equals the failed-over machine's.
	exported = filepath.Join(t.TempDir(), "export-now.img")
	if out, err := exec.Command("nbdcopy", m.Failover.Report.Disks[0], exported).CombinedOutput(); err != nil {
		t.Fatalf("read the export: %v\n%s", err, out)
	}
	want, _ = os.ReadFile(exported)
	if got, err := os.ReadFile(md.disk); err != nil || !bytes.Equal(got, want) {
		t.Fatal("after re-protect, the old primary's disk differs from the failed-over machine's")
	}

	var audit []control.AuditEntry
	json.Unmarshal([]byte(srv.cli("audit", "-o", "json", "--limit", "200")), &audit)
	seen := map[string]bool{}
	for _, e := range audit {
		seen[e.Action] = true
	}
	for _, a := range []string{"machine.failover", "machine.failover-done", "machine.commit", "machine.reprotect"} {
		if !seen[a] {
			t.Errorf("audit log has no %s", a)
		}
	}
}

// targetReplica is web01's replica status at the master target.
func targetReplica(t *testing.T, status string) replica.Status {
	t.Helper()
	resp, err := http.Get("http://" + status + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ms []struct {
		Name   string         `json:"name"`
		Status replica.Status `json:"status"`
	}
	json.NewDecoder(resp.Body).Decode(&ms)
	if len(ms) != 1 {
		t.Fatalf("target status: %+v", ms)
	}
	return ms[0].Status
}

// agentReplState is the agent's replication state.
func agentReplState(t *testing.T, status string) string {
	resp, err := http.Get("http://" + status + "/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var s struct {
		Replication struct {
			State string `json:"state"`
		} `json:"replication"`
	}
	json.NewDecoder(resp.Body).Decode(&s)
	return s.Replication.State
}
