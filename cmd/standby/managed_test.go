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
	// The initial copy went through a copy tunnel: the agent's TLS with
	// the master target, checked against joined identities, relayed
	// encrypted by the process server, which forwarded no Copy frame.
	var ps struct {
		Machines []struct {
			Forwarding struct {
				CopyFrames  uint64 `json:"copy_frames"`
				TunnelBytes uint64 `json:"tunnel_bytes"`
			} `json:"forwarding"`
		} `json:"machines"`
	}
	if err := getJSON(t, "http://"+md.psStatus+"/status", &ps); err != nil || len(ps.Machines) != 1 {
		t.Fatalf("process server status: %v, %d machines", err, len(ps.Machines))
	}
	if f := ps.Machines[0].Forwarding; f.TunnelBytes == 0 || f.CopyFrames != 0 {
		t.Errorf("managed initial copy: %d bytes through a tunnel, %d Copy frames forwarded; want a tunnel", f.TunnelBytes, f.CopyFrames)
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
	t                                 *testing.T
	srv                               *serverProc
	dir, disk                         string
	agentP, tgtP                      *roleProc
	tgtStatus, agentStatus, agentSock string
	psStatus                          string
}

// join joins a component with a fresh token and returns its identity
// directory.
func (md *managed) join(role control.Role, name, addr string) string {
	md.t.Helper()
	tok := strings.Fields(md.srv.cli("token", "create", "--role", string(role), "--ttl", "10m"))[0]
	idDir := filepath.Join(md.dir, "id-"+name)
	args := []string{string(role), "join", "--server", "https://" + md.srv.addr, "--token", tok, "--dir", idDir, "--name", name}
	if addr != "" {
		args = append(args, "--address", addr)
	}
	md.srv.cli(args...)
	return idDir
}

// controlSection is a role's control: section with identity idDir.
func (md *managed) controlSection(idDir, extra string) string {
	return fmt.Sprintf("control:\n  server: https://%s\n  identity: %s\n  heartbeat: 1s\n%s", md.srv.addr, idDir, extra)
}

// startTarget joins and starts master target name (extra appended to its
// configuration) and returns it with its listen and status addresses.
func (md *managed) startTarget(name, extra string) (p *roleProc, addr, status string) {
	t := md.t
	t.Helper()
	addr, status = freePort(t), freePort(t)
	id := md.join("target", name, addr)
	cfg := filepath.Join(md.dir, name+".yaml")
	writeFile(t, cfg, fmt.Sprintf("listen: %s\ndata_dir: %s\nstatus: %s\n", addr, filepath.Join(md.dir, name), status)+md.controlSection(id, "")+extra)
	p = &roleProc{t: t, name: name, args: []string{"target", "--config", cfg}, ready: status}
	md.run(p)
	return p, addr, status
}

// run starts p and stops it at the end of the test.
func (md *managed) run(p *roleProc) {
	p.start()
	md.t.Cleanup(func() {
		if md.t.Failed() {
			md.t.Logf("%s's log:\n%s", p.name, p.stderr)
		}
		p.signal(syscall.SIGTERM)
	})
}

// agentProcess is a `standby agent` of a managed deployment.
type agentProcess struct {
	p                  *roleProc
	disk, sock, status string
}

// startAgent joins and starts an agent (host name host, its files named
// after file) serving one 32 MiB disk of machine, with extra appended to
// its configuration.
func (md *managed) startAgent(machine, host, file, extra string) agentProcess {
	t := md.t
	t.Helper()
	a := agentProcess{disk: filepath.Join(md.dir, machine+".img"), sock: filepath.Join(md.dir, file+".sock"), status: freePort(t)}
	id := md.join("agent", host, "")
	f, err := os.Create(a.disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20)
	f.WriteAt([]byte(strings.Repeat("standby managed deployment ", 40000)), 1<<20)
	f.Close()
	cfg := filepath.Join(md.dir, file+".yaml")
	writeFile(t, cfg, fmt.Sprintf("machine: %s\nstate_dir: %s\nlisten:\n  unix: %s\ndisks:\n  - name: vda\n    path: %s\nbookmark_interval: 1s\nstatus: %s\n",
		machine, filepath.Join(md.dir, file), a.sock, a.disk, a.status)+md.controlSection(id, "")+extra)
	a.p = &roleProc{t: t, name: file, args: []string{"agent", "--config", cfg}, ready: a.status}
	md.run(a.p)
	return a
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
	md := &managed{t: t, dir: dir, srv: startServerProc(t, dir, freePort(t))}
	srv := md.srv
	var tgtAddr string
	md.tgtP, tgtAddr, md.tgtStatus = md.startTarget("mt1", tgtExtra)
	psAddr, psStatus := freePort(t), freePort(t)
	psID := md.join("process", "ps1", psAddr)
	writeFile(t, filepath.Join(dir, "process.yaml"), fmt.Sprintf("listen: %s\ncache_dir: %s\ncache_quota: 256MiB\nstatus: %s\n", psAddr, filepath.Join(dir, "cache"), psStatus)+md.controlSection(psID, ""))
	md.run(&roleProc{t: t, name: "process", args: []string{"process", "--config", filepath.Join(dir, "process.yaml")}, ready: psStatus})
	md.psStatus = psStatus
	a := md.startAgent("web01", "host1", "agent", agentExtra)
	md.agentP, md.disk, md.agentStatus, md.agentSock = a.p, a.disk, a.status, a.sock
	waitCLI(t, srv, "the agent to report web01", func() bool {
		var ms []control.Machine
		json.Unmarshal([]byte(srv.cli("machines", "list", "-o", "json")), &ms)
		return len(ms) == 1 && ms[0].Name == "web01"
	}, func() string { return srv.cli("servers", "list") })
	waitCLI(t, srv, "the process server and master target to heartbeat with their addresses", func() bool {
		out := srv.cli("servers", "list")
		return strings.Contains(out, psAddr) && strings.Contains(out, tgtAddr)
	}, func() string { return srv.cli("servers", "list") })
	return md
}
