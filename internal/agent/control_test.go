package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/process"
	"github.com/standby-dr/standby/internal/retention"
	"github.com/standby-dr/standby/internal/server"
	"github.com/standby-dr/standby/internal/target"
	"github.com/standby-dr/standby/internal/trust"
)

// managed is a configuration server in this process, a process server and
// a master target joined to it, and a managed agent: the real roles, with
// the process server's listener presenting its joined identity.
type managed struct {
	t          *testing.T
	url        string
	admin      *client.Client
	stopServer func()
	processID  string
	processAt  string // the process server's address
	agentDir   string // the agent's join directory
	agent      *testAgent
}

func startManaged(t *testing.T) *managed {
	t.Helper()
	m := &managed{t: t}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The configuration server.
	dir := t.TempDir()
	cfg := server.Defaults()
	cfg.Listen, cfg.DataDir = "127.0.0.1:0", dir
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, server.Options{Config: cfg, Version: "test", Log: log.With("role", "server")})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	stopped := false
	m.stopServer = func() {
		if !stopped {
			stopped = true
			cancel()
			<-served
			s.Close()
		}
	}
	t.Cleanup(m.stopServer)
	m.url = "https://" + ln.Addr().String()
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if m.admin, err = client.New(client.Options{Server: m.url, Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, "ca.crt")}); err != nil {
		t.Fatal(err)
	}

	// The master target (plain TCP: this test is about the agent's hop).
	tl := listen(t)
	tg, err := target.New(context.Background(), target.Options{DataDir: t.TempDir(), Retention: retention.Policy{KeepAll: time.Hour}, PruneInterval: time.Second, Logger: log.With("role", "target")})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, func(ctx context.Context) { tg.Serve(ctx, tl) }, func() { tg.Close() })
	m.joinAndBeat(control.RoleTarget, "mt1", tl.Addr().String())

	// The process server, behind a listener that presents its joined
	// certificate and accepts only agents of the deployment's CA.
	pl := listen(t)
	pdir := m.joinAndBeat(control.RoleProcess, "ps1", pl.Addr().String())
	local, err := trust.Load(pdir)
	if err != nil {
		t.Fatal(err)
	}
	m.processID, m.processAt = local.Identity.ID, pl.Addr().String()
	ps, err := process.New(process.Options{CacheDir: t.TempDir(), Quota: 256 << 20, Target: tl.Addr().String(), Logger: log.With("role", "process")})
	if err != nil {
		t.Fatal(err)
	}
	stls := trust.ServerTLS(local.Roots, local.Cert, []control.Role{control.RoleAgent}, nil)
	serve(t, func(ctx context.Context) { ps.Serve(ctx, tls.NewListener(pl, stls)) }, func() { ps.Close() })

	m.call("POST", "/v1/groups", map[string]any{"name": "g", "policy": map[string]any{"point_interval": "1s"}}, nil)

	// The agent, joined and managed.
	adir := t.TempDir()
	m.agentDir = adir
	if _, err := trust.Join(context.Background(), trust.JoinOptions{ServerURL: m.url, Token: m.token(control.RoleAgent), Role: control.RoleAgent, Name: "host1", Dir: adir}); err != nil {
		t.Fatal(err)
	}
	m.agent = startTestAgent(t, []int64{8 << 20}, func(c *Config) {
		c.Control = &ControlConfig{Server: m.url, Identity: adir, Heartbeat: "1s"}
	})
	return m
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs a role until the test ends.
func serve(t *testing.T, run func(context.Context), closeFn func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; closeFn() })
}

func (m *managed) call(method, path string, body, out any) {
	m.t.Helper()
	if err := m.admin.Do(context.Background(), method, path, body, out); err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
}

func (m *managed) token(role control.Role) string {
	var r struct {
		Token string `json:"token"`
	}
	m.call("POST", "/v1/tokens", map[string]string{"role": string(role), "ttl": "10m"}, &r)
	return r.Token
}

// joinAndBeat joins a listening role and heartbeats it once with its
// address, so that protection can pick it; it returns the join directory.
func (m *managed) joinAndBeat(role control.Role, name, addr string) string {
	m.t.Helper()
	dir := m.t.TempDir()
	if _, err := trust.Join(context.Background(), trust.JoinOptions{ServerURL: m.url, Token: m.token(role), Role: role, Name: name, Address: addr, Dir: dir, Hosts: []string{"127.0.0.1"}}); err != nil {
		m.t.Fatalf("join %s: %v", role, err)
	}
	comp, err := client.NewComponent(m.url, dir)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := comp.Heartbeat(context.Background(), api.HeartbeatRequest{Version: "test", Address: addr}); err != nil {
		m.t.Fatalf("heartbeat %s: %v", role, err)
	}
	return dir
}

func (m *managed) machine() (control.Machine, bool) {
	var ms []control.Machine
	m.call("GET", "/v1/machines", nil, &ms)
	for _, x := range ms {
		if x.Name == "test01" {
			return x, true
		}
	}
	return control.Machine{}, false
}

// protect protects the machine and waits until the agent ships to the
// process server and the server has it protected.
func (m *managed) protect() {
	m.t.Helper()
	waitUntil(m.t, "the machine reported", func() bool { _, ok := m.machine(); return ok })
	m.call("POST", "/v1/machines/test01/protect", map[string]string{"group": "g"}, nil)
	waitUntil(m.t, "the agent protected, the server told", func() bool {
		st := m.agent.Status()
		x, _ := m.machine()
		return st.Replication.State == ReplProtected && x.State == control.StateProtected
	})
	if st := m.agent.Status(); st.Control.ProcessServer == nil || st.Control.ProcessServer.ID != m.processID || st.Control.PointInterval != "1s" {
		m.t.Fatalf("control status after protect: %+v", st.Control)
	}
}

// write writes n random-ish bytes at off through NBD and flushes.
func (m *managed) write(off int64, n int, fill byte) {
	m.t.Helper()
	c, err := nbd.Dial(context.Background(), "unix", m.agent.cfg.Listen.Unix, "disk0", nbd.ClientOptions{})
	if err != nil {
		m.t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteAt(bytes.Repeat([]byte{fill}, n), off); err != nil {
		m.t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		m.t.Fatal(err)
	}
}

// applied waits until the master target applied everything written.
func (m *managed) applied() {
	m.t.Helper()
	want := m.agent.Machine().Stats().Pos.Seq
	waitUntil(m.t, fmt.Sprintf("seq %d applied at the master target", want), func() bool {
		return m.agent.Status().Replication.Applied.Seq >= want
	})
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The life cycle of a managed agent: it reports its machine, ships
// where protection says with its joined identity, stops shipping when
// unprotected (capture goes on), and after protection again sends only
// what differs.
func TestManagedAgentLifeCycle(t *testing.T) {
	m := startManaged(t)
	waitUntil(t, "the machine reported to the server", func() bool {
		x, ok := m.machine()
		return ok && x.Replication.State == ReplIdle && len(x.Disks) == 1 && x.Disks[0].Size == 8<<20 && x.ID == m.agent.Machine().ID()
	})
	if st := m.agent.Status(); st.Control == nil || st.Control.LastHeartbeat == "" || st.Control.Protected || !strings.HasPrefix(st.Control.Identity, "agent/") {
		t.Fatalf("control status before protection: %+v", st.Control)
	}
	// GET /status carries it under "control".
	resp, err := http.Get("http://" + m.agent.StatusAddr().String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || !bytes.Contains(doc["control"], []byte(`"server": "`+m.url+`"`)) {
		t.Fatalf("GET /status: %v, control %s", err, doc["control"])
	}

	m.protect()
	m.write(1<<20, 256<<10, 0xa1)
	m.applied()
	waitUntil(t, "the replication report at the server", func() bool {
		x, _ := m.machine()
		return x.Replication.State == ReplProtected && x.Replication.RPOSeconds >= 0 && !x.Replication.LastPointAt.IsZero()
	})

	before := m.agent.Status().Replication

	// Unprotect: shipping stops, capture goes on.
	m.call("POST", "/v1/machines/test01/unprotect", map[string]any{}, nil)
	waitUntil(t, "the agent idle", func() bool { return m.agent.Status().Replication.State == ReplIdle })
	sent := m.agent.Status().Replication.SentSegments
	m.write(4<<20, 128<<10, 0xb2)
	if err := m.agent.Machine().SealActive(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	st := m.agent.Status()
	if st.Replication.SentSegments != sent || st.Replication.Server != "" || st.Control.Protected {
		t.Fatalf("unprotected agent still ships: %+v", st.Replication)
	}
	if st.Capture.Pos.Seq <= st.Replication.Durable.Seq || st.Capture.JournalBytes == 0 {
		t.Fatalf("capture did not go on while unprotected: capture %+v, durable %v", st.Capture.Pos, st.Replication.Durable)
	}

	// Protect again: the journal kept while unprotected continues the
	// replica's, so it is shipped as it is, with no comparison and no copy.
	m.protect()
	m.applied()
	after := m.agent.Status().Replication
	if after.ComparedAt != before.ComparedAt || after.SentSegments <= sent {
		t.Fatalf("protection again: compared at %s (before %s), sent %d segments (before %d): want the journal shipped, no comparison",
			after.ComparedAt, before.ComparedAt, after.SentSegments, sent)
	}
}

// A managed agent that was shipping keeps shipping when the
// configuration server goes away: the data path does not depend on it.
func TestManagedAgentShipsWithoutServer(t *testing.T) {
	m := startManaged(t)
	m.protect()
	m.write(0, 64<<10, 0xc3)
	m.applied()
	m.stopServer()
	waitUntil(t, "the agent to notice the server is gone", func() bool { return m.agent.Status().Control.LastError != "" })
	for i := range 4 {
		m.write(int64(i)<<20, 128<<10, byte(i))
		m.applied()
	}
	if st := m.agent.Status(); st.Replication.State != ReplProtected || !st.Control.Protected {
		t.Fatalf("without the server: replication %s, control %+v", st.Replication.State, st.Control)
	}
	// A restart while the server is away: the agent ships by the desired
	// state it kept.
	m.restartAgent()
	m.write(5<<20, 64<<10, 0xd4)
	m.applied()
	if st := m.agent.Status(); !st.Control.Protected || st.Control.ProcessServer == nil || st.Control.ProcessServer.ID != m.processID {
		t.Fatalf("restarted without the server: control %+v", st.Control)
	}
}

// restartAgent stops the agent and starts it again on the same
// configuration and state.
func (m *managed) restartAgent() {
	m.t.Helper()
	ta := m.agent
	ta.stop(m.t)
	a, err := New(context.Background(), ta.cfg, slog.New(slog.NewTextHandler(testWriter{m.t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		m.t.Fatal(err)
	}
	ta.Agent = a
	var ctx context.Context
	ctx, ta.cancel = context.WithCancel(context.Background())
	go func() { ta.done <- a.Run(ctx) }()
}

// The agent refuses a process server the configuration server revoked:
// its TLS check consults the revocation list it fetches.
func TestManagedPeerRefusesRevoked(t *testing.T) {
	m := startManaged(t)
	var set trust.RevocationSet
	p := managedPeer(m.processAt, m.processID, m.agentDir, &set)
	dial := func() error {
		tc, err := p.tls()
		if err != nil {
			return err
		}
		c, err := tls.Dial("tcp", m.processAt, tc)
		if err == nil {
			err = c.Handshake()
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	set.Set(trust.RevokedList{At: time.Now(), Servers: []trust.RevokedServer{{Role: control.RoleProcess, ID: m.processID}}}.Revocations())
	if err := dial(); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked process server: %v, want a refusal saying revoked", err)
	}
}

// A failover at the server raises the machine's epoch: the agent learns it
// from its desired state and stops shipping for good ("fenced"), before
// any segment of its old epoch could reach the master target.
func TestManagedAgentFencedByFailover(t *testing.T) {
	m := startManaged(t)
	waitUntil(t, "the machine reported to the server", func() bool { _, ok := m.machine(); return ok })
	m.protect()
	m.write(1<<20, 64<<10, 0xc3)
	m.applied()
	waitUntil(t, "the server to see the machine protected", func() bool {
		x, _ := m.machine()
		return x.Replication.State == ReplProtected
	})
	// The server raises the epoch (the failover's master target side is
	// not part of this test: the target here is not managed).
	m.call("POST", "/v1/machines/test01/failover", map[string]any{"point": "latest"}, nil)
	waitUntil(t, "the agent fenced", func() bool { return m.agent.Status().Replication.State == ReplFenced })
	sent := m.agent.Status().Replication.SentSegments
	m.write(2<<20, 64<<10, 0xd4)
	if err := m.agent.Machine().SealActive(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	st := m.agent.Status()
	if st.Replication.State != ReplFenced || st.Replication.SentSegments != sent {
		t.Fatalf("a fenced agent shipped: %+v", st.Replication)
	}
	if !strings.Contains(st.Replication.LastError, "failed over") {
		t.Errorf("last error %q does not say the machine was failed over", st.Replication.LastError)
	}
}
