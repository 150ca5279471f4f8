package target

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// A copy tunnel (docs/protocol.md §5.1) brings a copy's Copy frames from
// the agent itself, over TLS between the agent and this master target,
// relayed by the process server without decrypting them. The data
// stream whose rebase started the copy issues the ticket; the frames the
// tunnel carries join that stream's apply loop, in order, as if they had
// come on the stream.

// tunnel is one issued ticket and the stream it belongs to.
type tunnel struct {
	ticket string
	m      *machine
	ctx    context.Context // ends with the stream, or when the ticket is dropped
	cancel context.CancelFunc
	items  chan streamItem
	opened atomic.Int32 // connections the ticket opened, at most tunnelStreams
}

// tunnelConn is one connection of a tunnel: what its frames carried, for
// its CopyEnd (counted by the stream's apply loop only).
type tunnelConn struct {
	c             *wire.Conn
	frames, bytes uint64
	ended         bool // its CopyEnd was answered
}

// tunnelStreams is how many connections a tunnel may have: each is a TLS
// session of its own, decrypted by a reader of its own, so that a copy
// uses more than one core on both ends.
const tunnelStreams = 2

// issueTunnel registers a ticket for the copy the stream with ctx just
// started.
func (t *Target) issueTunnel(ctx context.Context, m *machine) *tunnel {
	tctx, cancel := context.WithCancel(ctx)
	tn := &tunnel{ticket: wire.NewTicket(), m: m, ctx: tctx, cancel: cancel, items: make(chan streamItem, 8)}
	t.mu.Lock()
	if t.tunnels == nil {
		t.tunnels = make(map[string]*tunnel)
	}
	t.tunnels[tn.ticket] = tn
	t.mu.Unlock()
	return tn
}

// dropTunnel forgets tn's ticket and ends its connection (the copy ended,
// or its stream did).
func (t *Target) dropTunnel(tn *tunnel) {
	if tn == nil {
		return
	}
	tn.cancel()
	t.mu.Lock()
	delete(t.tunnels, tn.ticket)
	t.mu.Unlock()
}

// serveTunnel runs a tunnel connection after its preamble: TLS with the
// agent, then its Copy frames into the stream's apply loop.
func (t *Target) serveTunnel(nc net.Conn, ticket string) error {
	t.mu.Lock()
	tn := t.tunnels[ticket]
	t.mu.Unlock()
	if tn == nil || tn.ctx.Err() != nil {
		return fmt.Errorf("copy tunnel with an unknown or spent ticket")
	}
	tc, check := t.o.TLS, checkTunnelPeer(nil)
	if t.mgd != nil {
		tl, id, err := acceptTLS(t.ctx, nc, t.mgd.tunnelTLS)
		if err != nil {
			return err
		}
		defer tl.Close()
		nc, tc, check = tl, nil, checkTunnelPeer(&id)
	}
	c, err := wire.Accept(tn.ctx, nc, tc, wire.Welcome{Role: "target", Name: t.o.Name}, check, wire.Options{})
	if err != nil {
		return err
	}
	if tn.opened.Add(1) > tunnelStreams {
		c.SendError(&wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("copy tunnel: the ticket opened its %d connections already", tunnelStreams)})
		return fmt.Errorf("copy tunnel: ticket used more than %d times", tunnelStreams)
	}
	stop := context.AfterFunc(tn.ctx, func() { c.Close() })
	defer stop()
	t.log.Info("copy tunnel open", "machine", tn.m.id, "peer", c.RemoteAddr(), "agent", c.PeerCert)
	t.readStream(tn.ctx, c, tn.items, &tunnelConn{c: c})
	return nil
}

// checkTunnelPeer admits the agent's TLS session in a tunnel: an agent,
// or, managed, a master target shipping as the agent of a machine it
// failed over (reverse replication), on a copy stream.
func checkTunnelPeer(id *trust.Identity) func(*wire.Conn) error {
	return func(c *wire.Conn) error {
		if c.Peer.Stream != wire.StreamCopy || c.Peer.Role != "agent" {
			return fmt.Errorf("a copy tunnel carries an agent's copy stream, not a %q %q stream", c.Peer.Role, c.Peer.Stream)
		}
		if id != nil && id.Role != control.RoleAgent && id.Role != control.RoleTarget {
			return fmt.Errorf("the peer says it is an agent but its certificate is for %s", id)
		}
		return nil
	}
}

// tunnelEnd checks a tunnel connection's CopyEnd against what it carried
// and answers it: all its frames are written (the data stream's CopyEnd
// then makes the whole copy durable).
func (t *Target) tunnelEnd(it streamItem) {
	end, tc := *it.copyEnd, it.tunnel
	if end.Frames != tc.frames || end.Bytes != tc.bytes {
		tc.c.SendError(&wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("copy end says %d frames of %d bytes, %d frames of %d bytes arrived on this connection", end.Frames, end.Bytes, tc.frames, tc.bytes)})
		tc.c.Close()
		return
	}
	if err := tc.c.SendJSON(wire.TypeAck, wire.Ack{Copied: true}); err != nil {
		tc.c.Close()
		return
	}
	tc.ended = true
}

// tunnelFailed logs how a tunnel ended before its CopyEnd was answered;
// the copy is then incomplete, and the agent compares again on its next
// session.
func (t *Target) tunnelFailed(m *machine, it streamItem) {
	if !it.tunnel.ended && !errors.Is(it.err, context.Canceled) && !errors.Is(it.err, net.ErrClosed) {
		t.log.Warn("copy tunnel ended before its copy end", "machine", m.id, "err", it.err)
	}
}

// tunnelHandshakeTimeout bounds reading a connection's first bytes.
const tunnelHandshakeTimeout = 10 * time.Second
