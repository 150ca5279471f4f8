package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/standby-dr/standby/internal/api"
	pb "github.com/standby-dr/standby/internal/api/componentpb"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// callTimeout bounds a unary call whose context has no earlier deadline:
// a component's loops must not hang on a server that stopped answering.
const callTimeout = 30 * time.Second

// Component is a joined agent's, process server's or master target's
// connection to the configuration server: gRPC (componentpb) over mutual
// TLS with the certificate `standby ROLE join` wrote, trusting only the
// deployment's CA. Refusals come back as *Error with the status the
// HTTP/JSON API gives for them (404, 409, ...), so callers test one kind
// of error.
type Component struct {
	conn *grpc.ClientConn
	rpc  pb.ComponentsClient
	id   trust.Identity
}

// NewComponent connects as the identity joined into dir (trust.Load).
// server is the API's URL, https://HOST:PORT. The connection is made at
// the first call, and again after it breaks.
func NewComponent(server, dir string) (*Component, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server %q: want https://HOST:PORT (components call the server over mutual TLS)", server)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	l, err := trust.Load(dir)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: l.Roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			// Read again at each handshake: a renewal replaces the files.
			if nl, err := trust.Load(dir); err == nil {
				return &nl.Cert, nil
			}
			return &l.Cert, nil
		}}
	conn, err := grpc.NewClient("dns:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		// A watch is quiet for as long as nothing changes: pings find a
		// connection that died without a word.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: false}))
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", server, err)
	}
	return &Component{conn: conn, rpc: pb.NewComponentsClient(conn), id: l.Identity}, nil
}

// Identity is who this component is.
func (c *Component) Identity() trust.Identity { return c.id }

// Close closes the connection; calls in progress end.
func (c *Component) Close() error { return c.conn.Close() }

// Heartbeat says the component is alive, with its version, address and
// capacity.
func (c *Component) Heartbeat(ctx context.Context, h api.HeartbeatRequest) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.rpc.Heartbeat(ctx, &pb.HeartbeatRequest{Version: h.Version, Address: h.Address, Capacity: pb.FromCapacity(h.Capacity)})
	return callError("heartbeat", err)
}

// Report sends an agent's machine report and returns the machine as the
// server holds it.
func (c *Component) Report(ctx context.Context, r api.AgentReport) (control.Machine, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	rsp, err := c.rpc.ReportMachine(ctx, &pb.ReportMachineRequest{Id: r.ID, Name: r.Name, Disks: pb.FromDisks(r.Disks), Replication: pb.FromReplication(r.Replication), Drain: pb.FromDrainReport(r.Drain), Barrier: pb.FromBarrierReport(r.Barrier)})
	if err != nil {
		return control.Machine{}, callError("report machine", err)
	}
	return pb.ToMachine(rsp.GetMachine()), nil
}

// Points sends a master target's catalogue of one machine's points.
func (c *Component) Points(ctx context.Context, r api.PointsReport) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.rpc.ReportPoints(ctx, &pb.ReportPointsRequest{Machine: r.Machine, Points: pb.FromPoints(r.Points)})
	return callError("report points", err)
}

// Recovery sends a master target's report of a machine's test failover.
func (c *Component) Recovery(ctx context.Context, r api.RecoveryReport) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := &pb.ReportRecoveryRequest{Machine: r.Machine, TestId: r.TestID, FailoverId: r.FailoverID, ReverseId: r.ReverseID}
	switch {
	case r.Failover != nil:
		req.Failover = pb.FromFailoverReport(*r.Failover)
	case r.Reverse != nil:
		req.Reverse = pb.FromReverseReport(r.Reverse)
	default:
		req.Test = pb.FromTestReport(r.Test)
	}
	_, err := c.rpc.ReportRecovery(ctx, req)
	return callError("report recovery", err)
}

// Desired returns the component's desired state: at once when its version
// differs from have (or have is ""), else when it changes or wait
// passes (a long poll over a WatchDesired stream; wait at most
// api.MaxWait).
func (c *Component) Desired(ctx context.Context, have string, wait time.Duration) (api.Desired, error) {
	if wait < 0 || wait > api.MaxWait {
		return api.Desired{}, fmt.Errorf("desired state: wait %s: want 0s to %s", wait, api.MaxWait)
	}
	ctx, cancel := context.WithTimeout(ctx, wait+callTimeout)
	defer cancel()
	// Asking with have="" makes the server send the current state at
	// once: it is the answer when nothing changes within wait.
	stream, err := c.rpc.WatchDesired(ctx, &pb.WatchDesiredRequest{})
	if err != nil {
		return api.Desired{}, callError("desired state", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return api.Desired{}, callError("desired state", err)
	}
	d := api.DesiredFromPB(first)
	if have == "" || d.Version != have {
		return d, nil
	}
	var waited atomic.Bool
	t := time.AfterFunc(wait, func() { waited.Store(true); cancel() })
	defer t.Stop()
	next, err := stream.Recv()
	switch {
	case err == nil:
		return api.DesiredFromPB(next), nil
	case waited.Load():
		return d, nil
	}
	return api.Desired{}, callError("desired state", err)
}

// Watch calls fn with the component's desired state when it differs from
// have, then each time it changes, until ctx ends, the stream breaks
// (its error) or fn returns an error (that one).
func (c *Component) Watch(ctx context.Context, have string, fn func(api.Desired) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.WatchDesired(ctx, &pb.WatchDesiredRequest{Have: have})
	if err != nil {
		return callError("watch desired state", err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return callError("watch desired state", err)
		}
		if err := fn(api.DesiredFromPB(m)); err != nil {
			return err
		}
	}
}

// callError is err of call as the API's refusal (*Error) when the server
// refused, wrapping the context's error when the call was cancelled or
// timed out, else as an error saying the server was not reached.
func callError(call string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", call, err)
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("%s: %w", call, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %s: %w", call, st.Message(), context.DeadlineExceeded)
	case codes.Unavailable, codes.Unknown:
		return fmt.Errorf("%s: configuration server not reached: %s", call, st.Message())
	}
	return fmt.Errorf("%s: %w", call, &Error{Status: pb.HTTPStatus(st.Code()), Message: st.Message()})
}

// Action reports an action the component's desired state gave it.
func (c *Component) Action(ctx context.Context, r api.ActionReport) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.rpc.ReportAction(ctx, &pb.ReportActionRequest{Id: r.ID, Ok: r.OK, Output: r.Output, Error: r.Error})
	return callError("report action", err)
}
