package pushinstall_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/pushinstall"
	"github.com/standby-dr/standby/internal/pushinstall/sshtest"
	"github.com/standby-dr/standby/internal/server"
)

// standbyBin is the binary the tests push, built once by TestMain.
var standbyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pushinstall-bin-")
	if err != nil {
		panic(err)
	}
	standbyBin = filepath.Join(dir, "standby")
	if out, err := exec.Command("go", "build", "-o", standbyBin, "github.com/standby-dr/standby/cmd/standby").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build standby: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// configServer is a real configuration server in this process, and its
// first admin's API client.
type configServer struct {
	url   string
	admin *client.Client
}

func startConfigServer(t *testing.T) *configServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	cfg := server.Defaults()
	cfg.Listen, cfg.DataDir = "127.0.0.1:0", dir
	s, err := server.New(ctx, server.Options{Config: cfg, Version: "test", Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + ln.Addr().String()
	c, err := client.New(client.Options{Server: url, Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, "ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	return &configServer{url: url, admin: c}
}

func (s *configServer) joinToken(t *testing.T) string {
	t.Helper()
	var r struct {
		Token string `json:"token"`
	}
	if err := s.admin.Do(context.Background(), "POST", "/v1/tokens", map[string]string{"role": "agent", "ttl": "10m"}, &r); err != nil || r.Token == "" {
		t.Fatalf("join token: %v %+v", err, r)
	}
	return r.Token
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The whole push install against a real sshd on loopback, this machine as
// the "remote" one: the agent ends joined (the server lists it and its
// machine) and running (its status answers); a second install is
// idempotent; uninstall stops it.
func TestInstallOverRealSSH(t *testing.T) {
	sshd := sshtest.Start(t)
	srv := startConfigServer(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "web01.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 16<<20); err != nil {
		t.Fatal(err)
	}
	status := freePort(t)
	token := srv.joinToken(t)
	var events []pushinstall.Event
	o := pushinstall.Options{
		Host: sshd.Addr, User: "root", KeyFile: sshd.ClientKey, KnownHosts: sshd.KnownHosts,
		Binary: standbyBin, ServerURL: srv.url, JoinToken: token,
		Machine: "web01", Disks: []pushinstall.Disk{{Name: "vda", Path: disk}},
		Prefix: filepath.Join(dir, "opt"), StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "web01.sock"),
		Status: status, Heartbeat: "1s", API: srv.admin, WaitTimeout: 60 * time.Second,
		Progress: func(ev pushinstall.Event) { events = append(events, ev) },
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "opt", "web01", "agent.log"))
			t.Logf("agent log:\n%s", b)
		}
		if err := pushinstall.Uninstall(context.Background(), o); err != nil {
			t.Errorf("uninstall at cleanup: %v", err)
		}
	})
	ctx := context.Background()
	res, err := pushinstall.Install(ctx, o)
	if err != nil {
		t.Fatalf("install: %v\nevents: %+v", err, events)
	}
	want := []string{"connect", "probe", "binary", "join", "config", "start", "wait"}
	if len(res.Steps) != len(want) {
		t.Fatalf("steps %+v, want %v", res.Steps, want)
	}
	for i, s := range res.Steps {
		if s.Step != want[i] || s.State != "done" {
			t.Errorf("step %d: %+v, want %s done", i, s, want[i])
		}
	}
	if len(events) != 2*len(want) {
		t.Errorf("progress events: %+v", events)
	}
	if res.ServerID == "" || res.Systemd || res.PIDFile == "" {
		t.Errorf("result %+v", res)
	}
	// Running: its status listener answers, managed.
	st := getStatus(t, status)
	if st.Machine != "web01" || st.Control == nil || st.Control.LastHeartbeat == "" {
		t.Errorf("agent status: %+v control %+v", st, st.Control)
	}
	// The configuration is private and the token is nowhere on disk.
	fi, err := os.Stat(res.Config)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config %s: %v %v, want mode 0600", res.Config, fi.Mode(), err)
	}
	if c, err := agent.LoadConfig(res.Config); err != nil || c.Control == nil || c.Control.Server != srv.url || c.Validate() != nil {
		t.Errorf("config as the agent reads it: %+v %v", c, err)
	}
	filepath.Walk(filepath.Join(dir, "opt"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && info.Size() < 1<<20 {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), token) {
				t.Errorf("%s holds the join token", p)
			}
		}
		return nil
	})
	pid1 := readPID(t, res.PIDFile)

	// Again, with a new token: the binary and the identity are kept, the
	// agent restarted, and the server sees it heartbeat again.
	o.JoinToken = srv.joinToken(t)
	events = nil
	res2, err := pushinstall.Install(ctx, o)
	if err != nil {
		t.Fatalf("second install: %v\nevents: %+v", err, events)
	}
	states := map[string]string{}
	for _, s := range res2.Steps {
		states[s.Step] = s.State + ": " + s.Message
	}
	if !strings.HasPrefix(states["binary"], "skipped") || !strings.HasPrefix(states["join"], "skipped") || !strings.Contains(states["start"], "restarted") {
		t.Errorf("second install: %v", states)
	}
	if res2.ServerID != res.ServerID {
		t.Errorf("second install joined again: %s, first %s", res2.ServerID, res.ServerID)
	}
	if pid2 := readPID(t, res2.PIDFile); pid2 == pid1 {
		t.Errorf("the agent was not restarted (pid %d)", pid1)
	}
	if st := getStatus(t, status); st.Machine != "web01" {
		t.Errorf("status after the second install: %+v", st)
	}

	// Uninstall: the agent stops, its directory goes, the binary stays.
	pid2 := readPID(t, res2.PIDFile)
	if err := pushinstall.Uninstall(ctx, o); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for processRuns(pid2) {
		if time.Now().After(deadline) {
			t.Fatalf("agent %d still runs after uninstall", pid2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "opt", "web01")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after uninstall: %v", err)
	}
	if _, err := os.Stat(res.Binary); err != nil {
		t.Errorf("the binary went with uninstall: %v", err)
	}
}

func getStatus(t *testing.T, addr string) agent.Status {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	defer resp.Body.Close()
	var st agent.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("agent status: %v", err)
	}
	return st
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		t.Fatalf("pid file %s: %q", path, b)
	}
	return pid
}

func processRuns(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// A zombie (state Z) has exited.
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// What must be refused before anything is installed: unknown and changed
// host keys, a wrong pinned fingerprint, a key the host does not
// authorize, a binary for another architecture.
func TestInstallRefuses(t *testing.T) {
	sshd := sshtest.Start(t)
	dir := t.TempDir()
	base := pushinstall.Options{
		Host: sshd.Addr, User: "root", KeyFile: sshd.ClientKey, KnownHosts: sshd.KnownHosts,
		Binary: standbyBin, ServerURL: "https://127.0.0.1:1", JoinToken: "SBJ1-not-used",
		Machine: "web01", Disks: []pushinstall.Disk{{Name: "vda", Path: "/nonexistent.img"}},
		Prefix: filepath.Join(dir, "opt"), StateDir: filepath.Join(dir, "state"),
	}
	otherHost := sshtest.Start(t) // another host key, for a "changed" entry
	changed := filepath.Join(dir, "changed_known_hosts")
	b, _ := os.ReadFile(otherHost.KnownHosts)
	os.WriteFile(changed, []byte(strings.Replace(string(b), otherHost.Addr[strings.LastIndex(otherHost.Addr, ":")+1:], sshd.Addr[strings.LastIndex(sshd.Addr, ":")+1:], 1)), 0o600)
	empty := filepath.Join(dir, "empty_known_hosts")
	os.WriteFile(empty, nil, 0o600)
	otherArch := filepath.Join(dir, "standby-arm64")
	patchMachine(t, standbyBin, otherArch)

	for _, tc := range []struct {
		name string
		mod  func(*pushinstall.Options)
		is   error
		says []string
	}{
		{"unknown host key", func(o *pushinstall.Options) { o.KnownHosts = empty }, pushinstall.ErrUnknownHostKey,
			[]string{sshd.Fingerprint(), "--host-key-fingerprint", "step connect"}},
		{"no known_hosts file", func(o *pushinstall.Options) { o.KnownHosts = filepath.Join(dir, "none") }, pushinstall.ErrUnknownHostKey,
			[]string{sshd.Fingerprint()}},
		{"changed host key", func(o *pushinstall.Options) { o.KnownHosts = changed }, pushinstall.ErrHostKeyMismatch,
			[]string{sshd.Fingerprint(), "someone is in the middle"}},
		{"wrong pinned fingerprint", func(o *pushinstall.Options) { o.HostKeyFingerprint = otherHost.Fingerprint() }, pushinstall.ErrUnknownHostKey,
			[]string{sshd.Fingerprint(), otherHost.Fingerprint()}},
		{"key not authorized", func(o *pushinstall.Options) { o.KeyFile = sshtest.NewKey(t) }, nil,
			[]string{"step connect", "unable to authenticate", "authorized_keys"}},
		{"binary for another arch", func(o *pushinstall.Options) { o.Binary = otherArch }, pushinstall.ErrArchMismatch,
			[]string{"step probe", "the host is \"Linux ", "AARCH64"}},
		{"join: server unreachable", func(o *pushinstall.Options) { o.HostKeyFingerprint = sshd.Fingerprint(); o.KnownHosts = empty }, nil,
			[]string{"step join", "https://127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.mod(&o)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := pushinstall.Install(ctx, o)
			if err == nil {
				t.Fatal("install succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error does not say %q: %v", s, err)
				}
			}
			if strings.Contains(err.Error(), o.JoinToken) && len(o.JoinToken) > 4 {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
	// Nothing was installed past the refusals but the binary (the join
	// failure comes after it).
	if _, err := os.Stat(filepath.Join(dir, "opt", "web01", "agent.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused install wrote a config: %v", err)
	}
}

// patchMachine copies an ELF binary with its e_machine set to AArch64
// (or x86-64 if it already is AArch64): a binary for another arch.
func patchMachine(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	m := uint16(183) // EM_AARCH64
	if binary.LittleEndian.Uint16(b[18:]) == m {
		m = 62 // EM_X86_64
	}
	binary.LittleEndian.PutUint16(b[18:], m)
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
