package process

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"github.com/standby-dr/standby/internal/manage"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// Control puts a process server in managed mode: its identity comes from
// a join directory, it heartbeats to the configuration server, and each
// machine is forwarded to the master target the server's desired state
// names for it. The data path never waits for the configuration server:
// the last desired state (kept in the cache directory across restarts)
// goes on being served while it is away.
type Control = manage.Control

// desiredFile is the last desired state, in the cache directory.
const desiredFile = "desired.json"

// managed is the running managed mode of a Server.
type managed struct {
	o       Control
	local   *trust.Local
	live    *trust.Live // the current certificate, renewed while running
	comp    *client.Component
	revoked *trust.RevocationSet
	joined  *manage.Joined
	tls     *tls.Config // the agents' listener

	mu      sync.Mutex
	desired map[string]api.DesiredMachine // by canonical machine id
	version string
	changed chan struct{} // closed and replaced when desired changes
}

func newManaged(o Control, cacheDir string, log *slog.Logger) (*managed, error) {
	j, err := manage.Load(&o, control.RoleProcess, "a process server")
	if err != nil {
		return nil, err
	}
	l := j.Local
	m := &managed{o: o, local: l, live: j.Live, comp: j.Comp, revoked: &j.Revoked, joined: j, desired: map[string]api.DesiredMachine{}, changed: make(chan struct{})}
	// Master targets ship too: the one that failed a machine over is the
	// agent of its reverse replication (internal/agent/embedded.go).
	m.tls = m.live.Serve(trust.ServerTLS(l.Roots, l.Cert, []control.Role{control.RoleAgent, control.RoleTarget}, m.revoked.Revoked))
	if b, err := os.ReadFile(filepath.Join(cacheDir, desiredFile)); err == nil {
		var d api.Desired
		if err := json.Unmarshal(b, &d); err != nil {
			log.Warn("ignoring a damaged desired state in the cache", "file", desiredFile, "err", err)
		} else {
			m.set(d)
		}
	}
	return m, nil
}

// set installs d and says whether it changed anything.
func (m *managed) set(d api.Desired) bool {
	next := map[string]api.DesiredMachine{}
	for _, dm := range d.Machines {
		id, err := wire.CanonicalMachineID(dm.ID)
		if err != nil {
			continue // not an agent's journal machine id: no stream can carry it
		}
		next[id] = dm
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.version == d.Version && d.Version != "" {
		return false
	}
	m.desired, m.version = next, d.Version
	close(m.changed)
	m.changed = make(chan struct{})
	return true
}

// machine is the machine's desired state, if the server wants it here,
// and a channel closed at the next change.
func (m *managed) machine(id string) (api.DesiredMachine, bool, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dm, ok := m.desired[id]
	return dm, ok && dm.Target != nil && dm.Target.Address != "", m.changed
}

// route is where a forwarder sends a machine's stream.
type route struct {
	addr   string
	tls    *tls.Config
	target string // the master target's server id ("" when static)
	policy control.Policy
}

// route returns where the machine is forwarded. Managed, it waits until
// the desired state names a master target for it (logging once that the
// machine waits); ok is false only when ctx ended.
func (s *Server) route(ctx context.Context, id string) (route, bool) {
	if s.mgd == nil {
		return route{addr: s.o.Target, tls: s.o.TargetTLS}, true
	}
	logged := false
	for {
		dm, ok, ch := s.mgd.machine(id)
		if ok {
			if logged {
				s.log.Info("machine now in the desired state; forwarding", "machine", id, "target", dm.Target.ID)
			}
			want := trust.Identity{Role: control.RoleTarget, ID: dm.Target.ID}
			return route{addr: dm.Target.Address, tls: s.mgd.live.Serve(trust.ClientTLS(s.mgd.local.Roots, s.mgd.local.Cert, want)), target: dm.Target.ID, policy: dm.Policy}, true
		}
		if !logged {
			logged = true
			s.log.Warn("machine not in this process server's desired state; keeping its data in the cache, not forwarding until it is", "machine", id)
		}
		select {
		case <-ctx.Done():
			return route{}, false
		case <-ch:
		}
	}
}

// dialTarget opens a stream of kind to the master target of r. Managed,
// the peer's identity (role target and the server id the desired state
// names) was checked by r.tls; the role is checked here against the
// Welcome, because wire's common-name check (wire.CertMatchesRole) does
// not know joined certificates' names ("target/ID").
func (s *Server) dialTarget(ctx context.Context, r route, stream string) (*wire.Conn, error) {
	h := wire.Hello{Role: "process", Stream: stream, Name: s.o.Name}
	if s.mgd == nil {
		return wire.Dial(ctx, r.addr, r.tls, h, wire.Options{PeerRole: "target"})
	}
	c, err := wire.Dial(ctx, r.addr, r.tls, h, wire.Options{})
	if err != nil {
		return nil, err
	}
	if c.Peer.Role != "target" {
		c.Close()
		return nil, fmt.Errorf("%w: %s is a %q, not a master target", wire.ErrPeerRole, r.addr, c.Peer.Role)
	}
	return c, nil
}

// acceptTLS runs the TLS handshake of the managed listener and returns
// the connection and the agent's verified identity. It is done here
// rather than by wire.Accept for the reason dialTarget gives.
func acceptTLS(ctx context.Context, nc net.Conn, tc *tls.Config) (net.Conn, trust.Identity, error) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tl := tls.Server(nc, tc)
	if err := tl.HandshakeContext(hctx); err != nil {
		return nil, trust.Identity{}, fmt.Errorf("tls handshake with %s: %w", nc.RemoteAddr(), err)
	}
	id, err := trust.PeerIdentity(tl.ConnectionState())
	if err != nil {
		return nil, trust.Identity{}, err
	}
	return tl, id, nil
}

// runControl starts the heartbeat, revocation and desired-state loops.
func (s *Server) runControl() {
	renew := func(ctx context.Context) { s.mgd.live.RunRenewal(ctx, s.mgd.o.Identity, s.mgd.o.Server, 0, s.o.Logger) }
	revoke := func(ctx context.Context) {
		s.mgd.joined.RevocationLoop(ctx, s.log, s.mgd.o.Server, s.mgd.o.Revocations)
	}
	loops := []func(context.Context){s.heartbeatLoop, revoke, s.desiredLoop, renew}
	s.wg.Add(len(loops))
	for _, fn := range loops {
		go func() {
			defer s.wg.Done()
			fn(s.ctx)
		}()
	}
}

// Capacity is what the process server has: machines it forwards, and
// free bytes of its cache quota.
func (s *Server) Capacity() control.Capacity {
	used, quota := s.spool.Usage()
	s.mu.Lock()
	n := len(s.forwarders)
	s.mu.Unlock()
	return control.Capacity{Machines: n, FreeBytes: max(quota-used, 0)}
}

func (s *Server) heartbeatLoop(ctx context.Context) {
	s.mgd.joined.HeartbeatLoop(ctx, s.log, &s.mgd.o, s.Capacity)
}

// desiredLoop long-polls the desired state and installs each new one,
// keeping it in the cache directory. It backs off 1 s..30 s with jitter
// while the server cannot be reached; the last state is served meanwhile.
func (s *Server) desiredLoop(ctx context.Context) {
	m := s.mgd
	out := manage.Outage{Log: s.log, What: "desired state from the configuration server"}
	backoff := time.Second
	for {
		m.mu.Lock()
		have := m.version
		m.mu.Unlock()
		d, err := m.comp.Desired(ctx, have, 30*time.Second)
		if ctx.Err() != nil {
			return
		}
		out.Note(err)
		if err != nil {
			if !manage.Sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		s.actions.Run(ctx, d.Actions) // a recovery plan's scripts (manage/actions.go)
		if m.set(d) {
			s.log.Info("desired state", "version", d.Version, "machines", len(d.Machines))
			if b, err := json.Marshal(d); err == nil {
				if err := fsutil.WriteAtomic(filepath.Join(s.o.CacheDir, desiredFile), b, nil); err != nil {
					s.log.Warn("keep the desired state in the cache", "err", err)
				}
			}
			s.reroute()
		}
	}
}

// reroute tells every forwarder whose master target or policy changed to
// reconnect.
func (s *Server) reroute() {
	s.mu.Lock()
	fs := make([]*forwarder, 0, len(s.forwarders))
	for _, f := range s.forwarders {
		fs = append(fs, f)
	}
	s.mu.Unlock()
	for _, f := range fs {
		dm, ok, _ := s.mgd.machine(f.id)
		f.mu.Lock()
		cur := f.route
		f.mu.Unlock()
		if cur == nil {
			continue // not connected: it takes the new route when it does
		}
		if !ok || dm.Target.ID != cur.target || dm.Target.Address != cur.addr || dm.Policy != cur.policy {
			select {
			case f.rerouted <- struct{}{}:
			default:
			}
		}
	}
}

// treeRoute is the master target a tree call goes to: the machine's, when
// managed (refused at once when the desired state names none).
func (s *Server) treeRoute(ctx context.Context, args json.RawMessage) (route, error) {
	if s.mgd == nil {
		return route{addr: s.o.Target, tls: s.o.TargetTLS}, nil
	}
	var a wire.TreeArgs
	if err := json.Unmarshal(args, &a); err != nil {
		return route{}, &wire.Error{Code: wire.CodeBadRequest, Message: "tree: " + err.Error()}
	}
	id, err := wire.CanonicalMachineID(a.Machine)
	if err != nil {
		return route{}, &wire.Error{Code: wire.CodeBadRequest, Message: "tree: " + err.Error()}
	}
	if _, ok, _ := s.mgd.machine(id); !ok {
		return route{}, &wire.Error{Code: wire.CodeUnavailable, Message: "tree: machine " + id + " is not in this process server's desired state yet", Transient: true}
	}
	r, _ := s.route(ctx, id)
	return r, nil
}

// policyOf is the packing and the per-machine bandwidth limit of a
// machine's policy: the group's compression and bandwidth_limit when set,
// else the server's own settings.
func (s *Server) policyOf(p control.Policy) (pack segpack.Options, adaptive bool, limit *limiter) {
	pack, adaptive = s.o.Pack, s.o.Adaptive
	switch p.Compression {
	case "":
	case "auto":
		pack.Level, adaptive = segpack.LevelFastest, true
	case "off":
		pack.Level, adaptive = segpack.LevelNone, false
	default:
		if l, err := segpack.ParseLevel(p.Compression); err == nil {
			pack.Level, adaptive = l, false
		} else {
			s.log.Warn("the policy's compression is not known here; using the server's", "compression", p.Compression)
		}
	}
	if p.BandwidthLimit > 0 {
		limit = newLimiter(p.BandwidthLimit)
	}
	return pack, adaptive, limit
}
