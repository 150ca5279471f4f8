package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// The product as an operator runs it: `standby server`, then a master
// target, a process server and an agent as separate processes, each
// joined with a one-time token; the machine the agent reports is
// protected, reaches "protected" and has recovery points listed — all
// through the CLI.
func TestManagedDeploymentThroughTheCLI(t *testing.T) {
	md := startManaged(t, "")
	srv, agentP, tgtStatus, disk := md.srv, md.agentP, md.tgtStatus, md.disk

	srv.cli("groups", "create", "web", "--policy", `{"point_interval": "1s", "rpo_threshold": "30s"}`)
	if out, err := srv.cliErr("machines", "protect", "web01", "--group", "web", "--wait"); err != nil {
		t.Fatalf("machines protect --wait: %v\n%s\n%s", err, out, srv.cli("machines", "show", "web01"))
	}
	if out := srv.cli("machines", "show", "web01"); !strings.Contains(out, "state     protected") {
		t.Fatalf("after protect --wait:\n%s", out)
	}
	waitCLI(t, srv, "recovery points in the catalogue", func() bool {
		var b struct {
			Points []control.RecoveryPoint `json:"points"`
		}
		json.Unmarshal([]byte(srv.cli("machines", "points", "web01", "-o", "json")), &b)
		return len(b.Points) > 0
	}, func() string { return srv.cli("machines", "show", "web01") })
	// The replica at the latest point equals the source disk.
	agentP.signal(syscall.SIGTERM)
	if out := run(t, "verify", "--status", tgtStatus, "--machine", "web01", "--point", "latest", "--source", disk, "-o", "json"); !strings.Contains(out, `"equal": true`) {
		t.Fatalf("verify: %s", out)
	}
	srv.cli("machines", "unprotect", "web01")
	if out := srv.cli("machines", "show", "web01"); !strings.Contains(out, "state     unprotected") {
		t.Fatalf("after unprotect:\n%s", out)
	}
}

// waitCLI polls cond for up to 60 s; on timeout it fails with what more()
// prints.
func waitCLI(t *testing.T, srv *serverProc, what string, cond func() bool, more func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s:\n%s", what, more())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// managed is a deployment of separate processes under a configuration
// server: target, process server and agent joined with tokens, with the
// agent's machine web01 reported (not yet protected).
type managed struct {
	srv                               *serverProc
	dir, disk                         string
	agentP                            *roleProc
	tgtStatus, agentStatus, agentSock string
}

// startManaged starts the deployment; tgtExtra is appended to the
// target's configuration.
func startManaged(t *testing.T, tgtExtra string) *managed {
	t.Helper()
	return startManagedWith(t, tgtExtra, "")
}

// startManagedWith is startManaged with agentExtra appended to the
// agent's configuration too.
func startManagedWith(t *testing.T, tgtExtra, agentExtra string) *managed {
	t.Helper()
	dir := t.TempDir()
	srv := startServerProc(t, dir, freePort(t))
	server := "https://" + srv.addr

	join := func(role control.Role, name, addr string) string {
		t.Helper()
		tok := strings.Fields(srv.cli("token", "create", "--role", string(role), "--ttl", "10m"))[0]
		idDir := filepath.Join(dir, "id-"+name)
		args := []string{string(role), "join", "--server", server, "--token", tok, "--dir", idDir, "--name", name}
		if addr != "" {
			args = append(args, "--address", addr)
		}
		srv.cli(args...)
		return idDir
	}
	controlSection := func(idDir, extra string) string {
		return fmt.Sprintf("control:\n  server: %s\n  identity: %s\n  heartbeat: 1s\n%s", server, idDir, extra)
	}

	tgtAddr, tgtStatus := freePort(t), freePort(t)
	tgtID := join("target", "mt1", tgtAddr)
	writeFile(t, filepath.Join(dir, "target.yaml"), fmt.Sprintf("listen: %s\ndata_dir: %s\nstatus: %s\n", tgtAddr, filepath.Join(dir, "target"), tgtStatus)+controlSection(tgtID, "")+tgtExtra)
	psAddr, psStatus := freePort(t), freePort(t)
	psID := join("process", "ps1", psAddr)
	writeFile(t, filepath.Join(dir, "process.yaml"), fmt.Sprintf("listen: %s\ncache_dir: %s\ncache_quota: 256MiB\nstatus: %s\n", psAddr, filepath.Join(dir, "cache"), psStatus)+controlSection(psID, ""))
	agentStatus := freePort(t)
	agentID := join("agent", "host1", "")
	disk := filepath.Join(dir, "web01.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20)
	f.WriteAt([]byte(strings.Repeat("standby managed deployment ", 40000)), 1<<20)
	f.Close()
	agentSock := filepath.Join(dir, "agent.sock")
	writeFile(t, filepath.Join(dir, "agent.yaml"), fmt.Sprintf("machine: web01\nstate_dir: %s\nlisten:\n  unix: %s\ndisks:\n  - name: vda\n    path: %s\nbookmark_interval: 1s\nstatus: %s\n",
		filepath.Join(dir, "agent"), agentSock, disk, agentStatus)+controlSection(agentID, "")+agentExtra)

	agentP := &roleProc{t: t, name: "agent", args: []string{"agent", "--config", filepath.Join(dir, "agent.yaml")}, ready: agentStatus}
	for _, p := range []*roleProc{
		{t: t, name: "target", args: []string{"target", "--config", filepath.Join(dir, "target.yaml")}, ready: tgtStatus},
		{t: t, name: "process", args: []string{"process", "--config", filepath.Join(dir, "process.yaml")}, ready: psStatus},
		agentP,
	} {
		p.start()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s's log:\n%s", p.name, p.stderr)
			}
			p.signal(syscall.SIGTERM)
		})
	}
	waitCLI(t, srv, "the agent to report web01", func() bool {
		var ms []control.Machine
		json.Unmarshal([]byte(srv.cli("machines", "list", "-o", "json")), &ms)
		return len(ms) == 1 && ms[0].Name == "web01"
	}, func() string { return srv.cli("servers", "list") })
	waitCLI(t, srv, "the process server and master target to heartbeat with their addresses", func() bool {
		out := srv.cli("servers", "list")
		return strings.Contains(out, psAddr) && strings.Contains(out, tgtAddr)
	}, func() string { return srv.cli("servers", "list") })
	return &managed{srv: srv, dir: dir, disk: disk, agentP: agentP, tgtStatus: tgtStatus, agentStatus: agentStatus, agentSock: agentSock}
}
