package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	pb "github.com/standby-dr/standby/internal/api/componentpb"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// rpc is a raw gRPC client of the components' service with tc, to see
// the codes the server answers with.
func (d *deployment) rpc(tc *tls.Config) pb.ComponentsClient {
	d.t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(d.url, "https://"), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { conn.Close() })
	return pb.NewComponentsClient(conn)
}

// rpc is a raw gRPC client with the component's certificate.
func (c *component) rpc() pb.ComponentsClient {
	c.d.t.Helper()
	l, err := trust.Load(c.dir)
	if err != nil {
		c.d.t.Fatal(err)
	}
	return c.d.rpc(&tls.Config{Certificates: []tls.Certificate{l.Cert}, RootCAs: l.Roots, MinVersion: tls.VersionTLS13})
}

// client is the component's client.Component (gRPC).
func (c *component) client() *client.Component {
	c.d.t.Helper()
	cc, err := client.NewComponent(c.d.url, c.dir)
	if err != nil {
		c.d.t.Fatal(err)
	}
	c.d.t.Cleanup(func() { cc.Close() })
	return cc
}

// wantCode fails unless err is a gRPC status of code whose message holds
// text.
func wantCode(t *testing.T, what string, err error, code codes.Code, text string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), text) {
		t.Errorf("%s: %v, want %s saying %q", what, err, code, text)
	}
}

// wantStatus fails unless err is the client's *client.Error of status.
func wantStatus(t *testing.T, what string, err error, status int, text string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != status || !strings.Contains(ce.Message, text) {
		t.Errorf("%s: %v, want HTTP-class %d saying %q", what, err, status, text)
	}
}

// Every refusal of the HTTP component endpoints, over gRPC with real
// TLS: the same checks, the codes that match the statuses, the same
// messages.
func TestGRPCRefusals(t *testing.T) {
	d := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	agent := d.join(control.RoleAgent, "host1", "")
	other := d.join(control.RoleAgent, "host2", "")
	target := d.join(control.RoleTarget, "mt1", "127.0.0.1:9830")
	ar, tr := agent.rpc(), target.rpc()

	// No certificate: the handshake passes (joins come without one), the
	// call does not.
	anon := d.rpc(&tls.Config{RootCAs: d.s.CA().Pool(), MinVersion: tls.VersionTLS13})
	_, err := anon.Heartbeat(ctx, &pb.HeartbeatRequest{Version: "t"})
	wantCode(t, "heartbeat without a certificate", err, codes.Unauthenticated, "certificate")
	// A certificate of another CA: no connection at all.
	ca2, err := trust.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := ca2.IssueServerCert([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	alien := d.rpc(&tls.Config{RootCAs: d.s.CA().Pool(), Certificates: []tls.Certificate{stranger}, MinVersion: tls.VersionTLS13})
	if _, err := alien.Heartbeat(ctx, &pb.HeartbeatRequest{Version: "t"}); status.Code(err) == codes.OK {
		t.Errorf("a certificate of another CA was answered")
	}

	// The wrong role, through the raw service and the components' client.
	_, err = ar.ReportPoints(ctx, &pb.ReportPointsRequest{Machine: "x"})
	wantCode(t, "agent reporting points", err, codes.PermissionDenied, "for target")
	wantStatus(t, "agent's client reporting points", agent.client().Points(ctx, api.PointsReport{Machine: "x"}), http.StatusForbidden, "for target")
	_, err = tr.ReportMachine(ctx, &pb.ReportMachineRequest{Id: "m1", Name: "web01", Disks: []*pb.Disk{{Name: "vda", Size: 1}}})
	wantCode(t, "target reporting a machine", err, codes.PermissionDenied, "for agent")

	// Malformed input.
	_, err = ar.Heartbeat(ctx, &pb.HeartbeatRequest{Version: "t", Capacity: &pb.Capacity{Machines: -1}})
	wantCode(t, "negative capacity", err, codes.InvalidArgument, "negative")
	for _, bad := range []*pb.ReportMachineRequest{
		{Id: "m1", Name: "", Disks: []*pb.Disk{{Name: "vda", Size: 1}}},
		{Id: "m 1!", Name: "web01", Disks: []*pb.Disk{{Name: "vda", Size: 1}}},
		{Id: "m1", Name: "web01"},
		{Id: "m1", Name: "web01", Disks: []*pb.Disk{nil}},
		{Id: "m1", Name: "web01", Disks: []*pb.Disk{{Name: "vda", Size: -5}}},
	} {
		_, err = ar.ReportMachine(ctx, bad)
		wantCode(t, "report "+bad.String(), err, codes.InvalidArgument, "")
	}
	s, err := ar.WatchDesired(ctx, &pb.WatchDesiredRequest{Have: strings.Repeat("x", 100)})
	if err == nil {
		_, err = s.Recv()
	}
	wantCode(t, "watch with a 100-character version", err, codes.InvalidArgument, "have")

	// Not found and conflicts: the statuses the roles act on.
	_, err = tr.ReportPoints(ctx, &pb.ReportPointsRequest{Machine: "m-nowhere"})
	wantCode(t, "points of an unknown machine", err, codes.NotFound, "")
	wantStatus(t, "client: points of an unknown machine", target.client().Points(ctx, api.PointsReport{Machine: "m-nowhere"}), http.StatusNotFound, "")
	m, err := agent.client().Report(ctx, api.AgentReport{ID: "m-web01", Name: "web01", Disks: []control.Disk{{Name: "vda", Size: 1 << 30}}})
	if err != nil || m.ID != "m-web01" || m.Agent != agent.id.ID || m.State != control.StateUnprotected || len(m.Disks) != 1 {
		t.Fatalf("first report: %+v, %v", m, err)
	}
	_, err = other.rpc().ReportMachine(ctx, &pb.ReportMachineRequest{Id: "m-web01", Name: "web01", Disks: []*pb.Disk{{Name: "vda", Size: 1}}})
	wantCode(t, "another agent reporting the machine", err, codes.FailedPrecondition, "reported by agent")
	_, err = tr.ReportPoints(ctx, &pb.ReportPointsRequest{Machine: "m-web01"})
	wantCode(t, "points of a machine not assigned here", err, codes.FailedPrecondition, "not replicated to this master target")

	// Revoked: the open watch ends at once, and every later call is
	// refused.
	watch, err := tr.WatchDesired(ctx, &pb.WatchDesiredRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := watch.Recv(); err != nil || len(first.GetMachines()) != 0 || first.GetVersion() == "" {
		t.Fatalf("target's first desired state: %v, %v", first, err)
	}
	start := time.Now()
	d.call(d.admin, "POST", "/v1/servers/"+target.id.ID+"/revoke", nil, nil)
	_, err = watch.Recv()
	wantCode(t, "the revoked target's watch", err, codes.PermissionDenied, "revoked")
	if time.Since(start) > 5*time.Second {
		t.Errorf("the revoked target's watch ended after %s", time.Since(start))
	}
	_, err = tr.Heartbeat(ctx, &pb.HeartbeatRequest{Version: "t"})
	wantCode(t, "revoked target's heartbeat", err, codes.PermissionDenied, "revoked")
	// The agent's calls go on.
	if _, err := ar.Heartbeat(ctx, &pb.HeartbeatRequest{Version: "t"}); err != nil {
		t.Errorf("agent's heartbeat after another server's revocation: %v", err)
	}
}

// WatchDesired sends the state at once, then wakes on protect and on
// unprotect; the components' client's long poll (Desired) runs on it and
// keeps the version the HTTP API gives.
func TestGRPCWatchDesiredWakesOnProtect(t *testing.T) {
	d := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	agent := d.join(control.RoleAgent, "host1", "")
	ps := d.join(control.RoleProcess, "ps1", "127.0.0.1:9820")
	mt := d.join(control.RoleTarget, "mt1", "127.0.0.1:9830")
	ac, pc, tc := agent.client(), ps.client(), mt.client()
	for _, hb := range []struct {
		c    *client.Component
		addr string
	}{{ac, ""}, {pc, "127.0.0.1:9820"}, {tc, "127.0.0.1:9830"}} {
		if err := hb.c.Heartbeat(ctx, api.HeartbeatRequest{Version: "t", Address: hb.addr, Capacity: control.Capacity{MaxMachines: 10, FreeBytes: 1 << 40}}); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
	}
	if _, err := ac.Report(ctx, api.AgentReport{ID: "m-web01", Name: "web01", Disks: []control.Disk{{Name: "vda", Size: 1 << 30}}}); err != nil {
		t.Fatal(err)
	}
	d.call(d.admin, "POST", "/v1/groups", map[string]any{"name": "web", "policy": map[string]any{"point_interval": "5s", "compression": "fastest"}}, nil)

	states := make(chan api.Desired, 8)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	watched := make(chan error, 1)
	go func() {
		watched <- ac.Watch(wctx, "", func(d api.Desired) error { states <- d; return nil })
	}()
	next := func(what string) api.Desired {
		t.Helper()
		select {
		case d := <-states:
			return d
		case err := <-watched:
			t.Fatalf("%s: the watch ended: %v", what, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no desired state within 10 s", what)
		}
		return api.Desired{}
	}
	empty := next("at once")
	if len(empty.Machines) != 0 || empty.Version == "" {
		t.Fatalf("desired state before protect: %+v", empty)
	}
	// Nothing changes: the long poll answers the same state after wait.
	if same, err := ac.Desired(ctx, empty.Version, 200*time.Millisecond); err != nil || same.Version != empty.Version {
		t.Fatalf("long poll with nothing changing: %+v, %v", same, err)
	}
	polled := make(chan api.Desired, 1)
	go func() {
		d, err := pc.Desired(ctx, empty.Version, 20*time.Second)
		if err != nil {
			t.Errorf("process server's long poll: %v", err)
		}
		polled <- d
	}()
	time.Sleep(100 * time.Millisecond) // the poll is waiting (a wake before it would answer it too)

	d.call(d.admin, "POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, nil)
	got := next("after protect")
	if len(got.Machines) != 1 || got.Version == empty.Version {
		t.Fatalf("desired state after protect: %+v", got)
	}
	dm := got.Machines[0]
	if dm.ID != "m-web01" || dm.Epoch != 1 || dm.Process == nil || dm.Process.ID != ps.id.ID || dm.Process.Address != "127.0.0.1:9820" ||
		dm.Target != nil || dm.Policy.PointInterval.D() != 5*time.Second || dm.Policy.Compression != "fastest" {
		t.Fatalf("agent's desired machine: %+v", dm)
	}
	// The same version and content as the HTTP API's.
	var viaHTTP api.Desired
	if err := jsonOf(agent.must("GET", "/v1/desired", nil, 200), &viaHTTP); err != nil || viaHTTP.Version != got.Version || viaHTTP.Machines[0].Policy != dm.Policy {
		t.Fatalf("HTTP desired state %+v (%v), gRPC %+v", viaHTTP, err, got)
	}
	select {
	case pd := <-polled:
		if len(pd.Machines) != 1 || pd.Machines[0].Target == nil || pd.Machines[0].Target.ID != mt.id.ID || pd.Machines[0].Process != nil {
			t.Fatalf("process server's desired state: %+v", pd)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the process server's long poll did not wake on protect")
	}

	d.call(d.admin, "POST", "/v1/machines/web01/unprotect", map[string]any{}, nil)
	if after := next("after unprotect"); len(after.Machines) != 0 || after.Version != empty.Version {
		t.Fatalf("desired state after unprotect: %+v (before protect: %s)", after, empty.Version)
	}
	stop()
	if err := <-watched; !errors.Is(err, context.Canceled) {
		t.Errorf("the watch ended with %v, want context.Canceled", err)
	}
}

func jsonOf(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// Stopping the server ends the watches at once: they do not hold the
// shutdown up, and the components see the stream break (and reconnect
// to the next server).
func TestGRPCShutdownEndsWatches(t *testing.T) {
	d := startServer(t)
	agent := d.join(control.RoleAgent, "host1", "")
	watch, err := agent.rpc().WatchDesired(context.Background(), &pb.WatchDesiredRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d.stop()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the server took %s to stop with a watch open", took)
	}
	if _, err := watch.Recv(); status.Code(err) == codes.OK {
		t.Errorf("the watch goes on after the server stopped")
	}
}
