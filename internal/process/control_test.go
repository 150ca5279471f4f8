package process

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/server"
	"github.com/standby-dr/standby/internal/target"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// configServer is a real configuration server on loopback and its first
// admin's API client.
type configServer struct {
	t     *testing.T
	url   string
	admin *client.Client
}

func startConfigServer(t *testing.T) *configServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	cfg := server.Defaults()
	cfg.Listen, cfg.DataDir, cfg.LogLevel = "127.0.0.1:0", dir, "error"
	s, err := server.New(ctx, server.Options{Config: cfg, Version: "test", AssessEvery: time.Hour, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	cs := &configServer{t: t, url: "https://" + ln.Addr().String()}
	cs.admin, err = client.New(client.Options{Server: cs.url, Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, "ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func (cs *configServer) call(method, path string, body, out any) {
	cs.t.Helper()
	if err := cs.admin.Do(context.Background(), method, path, body, out); err != nil {
		cs.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// join joins a component of role into a new directory; listening roles
// get 127.0.0.1 in their certificates and register addr.
func (cs *configServer) join(role control.Role, name, addr string) (string, trust.Identity) {
	cs.t.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	cs.call("POST", "/v1/tokens", map[string]string{"role": string(role), "ttl": "10m"}, &tok)
	dir := cs.t.TempDir()
	id, err := trust.Join(context.Background(), trust.JoinOptions{ServerURL: cs.url, Token: tok.Token, Role: role, Name: name, Address: addr, Dir: filepath.Join(dir, "id"), Hosts: []string{"127.0.0.1"}})
	if err != nil {
		cs.t.Fatalf("join %s %s: %v", role, name, err)
	}
	return filepath.Join(dir, "id"), id
}

func (cs *configServer) component(dir string) *client.Component {
	cs.t.Helper()
	c, err := client.NewComponent(cs.url, dir)
	if err != nil {
		cs.t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var testMachine = [16]byte{0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// segmentWithBookmark is one 4 KiB write and an app-consistent bookmark
// labelled label, after prev.
func segmentWithBookmark(t *testing.T, prev journal.Pos, label string) ([]byte, journal.Pos) {
	t.Helper()
	var buf bytes.Buffer
	now := time.Now().UnixNano()
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: testMachine, Epoch: 1, FirstSeq: prev.Seq + 1, PrevChain: prev.Chain, Created: now})
	if err != nil {
		t.Fatal(err)
	}
	recs := []journal.Record{
		{Kind: journal.KindWrite, Offset: 4096, Length: 4096, Time: now, Data: bytes.Repeat([]byte{byte(prev.Seq + 1)}, 4096)},
		{Kind: journal.KindBookmark, Flags: journal.FlagAppConsistent, Time: now, Data: []byte(label)},
	}
	for i := range recs {
		if err := w.Append(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := w.Seal(now)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), tr.Pos()
}

// A managed process server: it heartbeats its address, takes an agent
// with a joined certificate, and forwards the machine to the master target
// its desired state names (a real managed master target), whose points
// then reach the server's catalogue.
func TestManagedProcessServer(t *testing.T) {
	cs := startConfigServer(t)
	ctx := context.Background()
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taddr, paddr := tln.Addr().String(), pln.Addr().String()
	tdir, tid := cs.join(control.RoleTarget, "mt1", taddr)
	pdir, pid := cs.join(control.RoleProcess, "ps1", paddr)
	adir, _ := cs.join(control.RoleAgent, "host1", "")

	tg, err := target.New(ctx, target.Options{DataDir: t.TempDir(), Name: "mt1",
		Control: &target.Control{Server: cs.url, Identity: tdir, Address: taddr, Heartbeat: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	go tg.Serve(ctx, tln)
	ps, err := New(Options{CacheDir: t.TempDir(), Quota: 256 << 20, Name: "ps1",
		Control: &Control{Server: cs.url, Identity: pdir, Address: paddr, Heartbeat: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	go ps.Serve(ctx, pln)

	waitFor(t, "the process server's heartbeat", 10*time.Second, func() bool {
		var srv control.Server
		cs.call("GET", "/v1/servers/"+pid.ID, nil, &srv)
		return srv.Address == paddr && srv.Capacity.FreeBytes > 0
	})
	waitFor(t, "the target's heartbeat", 10*time.Second, func() bool {
		var srv control.Server
		cs.call("GET", "/v1/servers/"+tid.ID, nil, &srv)
		return srv.Address == taddr
	})

	id := journal.FormatMachineID(testMachine)
	if _, err := cs.component(adir).Report(ctx, api.AgentReport{ID: id, Name: "web01", Disks: []control.Disk{{Name: "vda", Size: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	cs.call("POST", "/v1/groups", map[string]any{"name": "web", "policy": map[string]any{"point_interval": "5s", "compression": "best"}}, nil)
	cs.call("POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, nil)

	// The agent, with its joined certificate, speaking the agent protocol.
	al, err := trust.Load(adir)
	if err != nil {
		t.Fatal(err)
	}
	tc := trust.ClientTLS(al.Roots, al.Cert, trust.Identity{Role: control.RoleProcess, ID: pid.ID})
	var c *wire.Conn
	var opened wire.Opened
	waitFor(t, "the process server to open the machine", 15*time.Second, func() bool {
		if c != nil {
			c.Close()
		}
		c, err = wire.Dial(ctx, paddr, tc, wire.Hello{Role: "agent", Stream: wire.StreamData, Name: "web01"}, wire.Options{})
		if err != nil {
			t.Fatalf("a joined agent cannot reach the managed process server: %v", err)
		}
		if err := c.SendJSON(wire.TypeOpen, wire.Open{Machine: id, Name: "web01", Epoch: 1, Disks: []wire.DiskInfo{{Name: "vda", Size: 1 << 20}}}); err != nil {
			t.Fatal(err)
		}
		return c.Expect(wire.TypeOpened, &opened) == nil
	})
	defer c.Close()
	pos := opened.Durable
	for _, label := range []string{"first", "second"} {
		var seg []byte
		seg, pos = segmentWithBookmark(t, pos, label)
		if err := c.Send(wire.TypeSegment, seg); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var a wire.Ack
		if err := c.Expect(wire.TypeAck, &a); err != nil {
			t.Fatal(err)
		}
		if a.Applied.Seq >= pos.Seq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not applied at the master target: %+v", ps.Status())
		}
	}
	rep, _, ok := tg.Lookup(id)
	if !ok || len(rep.Points()) != 2 {
		t.Fatalf("the master target the desired state named has no replica with 2 points (found %v)", ok)
	}
	waitFor(t, "the points in the catalogue", 10*time.Second, func() bool {
		var body struct {
			Points []control.RecoveryPoint `json:"points"`
		}
		cs.call("GET", "/v1/machines/web01/points", nil, &body)
		return len(body.Points) == 2
	})
	if st := ps.Status(); len(st.Machines) != 1 || !st.Machines[0].Connected {
		t.Fatalf("process server status: %+v", st)
	}
}
