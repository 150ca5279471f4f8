package process

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/wire"
)

// A copy tunnel (docs/protocol.md §5.1): when the master target takes a
// rebase as a copy and offers a ticket, the agent sends the Copy frames
// over TLS with the master target itself, in a connection to this server
// that starts with the ticket; this server opens a connection to the
// master target with the same ticket and moves the encrypted bytes
// between the two without decrypting them (the kernel splices them when
// no bandwidth limit applies). The copy then costs no TLS work here, and
// its data is encrypted end to end.

// tunnelRoute is a ticket this server passed to an agent: where its
// tunnel goes, and the limits it keeps to on the way.
type tunnelRoute struct {
	ctx     context.Context // the agent's data stream: the tunnel ends with it
	machine string
	addr    string
	limits  []*limiter
	left    int // connections the ticket may still open (guarded by Server.mu)
}

// offerTunnel turns the master target's ticket into the agent's offer and
// registers the route its tunnel takes; the returned function forgets it.
func (s *Server) offerTunnel(ctx context.Context, f *forwarder, t *wire.Tunnel) (*wire.Tunnel, func()) {
	f.mu.Lock()
	r := f.route
	f.mu.Unlock()
	if t == nil || r == nil || s.o.NoTunnel {
		return nil, func() {}
	}
	pack, adaptive, mlimit := s.policyOf(r.policy)
	level := pack.Level
	if level == 0 {
		level = segpack.LevelFastest // as segpack.Options reads it
	}
	offer := &wire.Tunnel{Ticket: t.Ticket, Streams: max(t.Streams, 1), Compression: level.String()}
	if adaptive {
		offer.Compression = "auto"
	}
	if r.target != "" {
		offer.Target = r.target
	} else if r.tls != nil {
		offer.ServerName = r.tls.ServerName
	}
	tr := &tunnelRoute{ctx: ctx, machine: f.id, addr: r.addr, limits: []*limiter{s.limit, mlimit}, left: offer.Streams}
	s.mu.Lock()
	if s.tunnels == nil {
		s.tunnels = make(map[string]*tunnelRoute)
	}
	s.tunnels[t.Ticket] = tr
	s.mu.Unlock()
	return offer, func() {
		s.mu.Lock()
		delete(s.tunnels, t.Ticket)
		s.mu.Unlock()
	}
}

// relayTunnel runs a tunnel connection after its preamble: it dials the
// master target, passes the preamble on and relays until either side
// ends.
func (s *Server) relayTunnel(nc net.Conn, ticket string) error {
	s.mu.Lock()
	tr := s.tunnels[ticket]
	if tr != nil {
		if tr.left--; tr.left <= 0 { // the ticket opens Streams connections
			delete(s.tunnels, ticket)
		}
	}
	s.mu.Unlock()
	if tr == nil || tr.ctx.Err() != nil {
		return fmt.Errorf("copy tunnel with an unknown or spent ticket")
	}
	dctx, cancel := context.WithTimeout(tr.ctx, 10*time.Second)
	mt, err := wire.DialNet(dctx, tr.addr)
	cancel()
	if err != nil {
		return fmt.Errorf("copy tunnel of %s: connect %s: %w", tr.machine, tr.addr, err)
	}
	if err := wire.WriteTunnelPreamble(mt, ticket); err != nil {
		mt.Close()
		return fmt.Errorf("copy tunnel of %s: %w", tr.machine, err)
	}
	var wait func(context.Context, int) error
	if limited(tr.limits) {
		wait = func(ctx context.Context, n int) error {
			for _, l := range tr.limits {
				if err := l.wait(ctx, n, nil); err != nil {
					return err
				}
			}
			return nil
		}
	}
	f, _ := s.lookup(tr.machine)
	moved := func(n int64) {
		s.counters.add(int(n), int(n))
		s.counters.mu.Lock()
		s.counters.agentBytes += uint64(n)
		s.counters.mu.Unlock()
		if f != nil {
			f.mu.Lock()
			f.stats.TunnelBytes += uint64(n)
			f.stats.BytesBefore += uint64(n)
			f.stats.BytesAfter += uint64(n)
			f.mu.Unlock()
		}
	}
	s.log.Info("copy tunnel open", "machine", tr.machine, "agent", nc.RemoteAddr(), "target", tr.addr)
	in, out, err := wire.Relay(tr.ctx, nc, mt, wait, moved)
	s.log.Info("copy tunnel closed", "machine", tr.machine, "bytes_to_target", in, "bytes_back", out, "err", err)
	return nil
}

// limited says whether any of ls limits the rate.
func limited(ls []*limiter) bool {
	for _, l := range ls {
		if l != nil && l.rate > 0 {
			return true
		}
	}
	return false
}
