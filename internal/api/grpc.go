package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/standby-dr/standby/internal/api/componentpb"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// The components' calls are a gRPC service (componentpb) served on the
// API's own listener: Handler sends HTTP/2 requests of content type
// application/grpc to it and everything else to the HTTP/JSON routes.
// Each RPC runs the same code as its HTTP/JSON twin (recordHeartbeat,
// reportMachine, reportPoints, awaitDesired) after the same
// authentication (authComponent), so the two cannot drift apart.

// maxMessage bounds a gRPC request: gRPC's own default, above the JSON
// API's 1 MiB because protobuf points are smaller than JSON ones and a
// master target sends all of a machine's points at once.
const maxMessage = 4 << 20

// rpcRoles says which roles may make each call.
var rpcRoles = map[string][]control.Role{
	pb.Components_Heartbeat_FullMethodName:      components,
	pb.Components_ReportMachine_FullMethodName:  agents,
	pb.Components_ReportPoints_FullMethodName:   targets,
	pb.Components_WatchDesired_FullMethodName:   components,
	pb.Components_ReportRecovery_FullMethodName: targets,
	pb.Components_ReportAction_FullMethodName:   {control.RoleProcess, control.RoleTarget},
}

// requestKey carries the HTTP request a gRPC call came in, for
// Options.Identify (its TLS state is the peer's certificate).
type requestKey struct{}

func (s *Server) newGRPC() *grpc.Server {
	g := grpc.NewServer(grpc.MaxRecvMsgSize(maxMessage),
		grpc.UnaryInterceptor(s.unaryAuth), grpc.StreamInterceptor(s.streamAuth))
	pb.RegisterComponentsServer(g, componentService{s: s})
	return g
}

// Handler is the API's http.Handler: the HTTP/JSON routes and the
// components' gRPC service.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			s.grpc.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestKey{}, r)))
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// StopStreams ends the gRPC calls in progress (desired-state watches
// last as long as their callers): an HTTP server's Shutdown waits for
// them otherwise. Components reconnect to the next server. After it the
// gRPC service refuses every call.
func (s *Server) StopStreams() { s.grpc.Stop() }

// authRPC authenticates the component making the call of ctx and
// returns ctx with it as the principal.
func (s *Server) authRPC(ctx context.Context, method string) (context.Context, error) {
	r, ok := ctx.Value(requestKey{}).(*http.Request)
	if !ok {
		return nil, status.Error(codes.Internal, "internal error: gRPC call served without its HTTP request (serve it through api.Server.Handler)")
	}
	roles, ok := rpcRoles[method]
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "no call %s", method)
	}
	id, err := s.authComponent(r.WithContext(ctx), roles)
	if err != nil {
		return nil, s.rpcError(method, err)
	}
	return context.WithValue(ctx, principalKey{}, principal{comp: id}), nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (rsp any, err error) {
	ctx, err = s.authRPC(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	defer s.recoverRPC(info.FullMethod, &err)
	rsp, err = h(ctx, req)
	if err != nil {
		return nil, s.rpcError(info.FullMethod, err)
	}
	return rsp, nil
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	ctx, err := s.authRPC(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	defer s.recoverRPC(info.FullMethod, &err)
	if err = h(srv, authedStream{ss, ctx}); err != nil {
		return s.rpcError(info.FullMethod, err)
	}
	return nil
}

// authedStream is a server stream whose context carries its principal.
type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a authedStream) Context() context.Context { return a.ctx }

// recoverRPC makes a panic in a call an Internal error and a log line,
// never a crashed server (as serve does for HTTP).
func (s *Server) recoverRPC(method string, err *error) {
	if v := recover(); v != nil {
		s.o.Log.Error("api call panicked", "rpc", method, "panic", v, "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "internal error: handler panicked: %v", v)
	}
}

// rpcError is err as a gRPC status with the message the HTTP API gives
// (statusOf decides the class). Faults of ours are logged, as serve
// logs 5xx; a caller that went away is not.
func (s *Server) rpcError(method string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err // made already (by gRPC or by authRPC)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	st := statusOf(err)
	code := pb.Code(st)
	if errors.Is(err, store.ErrExists) {
		code = codes.AlreadyExists
	}
	msg := err.Error()
	if st >= 500 {
		s.o.Log.Error("api call", "rpc", method, "err", err)
		if st == http.StatusInternalServerError {
			msg = "internal error: " + msg
		}
	}
	return status.Error(code, msg)
}

// componentService is the gRPC face of the component calls: it maps the
// messages and calls the shared implementations.
type componentService struct {
	pb.UnimplementedComponentsServer
	s *Server
}

func (c componentService) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	err := c.s.recordHeartbeat(ctx, HeartbeatRequest{Version: req.GetVersion(), Address: req.GetAddress(), Capacity: pb.ToCapacity(req.GetCapacity())})
	if err != nil {
		return nil, err
	}
	return &pb.HeartbeatResponse{}, nil
}

func (c componentService) ReportMachine(ctx context.Context, req *pb.ReportMachineRequest) (*pb.ReportMachineResponse, error) {
	m, err := c.s.reportMachine(ctx, AgentReport{ID: req.GetId(), Name: req.GetName(), Disks: pb.ToDisks(req.GetDisks()), Replication: pb.ToReplication(req.GetReplication()), Drain: pb.ToDrainReport(req.GetDrain()), Barrier: pb.ToBarrierReport(req.GetBarrier())})
	if err != nil {
		return nil, err
	}
	return &pb.ReportMachineResponse{Machine: pb.FromMachine(m)}, nil
}

func (c componentService) ReportPoints(ctx context.Context, req *pb.ReportPointsRequest) (*pb.ReportPointsResponse, error) {
	if err := c.s.reportPoints(ctx, PointsReport{Machine: req.GetMachine(), Points: pb.ToPoints(req.GetMachine(), req.GetPoints())}); err != nil {
		return nil, err
	}
	return &pb.ReportPointsResponse{}, nil
}

func (c componentService) ReportRecovery(ctx context.Context, req *pb.ReportRecoveryRequest) (*pb.ReportRecoveryResponse, error) {
	r := RecoveryReport{Machine: req.GetMachine(), TestID: req.GetTestId(), Test: pb.ToTestReport(req.GetTest()), FailoverID: req.GetFailoverId()}
	if req.GetFailover() != nil {
		f := pb.ToFailoverReport(req.GetFailover())
		r.Failover = &f
	}
	r.ReverseID, r.Reverse = req.GetReverseId(), pb.ToReverseReport(req.GetReverse())
	if err := c.s.reportRecovery(ctx, r); err != nil {
		return nil, err
	}
	return &pb.ReportRecoveryResponse{}, nil
}

// WatchDesired sends the caller's desired state when it differs from
// what the caller has, for as long as the caller listens. The caller is
// checked again after each round (at most MaxWait, or until a server is
// revoked), as a long poll is at each call: a revoked caller's stream
// ends with PermissionDenied.
func (c componentService) WatchDesired(req *pb.WatchDesiredRequest, stream grpc.ServerStreamingServer[pb.Desired]) error {
	ctx := stream.Context()
	r, _ := ctx.Value(requestKey{}).(*http.Request) // authRPC checked it is there
	comp := principalOf(ctx).comp
	have := req.GetHave()
	if len(have) > 64 {
		return errorf(http.StatusBadRequest, "have: %d characters; want the version of a desired state", len(have))
	}
	for {
		d, err := c.s.watchRound(ctx, comp, have)
		switch {
		case err == nil:
			if have == "" || d.Version != have {
				if err := stream.Send(DesiredToPB(d)); err != nil {
					return err
				}
				have = d.Version
			}
		case errors.Is(err, context.Canceled) && ctx.Err() == nil:
			// A server was revoked: perhaps the caller.
		default:
			return err
		}
		if _, err := c.s.authComponent(r.WithContext(ctx), components); err != nil {
			return fmt.Errorf("desired state: %w", err)
		}
	}
}

// watchRound is awaitDesired for up to MaxWait, cut short (an error) when
// a server is revoked.
func (s *Server) watchRound(ctx context.Context, comp *Identity, have string) (Desired, error) {
	revoked := s.revoked.wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-revoked:
			cancel()
		case <-ctx.Done():
		}
	}()
	return s.awaitDesired(ctx, comp, have, MaxWait)
}

// DesiredToPB maps a desired state to its message.
func DesiredToPB(d Desired) *pb.Desired {
	out := &pb.Desired{Version: d.Version, Machines: make([]*pb.DesiredMachine, len(d.Machines)), Actions: actionsToPB(d.Actions)}
	for i, m := range d.Machines {
		out.Machines[i] = &pb.DesiredMachine{Id: m.ID, Name: m.Name, Epoch: m.Epoch, Policy: pb.FromPolicy(m.Policy),
			Process: endpointToPB(m.Process), Target: endpointToPB(m.Target), Test: testToPB(m.Test), Failover: failoverToPB(m.Failover), Drain: drainToPB(m.Drain),
			Ship: shipToPB(m.Ship), Receive: receiveToPB(m.Receive), Resume: resumeToPB(m.Resume), Barrier: barrierToPB(m.Barrier)}
	}
	return out
}

// DesiredFromPB maps a desired-state message back (the client).
func DesiredFromPB(d *pb.Desired) Desired {
	out := Desired{Version: d.GetVersion(), Machines: make([]DesiredMachine, len(d.GetMachines())), Actions: actionsFromPB(d.GetActions())}
	for i, m := range d.GetMachines() {
		out.Machines[i] = DesiredMachine{ID: m.GetId(), Name: m.GetName(), Epoch: m.GetEpoch(), Policy: pb.ToPolicy(m.GetPolicy()),
			Process: endpointFromPB(m.GetProcess()), Target: endpointFromPB(m.GetTarget()), Test: testFromPB(m.GetTest()), Failover: failoverFromPB(m.GetFailover()), Drain: drainFromPB(m.GetDrain()),
			Ship: shipFromPB(m.GetShip()), Receive: receiveFromPB(m.GetReceive()), Resume: resumeFromPB(m.GetResume()), Barrier: barrierFromPB(m.GetBarrier())}
	}
	return out
}

func endpointToPB(e *Endpoint) *pb.Endpoint {
	if e == nil {
		return nil
	}
	return &pb.Endpoint{Id: e.ID, Address: e.Address}
}

func endpointFromPB(e *pb.Endpoint) *Endpoint {
	if e == nil {
		return nil
	}
	return &Endpoint{ID: e.GetId(), Address: e.GetAddress()}
}

func testToPB(t *DesiredTest) *pb.DesiredTest {
	if t == nil {
		return nil
	}
	return &pb.DesiredTest{Id: t.ID, Point: t.Point, Replica: pb.FromReplicaSpec(t.Replica), Remove: t.Remove}
}

func testFromPB(t *pb.DesiredTest) *DesiredTest {
	if t == nil {
		return nil
	}
	return &DesiredTest{ID: t.GetId(), Point: t.GetPoint(), Replica: pb.ToReplicaSpec(t.GetReplica()), Remove: t.GetRemove()}
}
