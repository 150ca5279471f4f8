package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/nbd"
)

// vmScript plays a hypervisor for the exec driver: a machine is a sleep
// process. At start it reads the disk through the NBD URI it is given
// (the master target's export) into STATE/NAME.img, records its
// environment, then writes through the export (pattern 0x5a over the
// marker), as a booted guest would.
const vmScript = `#!/bin/sh
set -eu
cmd=$1; shift
case $cmd in
start)
  env | grep '^STANDBY_' | sort > "$STATE/$STANDBY_MACHINE.env"
  nbdcopy "$1" "$STATE/$STANDBY_MACHINE.img"
  qemu-io -f raw -c 'write -P 0x5a 4M 4k' -c flush "$1" >/dev/null
  sleep 600 >/dev/null 2>&1 </dev/null &
  echo $! > "$STATE/$STANDBY_MACHINE.pid"
  echo "$STANDBY_MACHINE"
  ;;
stop)
  [ -f "$STATE/$1.pid" ] || exit 0
  if [ "$STANDBY_FORCE" = 1 ]; then sig=KILL; else sig=TERM; fi
  kill -s $sig "$(cat "$STATE/$1.pid")" 2>/dev/null || true
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

// needNBDTools skips (fails in CI) without nbdcopy and qemu-io, which the
// exec driver's test machines use.
func needNBDTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nbdcopy", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is needed (libnbd-bin, qemu-utils)", tool)
			}
			t.Skipf("%s not installed (libnbd-bin, qemu-utils)", tool)
		}
	}
}

// A test failover and its cleanup through the CLI, with every role a
// separate process: the master target exports the latest point over a
// unix socket and starts the replica machine with the exec driver; the
// machine reads the marker written through the agent, its own write
// reaches neither the replica nor the source, replication goes on, and
// the cleanup stops the machine and removes the export and its overlay;
// the point is tagged "tested".
func TestTestFailoverThroughTheCLI(t *testing.T) {
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
	if out, err := srv.cliErr("machines", "test-failover", "web01"); err == nil || !strings.Contains(out+err.Error(), "a test failover needs recovery points") {
		t.Fatalf("test failover of an unprotected machine: %v\n%s", err, out)
	}
	if out, err := srv.cliErr("machines", "protect", "web01", "--group", "web", "--wait"); err != nil {
		t.Fatalf("machines protect --wait: %v\n%s", err, out)
	}

	// A marker written through the agent's NBD socket, then a bookmark.
	marker := []byte("TEST-FAILOVER-MARKER 7f3a")
	c, err := nbd.Dial(t.Context(), "unix", md.agentSock, "vda", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt(marker, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	bookmark := func(label string) {
		t.Helper()
		resp, err := http.Post("http://"+md.agentStatus+"/bookmark?label="+label, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("bookmark %s: %s %s", label, resp.Status, b)
		}
	}
	points := func() []control.RecoveryPoint {
		var b struct {
			Points []control.RecoveryPoint `json:"points"`
		}
		json.Unmarshal([]byte(srv.cli("machines", "points", "web01", "-o", "json")), &b)
		return b.Points
	}
	labelled := func(label string) bool {
		return slices.ContainsFunc(points(), func(p control.RecoveryPoint) bool { return p.Label == label })
	}
	bookmark("marker")
	waitCLI(t, srv, "the marker's point in the catalogue", func() bool { return labelled("marker") },
		func() string { return srv.cli("machines", "points", "web01") })

	out, err := srv.cliErr("machines", "test-failover", "web01", "--point", "latest", "--wait")
	if err != nil || !strings.Contains(out, "replica machine web01-test of web01 runs from recovery point") || !strings.Contains(out, "export test-web01") {
		t.Fatalf("machines test-failover --wait: %v\n%s\n%s", err, out, srv.cli("machines", "show", "web01", "-o", "json"))
	}
	var m control.Machine
	json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
	if m.TestFailover != control.TestRunning || m.State != control.StateProtected || m.Test == nil ||
		m.Test.Report.MachineState != "running" || len(m.Test.Report.Disks) != 1 || !strings.HasPrefix(m.Test.Report.Disks[0], "nbd+unix:///test-web01/vda?socket=") {
		t.Fatalf("machine during the test failover: %s %q %+v", m.State, m.TestFailover, m.Test)
	}
	pointID := m.Test.Report.PointID
	// A second one, and disabling protection, are refused meanwhile.
	if out, err := srv.cliErr("machines", "test-failover", "web01"); err == nil || !strings.Contains(out+err.Error(), "allowed: test-cleanup") {
		t.Fatalf("a second test failover: %v\n%s", err, out)
	}
	if out, err := srv.cliErr("machines", "unprotect", "web01"); err == nil || !strings.Contains(out+err.Error(), "standby machines test-cleanup web01") {
		t.Fatalf("unprotect during a test failover: %v\n%s", err, out)
	}

	// The replica machine read the marker through the export, on an
	// isolated network.
	img, err := os.ReadFile(filepath.Join(vmDir, "web01-test.img"))
	if err != nil || len(img) != 32<<20 || !bytes.Equal(img[4<<20:4<<20+len(marker)], marker) {
		t.Fatalf("what the replica machine read: %d bytes, %v; at 4 MiB %q", len(img), err, img[4<<20:4<<20+len(marker)])
	}
	env, _ := os.ReadFile(filepath.Join(vmDir, "web01-test.env"))
	if !strings.Contains(string(env), "STANDBY_NET_ISOLATED=1\n") || !strings.Contains(string(env), "STANDBY_DISK_0_URI=nbd+unix:///test-web01/vda") {
		t.Fatalf("replica machine environment:\n%s", env)
	}
	// Its write went to the overlay only: the export shows it, the point
	// and the source do not.
	var xs []struct {
		Name  string `json:"name"`
		Disks []struct {
			OverlayBytes int64 `json:"overlay_bytes"`
		} `json:"disks"`
	}
	json.Unmarshal([]byte(run(t, "target", "exports", "--status", md.tgtStatus, "-o", "json")), &xs)
	if len(xs) != 1 || xs[0].Name != "test-web01" || xs[0].Disks[0].OverlayBytes != 4096 {
		t.Fatalf("exports during the test failover: %+v", xs)
	}
	got := pointBytes(t, md.tgtStatus, pointID, 4<<20, len(marker))
	if !bytes.Equal(got, marker) {
		t.Fatalf("the point at 4 MiB after the replica machine wrote: %q", got)
	}
	src, _ := os.ReadFile(md.disk)
	if !bytes.Equal(src[4<<20:4<<20+len(marker)], marker) {
		t.Fatalf("the source at 4 MiB: %q", src[4<<20:4<<20+len(marker)])
	}

	// Replication goes on during the test failover.
	bookmark("during-test")
	waitCLI(t, srv, "a point made during the test failover", func() bool { return labelled("during-test") },
		func() string { return srv.cli("machines", "points", "web01") })

	if out, err := srv.cliErr("machines", "test-cleanup", "web01", "--wait"); err != nil || !strings.Contains(out, "cleaned up") {
		t.Fatalf("machines test-cleanup --wait: %v\n%s", err, out)
	}
	m = control.Machine{} // fields left out of the JSON (an empty flag) must not keep old values
	json.Unmarshal([]byte(srv.cli("machines", "show", "web01", "-o", "json")), &m)
	if m.TestFailover != control.TestNone || m.Test.Report.Phase != control.TestPhaseRemoved {
		t.Fatalf("machine after cleanup: %q %+v", m.TestFailover, m.Test)
	}
	if out := run(t, "target", "exports", "--status", md.tgtStatus, "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("exports after cleanup: %s", out)
	}
	if _, err := os.Stat(filepath.Join(md.dir, "target", "exports", "test-web01")); !os.IsNotExist(err) {
		t.Fatalf("the export's overlay directory after cleanup: %v", err)
	}
	if _, err := os.Stat(filepath.Join(vmDir, "web01-test.pid")); !os.IsNotExist(err) {
		t.Fatalf("the replica machine was not stopped: %v", err)
	}
	waitCLI(t, srv, `the point tagged "tested"`, func() bool {
		return slices.ContainsFunc(points(), func(p control.RecoveryPoint) bool { return p.ID == pointID && slices.Contains(p.Tags, "tested") })
	}, func() string { return srv.cli("machines", "points", "web01", "-o", "json") })
	// Protection may be removed now.
	srv.cli("machines", "unprotect", "web01")
}

// pointBytes reads n bytes at off of disk 0 of a recovery point, from the
// master target's status listener.
func pointBytes(t *testing.T, status string, id uint64, off int64, n int) []byte {
	t.Helper()
	return machinePointBytes(t, status, "web01", id, off, n)
}

// machinePointBytes is pointBytes of machine's point.
func machinePointBytes(t *testing.T, status, machine string, id uint64, off int64, n int) []byte {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/machines/%s/points/%d/disks/0", status, machine, id), nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+int64(n)-1))
	resp, err := http.DefaultClient.Do(req.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK { // no range support: the whole disk
		b = b[off : off+int64(n)]
	}
	return b
}
