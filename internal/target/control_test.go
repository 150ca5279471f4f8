package target

import (
	"context"
	"github.com/standby-dr/standby/internal/server/servertest"
	"net"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// A managed master target: its listener takes only process servers'
// joined certificates, it heartbeats its address and capacity, and the
// points of a machine assigned to it reach the server's catalogue after
// an apply.
func TestManagedTarget(t *testing.T) {
	cs := servertest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	tdir, tid := cs.Join(control.RoleTarget, "mt1", addr)
	pdir, _ := cs.Join(control.RoleProcess, "ps1", "127.0.0.1:1")
	adir, _ := cs.Join(control.RoleAgent, "host1", "")

	tg, err := New(context.Background(), Options{DataDir: t.TempDir(), Name: "mt1",
		Control: &Control{Server: cs.URL, Identity: tdir, Address: addr, Heartbeat: 200 * time.Millisecond, Version: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	go tg.Serve(context.Background(), ln)

	// Its heartbeat arrives with its address.
	servertest.WaitFor(t, "the target's heartbeat", 10*time.Second, func() bool {
		var srv control.Server
		cs.Call("GET", "/v1/servers/"+tid.ID, nil, &srv)
		return srv.Address == addr && !srv.HeartbeatAt.IsZero() && srv.Capacity.FreeBytes > 0
	})

	// The machine is assigned to it: reported by its agent, protected in
	// a group (the process server must be alive too).
	id := journal.FormatMachineID(servertest.Machine)
	ctx := context.Background()
	if err := cs.Component(pdir).Heartbeat(ctx, api.HeartbeatRequest{Version: "test", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Component(adir).Report(ctx, api.AgentReport{ID: id, Name: "web01", Disks: []control.Disk{{Name: "vda", Size: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	cs.Call("POST", "/v1/groups", map[string]any{"name": "web", "policy": map[string]any{"point_interval": "5s"}}, nil)
	cs.Call("POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, nil)

	// A joined agent may not open a data stream to the target.
	al, err := trust.Load(adir)
	if err != nil {
		t.Fatal(err)
	}
	want := trust.Identity{Role: control.RoleTarget, ID: tid.ID}
	if c, err := wire.Dial(ctx, addr, trust.ClientTLS(al.Roots, al.Cert, want), wire.Hello{Role: "agent", Stream: wire.StreamData}, wire.Options{}); err == nil {
		err = c.SendJSON(wire.TypeOpen, wire.Open{Machine: id, Epoch: 1, Disks: []wire.DiskInfo{{Name: "vda", Size: 1 << 20}}})
		if err == nil {
			err = c.Expect(wire.TypeOpened, &wire.Opened{})
		}
		c.Close()
		if err == nil {
			t.Fatal("the managed target took a data stream from an agent's certificate")
		}
	}

	// The joined process server streams two segments with bookmarks.
	pl, err := trust.Load(pdir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := wire.Dial(ctx, addr, trust.ClientTLS(pl.Roots, pl.Cert, want), wire.Hello{Role: "process", Stream: wire.StreamData, Name: "ps1"}, wire.Options{})
	if err != nil {
		t.Fatalf("a joined process server cannot reach the managed target: %v", err)
	}
	defer c.Close()
	if c.Peer.Role != "target" {
		t.Fatalf("the peer is a %q", c.Peer.Role)
	}
	if err := c.SendJSON(wire.TypeOpen, wire.Open{Machine: id, Name: "web01", Epoch: 1, Disks: []wire.DiskInfo{{Name: "vda", Size: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	var opened wire.Opened
	if err := c.Expect(wire.TypeOpened, &opened); err != nil {
		t.Fatal(err)
	}
	packer, err := segpack.NewPacker(segpack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pos := opened.Applied
	for _, label := range []string{"first", "second"} {
		var seg []byte
		seg, pos = servertest.SegmentWithBookmark(t, pos, label)
		packed, _, err := packer.Pack(nil, seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Send(wire.TypePacked, packed); err != nil {
			t.Fatal(err)
		}
	}
	for {
		var a wire.Ack
		if err := c.Expect(wire.TypeAck, &a); err != nil {
			t.Fatal(err)
		}
		if a.Applied.Seq >= pos.Seq {
			break
		}
	}

	// The points reach the server's catalogue.
	var pts []control.RecoveryPoint
	servertest.WaitFor(t, "the points in the catalogue", 10*time.Second, func() bool {
		var body struct {
			Points []control.RecoveryPoint `json:"points"`
		}
		cs.Call("GET", "/v1/machines/web01/points", nil, &body)
		pts = body.Points
		return len(pts) == 2
	})
	labels := map[string]bool{}
	for _, p := range pts {
		labels[p.Label] = p.AppConsistent && p.Seq > 0 && !p.Time.IsZero()
	}
	if !labels["first"] || !labels["second"] {
		t.Fatalf("catalogue: %+v", pts)
	}
	var srv control.Server
	cs.Call("GET", "/v1/servers/"+tid.ID, nil, &srv)
	servertest.WaitFor(t, "capacity with the machine", 5*time.Second, func() bool {
		cs.Call("GET", "/v1/servers/"+tid.ID, nil, &srv)
		return srv.Capacity.Machines == 1
	})
}
