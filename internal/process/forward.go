package process

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/wire"
)

// forwarder sends one machine's spooled segments to the master target, in
// order, and releases them from the spool once the target applied them.
type forwarder struct {
	p  *Server
	id string

	mu         sync.Mutex
	open       wire.Open // the agent's latest Open: what the forwarder opens at the target
	connected  bool
	known      bool // the target's position is known (a session opened once)
	applied    journal.Pos
	appliedAt  int64
	recordTime int64
	consistent bool
	points     int
	broken     *wire.Error // a permanent refusal from the target (gap, fork, fenced, bad-request, ...): the agent must act
	lastErr    string
	changed    chan struct{} // closed and replaced on every state change
	stats      forwardStats

	ad    adaptive          // used by the session loop only
	enc   *zstd.Encoder     // Copy frames' compressor (session loop only)
	tuner segpack.CopyTuner // whether Copy frames are compressed (session loop only)
	zbuf  []byte            // a compressed Copy frame (session loop only)

	wake    chan struct{}  // a segment was spooled
	rebase  chan *rebaseOp // served by a connected session
	copyq   chan *copyOp   // an agent's Copy and CopyEnd frames, served by the session that took the rebase
	copyGen uint64         // the latest copy a rebase started (guarded by mu)
	copyErr error          // why copy copyGen failed; nil while it goes on (guarded by mu)

	route    *route        // where the current session goes; nil between sessions (guarded by mu)
	rerouted chan struct{} // managed: the desired state moved the machine (control.go)
}

type forwardStats struct {
	SegmentsSent uint64 `json:"segments_sent"`
	BytesBefore  uint64 `json:"bytes_before_packing"`
	BytesAfter   uint64 `json:"bytes_after_packing"`
	ZeroBytes    uint64 `json:"zero_bytes_eliminated"`
	DedupBytes   uint64 `json:"dedup_bytes"`
	CopyFrames   uint64 `json:"copy_frames"`
	TunnelBytes  uint64 `json:"tunnel_bytes"` // relayed through copy tunnels (tunnel.go), encrypted end to end
	Reconnects   uint64 `json:"reconnects"`
}

type rebaseOp struct {
	r      wire.Rebase
	done   chan error
	copy   bool         // set by the session before done: the master target takes a copy
	gen    uint64       // and the copy's generation
	tunnel *wire.Tunnel // and the master target's tunnel ticket, if it offered one
}

func newForwarder(p *Server, op wire.Open) *forwarder {
	return &forwarder{p: p, id: op.Machine, open: op, changed: make(chan struct{}), wake: make(chan struct{}, 1), rebase: make(chan *rebaseOp), copyq: make(chan *copyOp, copyQueue), rerouted: make(chan struct{}, 1)}
}

// update changes the state under the lock and wakes the watchers.
func (f *forwarder) update(fn func()) {
	f.mu.Lock()
	fn()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *forwarder) kick() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run keeps a session to the master target until ctx ends, reconnecting
// after transient failures and waiting for the agent's resync after a
// permanent one.
func (f *forwarder) run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		began := time.Now()
		err := f.session(ctx)
		if time.Since(began) > 10*time.Second {
			backoff = 200 * time.Millisecond // it was a good session
		}
		if ctx.Err() != nil {
			return
		}
		var we *wire.Error
		if errors.As(err, &we) && !we.Transient {
			f.p.log.Warn("master target refused the stream; waiting for the agent to resynchronise", "machine", f.id, "code", we.Code, "err", we.Message)
			f.update(func() { f.broken, f.connected, f.lastErr = we, false, err.Error() })
			f.waitFixed(ctx)
			// Then back off like after any failure: a refusal that a
			// resync does not cure must not turn into a dial loop.
		} else if err != nil && !wire.IsTransient(err) {
			f.p.log.Warn("cannot forward to the master target; retrying", "machine", f.id, "err", err)
		}
		f.update(func() {
			f.connected, f.stats.Reconnects = false, f.stats.Reconnects+1
			if err != nil && f.broken == nil {
				f.lastErr = err.Error()
			}
		})
		f.p.log.Debug("master target stream ended", "machine", f.id, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		if err == nil {
			backoff = 200 * time.Millisecond
		}
	}
}

func (f *forwarder) waitFixed(ctx context.Context) {
	for {
		f.mu.Lock()
		broken, ch := f.broken, f.changed
		f.mu.Unlock()
		if broken == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// session is one connection to the master target.
func (f *forwarder) session(ctx context.Context) error {
	f.mu.Lock()
	op := f.open
	f.mu.Unlock()
	r, ok := f.p.route(ctx, f.id)
	if !ok {
		return ctx.Err()
	}
	select { // a reroute before this session is what it already follows
	case <-f.rerouted:
	default:
	}
	c, err := f.p.dialTarget(ctx, r, wire.StreamData)
	if err != nil {
		return err
	}
	defer c.Close()
	f.update(func() { f.route = &r })
	defer f.update(func() { f.route = nil })
	pack, adaptive, mlimit := f.p.policyOf(r.policy)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sctx, func() { c.Close() })
	defer stop()
	if err := c.SendJSON(wire.TypeOpen, op); err != nil {
		return err
	}
	var opened wire.Opened
	if err := c.Expect(wire.TypeOpened, &opened); err != nil {
		return err
	}
	if err := f.p.spool.Release(ctx, f.id, opened.Applied.Seq); err != nil {
		return err
	}
	f.update(func() {
		f.connected, f.known = true, true
		f.applied, f.consistent = opened.Applied, opened.Consistent
	})
	f.p.log.Info("forwarding to master target", "machine", f.id, "applied", opened.Applied.Seq, "consistent", opened.Consistent)

	s := &sendState{sent: opened.Applied.Seq, acked: make(chan struct{}, 1), rebased: make(chan wire.Ack, 1), copied: make(chan struct{}, 1)}
	defer func() {
		if s.copying { // the copy cannot go on on another session
			f.update(func() {
				if f.copyGen == s.copyGen && f.copyErr == nil {
					f.copyErr = &wire.Error{Code: wire.CodeUnavailable, Message: "copy: the stream to the master target ended", Transient: true}
				}
			})
		}
	}()
	readErr := make(chan error, 1)
	go func() { readErr <- f.readAcks(sctx, c, s) }()
	packer, err := segpack.NewPacker(pack)
	if err != nil {
		return err
	}
	ping := time.NewTicker(2 * time.Second)
	defer ping.Stop()
	var buf []byte
	for {
		if s.inflight() < f.p.o.Window {
			ref, ok := f.p.spool.Next(f.id, s.sent)
			if ok {
				seg, err := f.p.spool.ReadSegment(ref)
				if err != nil {
					return err
				}
				var st segpack.Stats
				backlog := f.p.spool.Stats()[f.id].Segments > s.inflight()+1
				compress := !adaptive || f.ad.compress(backlog)
				packer.SetCompress(compress)
				t0 := time.Now()
				buf, st, err = packer.Pack(buf[:0], seg)
				if err != nil {
					return fmt.Errorf("pack segment %d..%d: %w", ref.FirstSeq, ref.LastSeq, err)
				}
				if compress {
					f.ad.packed(st.In, st.Out, time.Since(t0).Seconds())
				}
				t1 := time.Now()
				if err := f.p.limit.wait(sctx, len(buf), func() error { return c.Send(wire.TypePing, nil) }); err != nil {
					return err
				}
				if err := mlimit.wait(sctx, len(buf), func() error { return c.Send(wire.TypePing, nil) }); err != nil {
					return err
				}
				f.ad.limited(time.Since(t1).Seconds())
				s.push(ref.LastSeq, len(buf))
				if err := c.Send(wire.TypePacked, buf); err != nil {
					return err
				}
				s.sent = ref.LastSeq
				f.p.counters.add(len(seg), len(buf))
				f.update(func() {
					f.stats.SegmentsSent++
					f.stats.BytesBefore += uint64(st.In)
					f.stats.BytesAfter += uint64(st.Out)
					f.stats.ZeroBytes += uint64(st.ZeroBytes)
					f.stats.DedupBytes += uint64(st.DedupBytes)
				})
				continue
			}
		}
		select {
		case <-sctx.Done():
			return sctx.Err()
		case err := <-readErr:
			return err
		case <-f.wake:
		case <-f.rerouted:
			f.p.log.Info("the desired state moved the machine; reconnecting", "machine", f.id)
			return &wire.Error{Code: wire.CodeUnavailable, Message: "rerouted by the desired state", Transient: true}
		case <-s.acked:
		case <-ping.C:
			if err := c.Send(wire.TypePing, nil); err != nil {
				return err
			}
		case rb := <-f.rebase:
			err := f.doRebase(sctx, c, s, rb, readErr)
			rb.done <- err
			if err != nil {
				return err
			}
		case op := <-f.copyq:
			if err := f.serveCopy(sctx, c, s, op, readErr); err != nil {
				return err
			}
		}
	}
}

// doRebase passes an agent's rebase to the master target once everything
// spooled before it is applied, then rebases the spool. With the target's
// consent to a copy, the session takes the agent's Copy frames next.
func (f *forwarder) doRebase(ctx context.Context, c *wire.Conn, s *sendState, rb *rebaseOp, readErr chan error) error {
	r := rb.r
	s.copying = false
	if st := f.p.spool.Stats()[f.id]; st.Segments > 0 || s.inflight() > 0 {
		return &wire.Error{Code: wire.CodeBusy, Message: fmt.Sprintf("rebase: %d segments still to forward; drain first", st.Segments), Transient: true}
	}
	if err := c.SendJSON(wire.TypeRebase, r); err != nil {
		return err
	}
	var a wire.Ack
	select {
	case a = <-s.rebased:
	case err := <-readErr:
		readErr <- err
		return &wire.Error{Code: wire.CodeUnavailable, Message: "master target stream ended during rebase", Transient: true}
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return &wire.Error{Code: wire.CodeUnavailable, Message: "master target did not confirm the rebase", Transient: true}
	}
	if err := f.p.spool.Rebase(ctx, f.id, r.Pos, r.Epoch); err != nil {
		return err
	}
	s.sent = r.Pos.Seq
	if r.Copy && a.Copy {
		f.update(func() { f.copyGen, f.copyErr = f.copyGen+1, nil })
		s.copying, s.copyGen = true, f.copyGen
		rb.copy, rb.gen, rb.tunnel = true, s.copyGen, a.Tunnel
		f.tuner = segpack.CopyTuner{}
	}
	return nil
}

// readAcks applies the master target's acknowledgements.
func (f *forwarder) readAcks(ctx context.Context, c *wire.Conn, s *sendState) error {
	c.SetIdleTimeout(15 * time.Second)
	for {
		t, p, err := c.Recv()
		if err != nil {
			return err
		}
		if t == wire.TypePing {
			continue
		}
		if t != wire.TypeAck {
			return fmt.Errorf("%w: %s frame from the master target", wire.ErrProtocol, t)
		}
		var a wire.Ack
		if err := wire.Decode(t, p, &a); err != nil {
			return err
		}
		if err := f.p.spool.Release(ctx, f.id, a.Applied.Seq); err != nil {
			return err
		}
		f.update(func() {
			f.applied, f.appliedAt, f.recordTime = a.Applied, a.AppliedAt, a.AppliedRecordTime
			f.consistent, f.points = a.Consistent, a.Points
		})
		if n, secs := s.ackUpTo(a.Durable.Seq); n > 0 {
			f.ad.downstream(n, secs)
		}
		if a.Rebased { // after the update: the agent's next Ack must not say consistent
			select {
			case s.rebased <- a:
			default:
			}
		}
		if a.Copied {
			select {
			case s.copied <- struct{}{}:
			default:
			}
		}
	}
}

// sendState tracks the segments sent and not yet acknowledged.
type sendState struct {
	sent    uint64 // last sequence number sent (only the session loop touches it)
	mu      sync.Mutex
	pending []sentSegment // unacknowledged, in order
	since   time.Time     // the downstream has been busy since: the last ack, or the first send after idle
	acked   chan struct{}
	rebased chan wire.Ack
	copied  chan struct{}
	copying bool   // the master target takes Copy frames (only the session loop touches it)
	copyGen uint64 // of that copy
}

type sentSegment struct {
	last uint64 // its last sequence number
	wire int    // its bytes on the wire
}

func (s *sendState) push(last uint64, wire int) {
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.since = time.Now()
	}
	s.pending = append(s.pending, sentSegment{last, wire})
	s.mu.Unlock()
}

func (s *sendState) inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// ackUpTo drops the segments the ack covers and returns their wire bytes
// and how long the downstream (link and master target) took for them.
func (s *sendState) ackUpTo(seq uint64) (bytes int, secs float64) {
	s.mu.Lock()
	n := 0
	for n < len(s.pending) && s.pending[n].last <= seq {
		bytes += s.pending[n].wire
		n++
	}
	s.pending = s.pending[n:]
	if n > 0 {
		now := time.Now()
		secs = now.Sub(s.since).Seconds()
		s.since = now
	}
	s.mu.Unlock()
	if n > 0 {
		select {
		case s.acked <- struct{}{}:
		default:
		}
	}
	return bytes, secs
}

// drain waits until every spooled segment of the machine is applied at the
// master target, or, when the target refused the stream (any permanent
// refusal but fenced), drops them once: the agent is about to
// resynchronise. A refusal that comes back after that is the answer.
func (f *forwarder) drain(ctx context.Context) (journal.Pos, error) {
	cleared := false
	for {
		f.mu.Lock()
		broken, applied, ch, connected := f.broken, f.applied, f.changed, f.connected
		f.mu.Unlock()
		if broken != nil {
			if broken.Code == wire.CodeFenced || cleared {
				// Fenced, or refused again after the cache was dropped:
				// a resync cannot cure it; the agent hears why.
				return applied, broken
			}
			cleared = true
			if err := f.p.spool.Discard(ctx, f.id); err != nil {
				return applied, err
			}
			f.update(func() { f.broken = nil })
			continue
		}
		if st := f.p.spool.Stats()[f.id]; connected && st.Segments == 0 {
			return applied, nil
		}
		select {
		case <-ctx.Done():
			return applied, &wire.Error{Code: wire.CodeUnavailable, Message: "drain: the master target did not take the spooled segments in time", Transient: true}
		case <-ch:
		case <-time.After(time.Second):
		}
	}
}

// requestRebase hands a rebase to the connected session; the op says
// whether the master target takes a copy, which, and its tunnel ticket.
func (f *forwarder) requestRebase(ctx context.Context, r wire.Rebase) (*rebaseOp, error) {
	op := &rebaseOp{r: r, done: make(chan error, 1)}
	select {
	case f.rebase <- op:
	case <-ctx.Done():
		return &rebaseOp{}, &wire.Error{Code: wire.CodeUnavailable, Message: "rebase: not connected to the master target", Transient: true}
	}
	select {
	case err := <-op.done:
		return op, err
	case <-ctx.Done():
		return &rebaseOp{}, ctx.Err() // op is still the session's to write
	}
}
