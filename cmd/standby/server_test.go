package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// serverProc is `standby server` as a real process.
type serverProc struct {
	t    *testing.T
	dir  string
	addr string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

func startServerProc(t *testing.T, dir, addr string) *serverProc {
	t.Helper()
	cfg := filepath.Join(dir, "server.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %s\ndata_dir: %s\nhosts: [127.0.0.1, localhost]\nconsistency_interval: 2s\n", addr, filepath.Join(dir, "data"))), 0o644)
	p := &serverProc{t: t, dir: dir, addr: addr, log: &bytes.Buffer{}}
	p.cmd = exec.Command(standbyBin, "server", "--config", cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("standby server does not listen on %s:\n%s", addr, p.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *serverProc) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

// cli runs standby with args against the server, as its admin; it
// returns stdout and fails the test on a non-zero exit.
func (p *serverProc) cli(args ...string) string {
	p.t.Helper()
	out, err := p.cliErr(args...)
	if err != nil {
		p.t.Fatalf("standby %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (p *serverProc) cliErr(args ...string) (string, error) {
	tok, err := os.ReadFile(filepath.Join(p.dir, "data", "admin.token"))
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(standbyBin, args...)
	cmd.Env = append(os.Environ(), "STANDBY_SERVER=https://"+p.addr, "STANDBY_TOKEN="+strings.TrimSpace(string(tok)), "STANDBY_CA="+filepath.Join(p.dir, "data", "ca.crt"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// joined is a component joined with `standby ROLE join`, calling the API
// with the certificate it got.
type joined struct {
	t    *testing.T
	url  string
	http *http.Client
}

func (p *serverProc) join(role control.Role, name, addr string) *joined {
	p.t.Helper()
	tok := strings.Fields(p.cli("token", "create", "--role", string(role), "--ttl", "10m"))[0]
	dir := filepath.Join(p.dir, "join-"+name)
	args := []string{string(role), "join", "--server", "https://" + p.addr, "--token", tok, "--dir", dir, "--name", name}
	if addr != "" {
		args = append(args, "--address", addr)
	}
	if out := p.cli(args...); !strings.Contains(out, "joined as "+string(role)+"/") {
		p.t.Fatalf("join said %q", out)
	}
	l, err := trust.Load(dir)
	if err != nil {
		p.t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{l.Cert}, RootCAs: l.Roots, MinVersion: tls.VersionTLS13}
	return &joined{t: p.t, url: "https://" + p.addr, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}}
}

func (j *joined) post(path string, body any) {
	j.t.Helper()
	b, _ := json.Marshal(body)
	resp, err := j.http.Post(j.url+path, "application/json", bytes.NewReader(b))
	if err != nil {
		j.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		j.t.Fatalf("POST %s: HTTP %d %s", path, resp.StatusCode, e.Error)
	}
}

// The configuration server as a real process, driven by the CLI: join
// with tokens, protect a machine (a job), SIGKILL the server while the
// job waits, restart it: the job resumes and succeeds when the agent
// reports its machine protected; points are listed.
func TestServerCLIAndJobSurvivesSIGKILL(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	srv := startServerProc(t, dir, addr)

	target := srv.join(control.RoleTarget, "mt1", "127.0.0.1:9830")
	ps := srv.join(control.RoleProcess, "ps1", "127.0.0.1:9821")
	agent := srv.join(control.RoleAgent, "host1", "")
	beat := func() {
		target.post("/v1/heartbeat", map[string]any{"version": "t", "address": "127.0.0.1:9830"})
		ps.post("/v1/heartbeat", map[string]any{"version": "t", "address": "127.0.0.1:9821"})
		agent.post("/v1/heartbeat", map[string]any{"version": "t"})
	}
	report := func(state string) {
		agent.post("/v1/agent/report", map[string]any{"id": "m-web01", "name": "web01",
			"disks": []map[string]any{{"name": "vda", "size": 1 << 30}}, "replication": map[string]any{"state": state, "rpo_seconds": 0.5, "resync_bytes": 1 << 30, "resync_left": 1 << 29}})
	}
	beat()
	report("connecting")

	if out := srv.cli("servers", "list"); !strings.Contains(out, "mt1") || !strings.Contains(out, "ps1") || !strings.Contains(out, "host1") {
		t.Fatalf("servers list:\n%s", out)
	}
	srv.cli("groups", "create", "web", "--policy", `{"point_interval": "5s"}`)
	out := srv.cli("machines", "protect", "web01", "--group", "web", "-o", "json")
	var pr struct {
		Job control.Job `json:"job"`
	}
	if err := json.Unmarshal([]byte(out), &pr); err != nil || pr.Job.ID == "" {
		t.Fatalf("machines protect -o json: %v\n%s", err, out)
	}
	report("initial-replication")
	// The job is waiting in its second step; the server dies.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var j control.Job
		json.Unmarshal([]byte(srv.cli("jobs", "show", pr.Job.ID, "-o", "json")), &j)
		if j.State == control.JobRunning && j.Current == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not in its second step: %+v", j)
		}
		time.Sleep(100 * time.Millisecond)
	}
	srv.kill9()
	srv = startServerProc(t, dir, addr)
	if !strings.Contains(srv.log.String(), "resumed jobs") {
		t.Errorf("the restarted server did not say it resumed the job:\n%s", srv.log)
	}
	beat()
	report("protected")
	out, err := srv.cliErr("jobs", "show", pr.Job.ID, "--wait", "-o", "json")
	if err != nil {
		t.Fatalf("jobs show --wait: %v\n%s", err, out)
	}
	var j control.Job
	json.Unmarshal([]byte(out), &j)
	if j.State != control.JobSucceeded || j.Attempts < 2 {
		t.Fatalf("job after the restart: %s, %d attempts: %+v", j.State, j.Attempts, j)
	}
	target.post("/v1/target/points", map[string]any{"machine": "m-web01", "points": []map[string]any{{"id": 7, "seq": 70, "time": time.Now().UTC(), "label": "after-restart"}}})
	if out := srv.cli("machines", "points", "web01"); !strings.Contains(out, "after-restart") {
		t.Fatalf("machines points:\n%s", out)
	}
	if out := srv.cli("machines", "list"); !strings.Contains(out, "protected") {
		t.Fatalf("machines list:\n%s", out)
	}
	// A viewer may look, not change.
	vtok := strings.TrimSpace(srv.cli("users", "create", "watcher", "--role", "viewer"))
	cmd := exec.Command(standbyBin, "groups", "create", "other", "--server", "https://"+addr, "--token", vtok, "--ca", filepath.Join(dir, "data", "ca.crt"))
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "viewer") || !strings.Contains(string(b), "403") {
		t.Fatalf("a viewer creating a group: %v %s", err, b)
	}
	if out := srv.cli("audit"); !strings.Contains(out, "machine.protect") || !strings.Contains(out, "server.join") {
		t.Fatalf("audit:\n%s", out)
	}
}
