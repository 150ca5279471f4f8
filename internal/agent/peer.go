package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// peer is the process server the shipper sends to: its address and how
// to make the TLS configuration of a connection to it.
type peer struct {
	addr string
	// id is the process server's identity in managed mode (its
	// certificate must carry it); "" for a statically configured one,
	// whose certificate is checked by host name instead.
	id string
	// tls builds the configuration at each dial: a managed agent reads
	// its joined identity again, so that a renewal takes effect.
	tls func() (*tls.Config, error)
	// tunnelTLS builds the configuration of a copy tunnel's TLS session
	// with the master target the process server's offer names.
	tunnelTLS func(t *wire.Tunnel) (*tls.Config, error)
}

// staticPeer is the replication section's process server.
func staticPeer(r *ReplicationConfig) (*peer, error) {
	tc, err := r.TLS.ClientConfig(r.serverName())
	if err != nil {
		return nil, fmt.Errorf("replication: %w", err)
	}
	return &peer{addr: r.ProcessServer, tls: func() (*tls.Config, error) { return tc, nil },
		tunnelTLS: func(t *wire.Tunnel) (*tls.Config, error) {
			if t.ServerName == "" {
				return nil, fmt.Errorf("the offer names no server name for the master target")
			}
			c := tc.Clone()
			c.ServerName = t.ServerName
			return c, nil
		}}, nil
}

// managedPeer is a process server the configuration server named: the
// agent presents the identity joined into dir, and accepts only a
// certificate of the deployment's CA naming process server id (not a
// host name: addresses change, identities do not) that the server has
// not revoked.
func managedPeer(addr, id, dir string, revoked *trust.RevocationSet) *peer {
	return &peer{addr: addr, id: id, tls: func() (*tls.Config, error) {
		l, err := trust.Load(dir)
		if err != nil {
			return nil, err
		}
		v := &trust.Verifier{Roots: l.Roots, Roles: []control.Role{control.RoleProcess}, ID: id, Usage: x509.ExtKeyUsageServerAuth, Revoked: revoked.Revoked}
		return v.ClientConfig(l.Cert), nil
	}, tunnelTLS: func(t *wire.Tunnel) (*tls.Config, error) {
		if t.Target == "" {
			return nil, fmt.Errorf("the offer names no master target identity")
		}
		l, err := trust.Load(dir)
		if err != nil {
			return nil, err
		}
		v := &trust.Verifier{Roots: l.Roots, Roles: []control.Role{control.RoleTarget}, ID: t.Target, Usage: x509.ExtKeyUsageServerAuth, Revoked: revoked.Revoked}
		return v.ClientConfig(l.Cert), nil
	}}
}

func (p *peer) same(q *peer) bool {
	if p == nil || q == nil {
		return p == q
	}
	return p.addr == q.addr && p.id == q.id
}

// setPeer makes the shipper send to p from now on (nil: stop shipping).
// A session to another peer ends at once; capture and the journal are
// untouched, so the next session's comparison sends only what differs.
func (s *shipper) setPeer(p *peer) {
	s.mu.Lock()
	if s.fenced != "" {
		p = nil
	}
	if s.peer.same(p) {
		s.mu.Unlock()
		return
	}
	s.peer = p
	end := s.endSession
	s.endSession = nil
	s.mu.Unlock()
	if end != nil {
		end()
	}
	select {
	case s.peerChanged <- struct{}{}:
	default:
	}
}

// fence stops shipping for good in this process (the machine was failed
// over: the desired state names a newer epoch than the journal's); why
// is the status's last error.
func (s *shipper) fence(why string) {
	s.mu.Lock()
	s.fenced = why
	s.mu.Unlock()
	s.setPeer(nil)
	s.mu.Lock()
	s.st.enter(ReplFenced)
	s.st.Server, s.st.LastError = "", why
	s.mu.Unlock()
}

// unfence lets the shipper ship again after the journal adopted the
// machine's newer epoch (a failback).
func (s *shipper) unfence() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fenced = ""
	if s.st.State == ReplFenced {
		s.st.enter(ReplConnecting)
		s.st.LastError = ""
	}
}

// currentPeer is where the shipper sends now, or nil.
func (s *shipper) currentPeer() *peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

// waitPeer waits until there is a peer to ship to, reporting the idle
// state meanwhile; false when ctx ended first.
func (s *shipper) waitPeer(ctx context.Context) bool {
	for {
		s.mu.Lock()
		p := s.peer
		switch {
		case s.fenced != "":
			s.st.enter(ReplFenced)
			s.st.Server, s.st.LastError = "", s.fenced
		case p == nil:
			s.st.enter(ReplIdle)
			s.st.Server, s.st.LastError = "", ""
		default:
			s.st.Server = p.addr
			if s.st.State == ReplIdle {
				s.st.enter(ReplConnecting)
			}
		}
		s.mu.Unlock()
		if p != nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-s.peerChanged:
		}
	}
}

// dial opens a stream to the current peer.
func (s *shipper) dial(ctx context.Context, stream string) (*wire.Conn, error) {
	p := s.currentPeer()
	if p == nil {
		return nil, fmt.Errorf("not protected: the configuration server names no process server: %w", context.Canceled)
	}
	tc, err := p.tls()
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", p.addr, err)
	}
	h := wire.Hello{Role: "agent", Stream: stream, Name: s.a.cfg.Machine}
	if p.id == "" {
		return wire.Dial(ctx, p.addr, tc, h, wire.Options{PeerRole: "process"})
	}
	// The TLS configuration checked the certificate's identity (role and
	// ID) already; wire's role check reads the common name of the older
	// certificates, so only the role the peer says it has is checked here.
	c, err := wire.Dial(ctx, p.addr, tc, h, wire.Options{})
	if err != nil {
		return nil, err
	}
	if c.Peer.Role != "process" {
		c.Close()
		return nil, fmt.Errorf("connect %s: %w: expected a process server, it says it is a %q", p.addr, wire.ErrPeerRole, c.Peer.Role)
	}
	return c, nil
}

// openTunnel opens the copy tunnel the process server offered: a
// connection to it that starts with the ticket, then TLS with the master
// target, whose certificate must be the one the offer names.
func (s *shipper) openTunnel(ctx context.Context, t *wire.Tunnel) (*wire.Conn, error) {
	p := s.currentPeer()
	if p == nil || p.tunnelTLS == nil {
		return nil, fmt.Errorf("no process server to open a copy tunnel through")
	}
	tc, err := p.tunnelTLS(t)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	nc, err := wire.DialNet(dctx, p.addr)
	cancel()
	if err != nil {
		return nil, err
	}
	if err := wire.WriteTunnelPreamble(nc, t.Ticket); err != nil {
		nc.Close()
		return nil, err
	}
	h := wire.Hello{Role: "agent", Stream: wire.StreamCopy, Name: s.a.cfg.Machine}
	o := wire.Options{PeerRole: "target"}
	if p.id != "" {
		o.PeerRole = "" // the TLS configuration checked the identity (see dial)
	}
	c, err := wire.Client(ctx, nc, tc, h, o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if c.Peer.Role != "target" {
		c.Close()
		return nil, fmt.Errorf("%w: the copy tunnel ends at a %q, not a master target", wire.ErrPeerRole, c.Peer.Role)
	}
	return c, nil
}

// appliedAt is the time of the newest record the master target applied,
// as its acknowledgements said; zero when not known.
func (s *shipper) appliedAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.appliedTime == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.appliedTime).UTC()
}
