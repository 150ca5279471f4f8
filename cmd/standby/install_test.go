package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/pushinstall"
	"github.com/standby-dr/standby/internal/pushinstall/sshtest"
)

// `standby agent install` against a real sshd on loopback and a real
// `standby server` process: the command makes the join token itself, and
// the server ends up listing the agent and its machine.
func TestAgentInstallCommand(t *testing.T) {
	sshd := sshtest.Start(t)
	dir := t.TempDir()
	srv := startServerProc(t, dir, freePort(t))
	tok, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "db01.img")
	os.WriteFile(disk, nil, 0o600)
	os.Truncate(disk, 8<<20)
	remote := filepath.Join(dir, "remote")
	args := []string{"--host", sshd.Addr, "--key", sshd.ClientKey, "--host-key-fingerprint", sshd.Fingerprint(),
		"--binary", standbyBin, "--machine", "db01", "--disk", "vda=" + disk,
		"--prefix", filepath.Join(remote, "opt"), "--state-dir", filepath.Join(remote, "state"), "--socket", filepath.Join(remote, "db01.sock"),
		"--heartbeat", "1s", "--wait", "60s",
		"--server", "https://" + srv.addr, "--token", strings.TrimSpace(string(tok)), "--ca", filepath.Join(dir, "data", "ca.crt"), "-o", "json"}
	t.Cleanup(func() {
		err := pushinstall.Uninstall(context.Background(), pushinstall.Options{Host: sshd.Addr, KeyFile: sshd.ClientKey, HostKeyFingerprint: sshd.Fingerprint(),
			Machine: "db01", Prefix: filepath.Join(remote, "opt"), StateDir: filepath.Join(remote, "state"), Socket: filepath.Join(remote, "db01.sock")})
		if err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	var out, errb bytes.Buffer
	cmd := newAgentInstallCommand()
	if err := cmd.run(context.Background(), &env{stdout: &out, stderr: &errb}, args); err != nil {
		b, _ := os.ReadFile(filepath.Join(remote, "opt", "db01", "agent.log"))
		t.Fatalf("agent install: %v\n%s\nagent log:\n%s", err, errb.String(), b)
	}
	var res pushinstall.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.ServerID == "" {
		t.Fatalf("-o json: %v\n%s", err, out.String())
	}
	for _, step := range []string{"connect", "probe", "binary", "join", "config", "start", "wait"} {
		if !strings.Contains(errb.String(), step) {
			t.Errorf("progress does not mention %s:\n%s", step, errb.String())
		}
	}
	var ss []control.Server
	json.Unmarshal([]byte(srv.cli("servers", "list", "--role", "agent", "-o", "json")), &ss)
	if len(ss) != 1 || ss[0].Name != "db01" || ss[0].ID != res.ServerID {
		t.Errorf("servers list: %+v, want agent db01 %s", ss, res.ServerID)
	}
	var ms []control.Machine
	json.Unmarshal([]byte(srv.cli("machines", "list", "-o", "json")), &ms)
	if len(ms) != 1 || ms[0].Name != "db01" || ms[0].Agent != res.ServerID {
		t.Errorf("machines list: %+v", ms)
	}
}

func TestAgentInstallUsage(t *testing.T) {
	var out, errb bytes.Buffer
	for _, args := range [][]string{
		{"--host", "h"}, // no machine, no disk
		{"--host", "h", "--machine", "m", "--disk", "x"}, // not NAME=PATH
		{"--host", "h", "--machine", "m", "--disk", "a=/b", "extra"},
	} {
		err := newAgentInstallCommand().run(context.Background(), &env{stdout: &out, stderr: &errb}, args)
		if exitCode(err) != exitUsage {
			t.Errorf("%q: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}
