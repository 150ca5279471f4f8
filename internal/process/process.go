// Package process is the process server role: it receives machines'
// journal segments from agents, makes them durable in its cache (the spool)
// before acknowledging them, and forwards them, packed (zero-block
// elimination, dedup within a window, zstd: internal/segpack) and within a
// bandwidth limit, to the master target; it releases them once the target
// applied them.
//
//	agent ──Segment──▶ Server ──Put (fsync)──▶ spool ──▶ forwarder ──Packed──▶ master target
//	      ◀──Ack{durable, applied}───────────────────────────────◀──Ack{applied}──┘
//
// Backpressure: a full cache delays the acknowledgement of the agent's next
// segment (its shipping window fills and its bounded journal then degrades
// to the dirty bitmap); an unreachable master target only fills the cache.
// A permanent refusal by the master target is held for the machine: fenced
// is passed to the agent (it stops); any other makes the agent's next Open
// say "not consistent", so that it resynchronises, and its drain clears the
// refusal. Transient errors are retried here.
//
// Managed mode (control.go, Options.Control): agents are accepted by their
// joined certificates, each machine goes to the master target its desired
// state names (long-polled, kept in the cache directory so a restart
// without the configuration server still forwards), and a machine not in
// the desired state stays in the cache unforwarded.
package process

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/manage"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/spool"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// Options configure a Server.
type Options struct {
	CacheDir string
	Quota    int64 // bytes the cache may hold; required
	// Target is the master target's address; TargetTLS its client TLS
	// configuration (nil: plain TCP, tests only).
	Target    string
	TargetTLS *tls.Config
	// TLS is the listening side's configuration for agents (nil: plain).
	TLS *tls.Config
	// Bandwidth limits bytes per second to the master target; 0 is none.
	Bandwidth int64
	Pack      segpack.Options
	// Adaptive skips compression while the compressor is the bottleneck
	// (adaptive.go; Pack.Level says how hard it compresses otherwise).
	Adaptive bool
	Window   int // segments in flight to the target per machine; 0 means 8
	// NoTunnel makes copies pass through this server as Copy frames it
	// decrypts, compresses and forwards, instead of copy tunnels it
	// relays encrypted (tunnel.go).
	NoTunnel bool
	Name     string
	Logger   *slog.Logger
	// Control, when set, is managed mode (control.go): the agents'
	// listener uses the joined identity instead of TLS, and each machine
	// goes to the master target its desired state names instead of
	// Target.
	Control *Control
}

// Server is a running process server.
type Server struct {
	o   Options
	log *slog.Logger
	mgd *managed // nil unless managed
	// actions runs the commands the desired state gives (managed).
	actions *manage.Actions
	spool   *spool.Spool
	limit   *limiter

	mu         sync.Mutex
	forwarders map[string]*forwarder
	tunnels    map[string]*tunnelRoute // offered to agents, by ticket (tunnel.go)
	counters   counters

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type counters struct {
	mu                   sync.Mutex
	agentBytes, segments uint64
	outBefore, outAfter  uint64
}

func (c *counters) add(before, after int) {
	c.mu.Lock()
	c.outBefore += uint64(before)
	c.outAfter += uint64(after)
	c.mu.Unlock()
}

// New opens the cache and starts a forwarder for every machine whose Open is
// recorded and whose segments are in the cache.
func New(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Window <= 0 {
		o.Window = 8
	}
	if o.Target == "" && o.Control == nil {
		return nil, errors.New("process: the master target's address is required")
	}
	var mgd *managed
	if o.Control != nil {
		var err error
		if mgd, err = newManaged(*o.Control, o.CacheDir, o.Logger); err != nil {
			return nil, err
		}
	}
	sp, err := spool.Open(filepath.Join(o.CacheDir, "spool"), spool.Options{Quota: o.Quota, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	s := &Server{o: o, log: o.Logger, mgd: mgd, spool: sp, limit: newLimiter(o.Bandwidth), forwarders: map[string]*forwarder{}}
	if mgd != nil {
		s.actions = &manage.Actions{Dir: o.CacheDir, Report: mgd.comp.Action, Log: o.Logger}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// Machines with segments in the cache are forwarded at once, whether
	// or not their agents are connected.
	for _, op := range loadOpens(o.CacheDir, o.Logger) {
		if st, ok := sp.Stats()[op.Machine]; ok && st.Segments > 0 {
			s.forwarder(op)
		}
	}
	if mgd != nil {
		s.runControl()
	}
	return s, nil
}

// opensDir holds each machine's latest Open, so that a restarted process
// server can open the machine's stream at the master target before its
// agent comes back.
func opensDir(cacheDir string) string { return filepath.Join(cacheDir, "opens") }

// saveOpen records a machine's Open (its id is canonical: Open checked it).
func saveOpen(cacheDir string, op wire.Open) error {
	if err := os.MkdirAll(opensDir(cacheDir), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(op)
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(filepath.Join(opensDir(cacheDir), op.Machine+".json"), b, nil)
}

func loadOpens(cacheDir string, log *slog.Logger) []wire.Open {
	ents, _ := os.ReadDir(opensDir(cacheDir))
	var out []wire.Open
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(opensDir(cacheDir), e.Name()))
		var op wire.Open
		if err == nil {
			err = json.Unmarshal(b, &op)
		}
		if err == nil {
			op.Machine, err = wire.CanonicalMachineID(op.Machine)
		}
		if err != nil {
			log.Warn("ignoring a damaged machine record in the cache", "file", e.Name(), "err", err)
			continue
		}
		out = append(out, op)
	}
	return out
}

// forwarder returns the machine's forwarder, starting it on first use, and
// records the agent's latest Open.
func (s *Server) forwarder(op wire.Open) *forwarder {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.forwarders[op.Machine]
	same := false
	if ok {
		f.mu.Lock()
		same = reflect.DeepEqual(f.open, op)
		f.mu.Unlock()
	}
	if !same {
		if err := saveOpen(s.o.CacheDir, op); err != nil {
			s.log.Warn("save the machine's record in the cache", "machine", op.Machine, "err", err)
		}
	}
	if !ok {
		f = newForwarder(s, op)
		s.forwarders[op.Machine] = f
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			f.run(s.ctx)
		}()
		return f
	}
	f.update(func() { f.open = op })
	return f
}

func (s *Server) lookup(id string) (*forwarder, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.forwarders[id]
	return f, ok
}

// Serve accepts agents' connections on l until ctx ends or Close.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	stop2 := context.AfterFunc(s.ctx, func() { l.Close() })
	defer stop2()
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || s.ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer nc.Close()
			s.handle(nc)
		}()
	}
}

func (s *Server) handle(nc net.Conn) {
	nc, ticket, err := wire.SniffTunnel(nc, 10*time.Second)
	if err != nil {
		s.log.Debug("handshake", "err", err)
		return
	}
	if ticket != "" {
		if err := s.relayTunnel(nc, ticket); err != nil {
			s.log.Warn("copy tunnel refused", "peer", nc.RemoteAddr(), "err", err)
		}
		return
	}
	tc := s.o.TLS
	var peer *trust.Identity
	if s.mgd != nil {
		tl, id, err := acceptTLS(s.ctx, nc, s.mgd.tls)
		if err != nil {
			s.log.Debug("handshake", "peer", nc.RemoteAddr(), "err", err)
			return
		}
		defer tl.Close()
		nc, tc, peer = tl, nil, &id
	}
	c, err := wire.Accept(s.ctx, nc, tc, wire.Welcome{Role: "process", Name: s.o.Name}, func(c *wire.Conn) error {
		// A master target ships as the agent of the machines it failed
		// over (reverse replication: internal/agent/embedded.go).
		asAgent := peer != nil && peer.Role == control.RoleTarget && c.Peer.Role == "agent"
		if peer != nil && c.Peer.Role != string(peer.Role) && !asAgent {
			return fmt.Errorf("the peer says it is a %q but its certificate is for %s", c.Peer.Role, peer)
		}
		if c.Peer.Role != "agent" && c.Peer.Stream == wire.StreamData {
			return fmt.Errorf("role %q may not open a data stream to a process server", c.Peer.Role)
		}
		if c.Peer.Stream != wire.StreamData && c.Peer.Stream != wire.StreamControl {
			return fmt.Errorf("unknown stream kind %q", c.Peer.Stream)
		}
		return nil
	}, wire.Options{})
	if err != nil {
		s.log.Debug("handshake", "peer", nc.RemoteAddr(), "err", err)
		return
	}
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	if c.Peer.Stream == wire.StreamData {
		err = s.serveAgent(c)
	} else {
		err = s.serveControl(c)
	}
	if err != nil && s.ctx.Err() == nil && !wire.IsTransient(err) {
		s.log.Warn("agent stream ended", "peer", c.RemoteAddr(), "err", err)
	}
}

// Close stops serving and forwarding and closes the cache.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	if s.mgd != nil {
		return s.mgd.comp.Close() // its connection to the configuration server
	}
	return nil
}

// backoffPut retries a Put refused for a full cache until it fits: the
// agent waits meanwhile (its window fills), which is the backpressure.
func (s *Server) backoffPut(ctx context.Context, id string, seg []byte) error {
	wait := 20 * time.Millisecond
	for {
		_, err := s.spool.Put(ctx, id, seg)
		if !errors.Is(err, spool.ErrFull) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}
