package process

import (
	"context"
	"github.com/standby-dr/standby/internal/server/servertest"
	"net"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/target"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// A managed process server: it heartbeats its address, takes an agent
// with a joined certificate, and forwards the machine to the master target
// its desired state names (a real managed master target), whose points
// then reach the server's catalogue.
func TestManagedProcessServer(t *testing.T) {
	cs := servertest.Start(t)
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
	tdir, tid := cs.Join(control.RoleTarget, "mt1", taddr)
	pdir, pid := cs.Join(control.RoleProcess, "ps1", paddr)
	adir, _ := cs.Join(control.RoleAgent, "host1", "")

	tg, err := target.New(ctx, target.Options{DataDir: t.TempDir(), Name: "mt1",
		Control: &target.Control{Server: cs.URL, Identity: tdir, Address: taddr, Heartbeat: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	go tg.Serve(ctx, tln)
	ps, err := New(Options{CacheDir: t.TempDir(), Quota: 256 << 20, Name: "ps1",
		Control: &Control{Server: cs.URL, Identity: pdir, Address: paddr, Heartbeat: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	go ps.Serve(ctx, pln)

	servertest.WaitFor(t, "the process server's heartbeat", 10*time.Second, func() bool {
		var srv control.Server
		cs.Call("GET", "/v1/servers/"+pid.ID, nil, &srv)
		return srv.Address == paddr && srv.Capacity.FreeBytes > 0
	})
	servertest.WaitFor(t, "the target's heartbeat", 10*time.Second, func() bool {
		var srv control.Server
		cs.Call("GET", "/v1/servers/"+tid.ID, nil, &srv)
		return srv.Address == taddr
	})

	id := journal.FormatMachineID(servertest.Machine)
	if _, err := cs.Component(adir).Report(ctx, api.AgentReport{ID: id, Name: "web01", Disks: []control.Disk{{Name: "vda", Size: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	cs.Call("POST", "/v1/groups", map[string]any{"name": "web", "policy": map[string]any{"point_interval": "5s", "compression": "best"}}, nil)
	cs.Call("POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, nil)

	// The agent, with its joined certificate, speaking the agent protocol.
	al, err := trust.Load(adir)
	if err != nil {
		t.Fatal(err)
	}
	tc := trust.ClientTLS(al.Roots, al.Cert, trust.Identity{Role: control.RoleProcess, ID: pid.ID})
	var c *wire.Conn
	var opened wire.Opened
	servertest.WaitFor(t, "the process server to open the machine", 15*time.Second, func() bool {
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
		seg, pos = servertest.SegmentWithBookmark(t, pos, label)
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
	servertest.WaitFor(t, "the points in the catalogue", 10*time.Second, func() bool {
		var body struct {
			Points []control.RecoveryPoint `json:"points"`
		}
		cs.Call("GET", "/v1/machines/web01/points", nil, &body)
		return len(body.Points) == 2
	})
	if st := ps.Status(); len(st.Machines) != 1 || !st.Machines[0].Connected {
		t.Fatalf("process server status: %+v", st)
	}
}
