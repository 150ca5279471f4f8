package target

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/standby-dr/standby/internal/manage"
	"hash/fnv"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/trust"
	"github.com/standby-dr/standby/internal/wire"
)

// Control puts a master target in managed mode: it takes its identity
// from a join directory, heartbeats to the configuration server and
// reports every machine's recovery points to it. The data path never
// waits for the configuration server: when it is away, the target goes
// on serving with the identity and revocations it has.
type Control = manage.Control

// pointsEvery is the debounce of points reports: at most one per machine
// per interval, and changes are looked for that often.
const pointsEvery = time.Second

// refusedRetry is how long the points of a machine the server refused are
// not offered again unless they change: the machine may be assigned here
// later.
const refusedRetry = time.Minute

// managed is the running managed mode of a Target.
type managed struct {
	o       Control
	local   *trust.Local
	live    *trust.Live // the current certificate, renewed while running
	comp    *client.Component
	revoked *trust.RevocationSet
	joined  *manage.Joined
	tls     *tls.Config
	// tunnelTLS is the TLS of copy tunnels: agents' certificates.
	tunnelTLS *tls.Config
}

// newManaged loads the joined identity and builds the listener's TLS:
// only process servers' certificates of the deployment's CA that the
// configuration server has not revoked are accepted.
func newManaged(o Control) (*managed, error) {
	j, err := manage.Load(&o, control.RoleTarget, "a master target")
	if err != nil {
		return nil, err
	}
	l := j.Local
	m := &managed{o: o, local: l, live: j.Live, comp: j.Comp, revoked: &j.Revoked, joined: j}
	m.tls = m.live.Serve(trust.ServerTLS(l.Roots, l.Cert, []control.Role{control.RoleProcess}, m.revoked.Revoked))
	// A copy tunnel's TLS session is the agent's (tunnel.go); a master
	// target is the agent of the machines it failed over.
	m.tunnelTLS = m.live.Serve(trust.ServerTLS(l.Roots, l.Cert, []control.Role{control.RoleAgent, control.RoleTarget}, m.revoked.Revoked))
	return m, nil
}

// acceptTLS runs the TLS handshake of a managed listener and returns the
// connection and the peer's verified identity. The handshake is done here
// rather than by wire.Accept because wire binds roles to certificates by
// common name (wire.CertMatchesRole), and joined certificates carry their
// role in a URI SAN (standby://ROLE/ID) with the common name "ROLE/ID":
// the identity trust verified is the stronger check.
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

// checkIdentity refuses a Hello whose role is not the one the peer's
// certificate carries.
func checkIdentity(id trust.Identity) func(*wire.Conn) error {
	return func(c *wire.Conn) error {
		if c.Peer.Role != string(id.Role) {
			return fmt.Errorf("the peer says it is a %q but its certificate is for %s", c.Peer.Role, id)
		}
		return checkPeer(c)
	}
}

// runControl runs the heartbeat, revocation and points loops until the
// target closes.
func (t *Target) runControl() {
	m := t.mgd
	renew := func(ctx context.Context) { m.live.RunRenewal(ctx, m.o.Identity, m.o.Server, 0, t.log) }
	revoke := func(ctx context.Context) { m.joined.RevocationLoop(ctx, t.log, m.o.Server, m.o.Revocations) }
	loops := []func(context.Context){t.heartbeatLoop, revoke, t.pointsLoop, t.testLoop, renew}
	t.wg.Add(len(loops))
	for _, fn := range loops {
		go func() {
			defer t.wg.Done()
			fn(t.ctx)
		}()
	}
}

// Capacity is what the target has: machines it holds a replica of, and
// free bytes of its data directory's file system.
func (t *Target) Capacity() control.Capacity {
	c := control.Capacity{Machines: len(t.MachineIDs())}
	var st syscall.Statfs_t
	if syscall.Statfs(t.o.DataDir, &st) == nil {
		c.FreeBytes = int64(st.Bavail) * int64(st.Bsize)
	}
	return c
}

func (t *Target) heartbeatLoop(ctx context.Context) {
	t.mgd.joined.HeartbeatLoop(ctx, t.log, &t.mgd.o, t.Capacity)
}

// pointsLoop reports each machine's recovery points whenever they change
// (an apply that added one, retention that pruned, a tag), once at start,
// and at most once per machine per pointsEvery. A report that fails is
// tried again at the next look; one the server refuses because the
// machine is not assigned here (yet) is logged once and tried again when
// the points change or refusedRetry passed.
func (t *Target) pointsLoop(ctx context.Context) {
	type refusal struct {
		fp uint64
		at time.Time
	}
	sent := map[string]uint64{}     // machine -> fingerprint of the points last reported
	refused := map[string]refusal{} // machine -> what the server refused, and when
	out := manage.Outage{Log: t.log, What: "report recovery points to the configuration server"}
	tick := time.NewTicker(pointsEvery)
	defer tick.Stop()
	for {
		for _, mc := range t.list() {
			pts := mc.rep.Points()
			fp := fingerprint(pts)
			if s, ok := sent[mc.id]; ok && s == fp {
				continue
			}
			if r, ok := refused[mc.id]; ok && r.fp == fp && time.Since(r.at) < refusedRetry {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := t.mgd.comp.Points(rctx, api.PointsReport{Machine: mc.id, Points: catalogue(pts)})
			cancel()
			if ctx.Err() != nil {
				return
			}
			var ce *client.Error
			switch {
			case err == nil:
				sent[mc.id] = fp
				delete(refused, mc.id)
				out.Note(nil)
			case errors.As(err, &ce) && (ce.Status == http.StatusConflict || ce.Status == http.StatusNotFound):
				if _, ok := refused[mc.id]; !ok {
					t.log.Warn("the configuration server does not assign this machine to this master target; its points are not reported until they change", "machine", mc.id, "err", err)
				}
				refused[mc.id] = refusal{fp, time.Now()}
				out.Note(nil) // the server answered
			default:
				out.Note(err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// catalogue is the points as the configuration server keeps them.
func catalogue(pts []replica.Point) []control.RecoveryPoint {
	out := make([]control.RecoveryPoint, len(pts))
	for i, p := range pts {
		out[i] = control.RecoveryPoint{ID: p.ID, Seq: p.Seq, Time: p.Time, AppConsistent: p.AppConsistent, Label: p.Label, Tags: slices.Clone(p.Tags)}
	}
	return out
}

// fingerprint hashes what a points report carries, to notice a change.
func fingerprint(pts []replica.Point) uint64 {
	h := fnv.New64a()
	for _, p := range pts {
		fmt.Fprintf(h, "%d/%d/%d/%t/%q/%q\n", p.ID, p.Seq, p.Time.UnixNano(), p.AppConsistent, p.Label, strings.Join(p.Tags, "\x00"))
	}
	return h.Sum64()
}
