package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/wire"
)

// Replication states the shipper reports.
const (
	ReplConnecting = "connecting"          // no stream to the process server
	ReplInitial    = "initial-replication" // the first full comparison and copy
	ReplResyncing  = "resynchronizing"     // a later comparison (gap, fork, POST /resync), or catching up after an overflow
	ReplProtected  = "protected"           // delta shipping; the replica presents a consistent state
	ReplFenced     = "fenced"              // the master target holds a newer epoch: shipping stopped
	// ReplIdle is a managed agent whose machine the configuration server
	// does not protect: capture and the journal go on, nothing is shipped.
	ReplIdle = "idle"
)

// ReplicationStatus is the shipper's part of GET /status.
type ReplicationStatus struct {
	State string `json:"state"`
	// StateSince is when the agent entered State (RFC 3339, nanoseconds).
	StateSince string      `json:"state_since,omitempty"`
	Server     string      `json:"process_server"`
	Durable    journal.Pos `json:"durable"` // in the process server's cache
	Applied    journal.Pos `json:"applied"` // at the master target: the latest recovery point
	Consistent bool        `json:"consistent"`
	// RPOSeconds is the achieved RPO: the age of the oldest write accepted
	// here and not yet applied at the master target (0 when none); -1
	// before the target has applied anything.
	RPOSeconds float64 `json:"rpo_seconds"`
	// ResyncBytes is what the last comparison found to send; ResyncLeft
	// what remains of it (progress of initial replication or a resync).
	ResyncBytes int64 `json:"resync_bytes"`
	// CompareHashes is how many of the replica's tree hashes the last
	// comparison fetched: its cost on the WAN, 32 bytes each.
	CompareHashes int64 `json:"compare_hashes"`
	ResyncLeft    int64 `json:"resync_left"`
	// ResyncMode is how the last comparison's ranges went: "copy" (straight
	// into the images of a replica without recovery points) or "journal"
	// (as resync records).
	ResyncMode   string `json:"resync_mode,omitempty"`
	ComparedAt   string `json:"compared_at,omitempty"`
	SentBytes    uint64 `json:"sent_bytes"`
	SentSegments uint64 `json:"sent_segments"`
	Points       int    `json:"points"`
	LastError    string `json:"last_error,omitempty"`
}

// enter moves to state and notes the time, when that is a change.
func (st *ReplicationStatus) enter(state string) {
	if st.State != state {
		st.State, st.StateSince = state, time.Now().UTC().Format(time.RFC3339Nano)
	}
}

// shipper sends the machine's sealed journal segments to a process server
// and releases them once they are durable there.
type shipper struct {
	a        *Agent
	m        *capture.Machine
	interval time.Duration // the active segment is sealed at least this often
	window   int

	mu sync.Mutex
	// peer is where segments go; nil while a managed agent's machine is
	// not protected. setPeer changes it (peer.go).
	peer        *peer
	peerChanged chan struct{}
	st          ReplicationStatus
	needResync  bool
	comparing   bool // between StartResync and the target's confirmation of the rebase
	appliedTime int64
	// shipped are the segments sent and not yet applied at the target,
	// oldest first, with the time of their first record: the process
	// server may hold them after the journal dropped them.
	shipped []shippedSegment

	sealNow chan struct{} // an operator's bookmark: ship it without waiting for the interval

	endSession context.CancelFunc // ends the current session (guarded by mu)
	// fenced is why shipping stopped for good in this process: the
	// configuration server's desired state carries a newer epoch than
	// the journal's (a failover; guarded by mu). setPeer is ignored then.
	fenced string

	copyLeft atomic.Int64 // bytes of the copy in progress not sent yet
}

// RequestResync makes the shipper compare the disks with the replica again
// (an operator's request: after restoring a disk from elsewhere, say), by
// ending the current session; the next one compares.
func (s *shipper) RequestResync() {
	s.mu.Lock()
	s.needResync = true
	end := s.endSession
	s.mu.Unlock()
	if end != nil {
		end()
	}
}

// shipSoon seals the active segment at once, so that a bookmark just taken
// reaches the master target without waiting for the ship interval.
func (s *shipper) shipSoon() {
	if s == nil {
		return
	}
	select {
	case s.sealNow <- struct{}{}:
	default:
	}
}

type shippedSegment struct {
	firstSeq, last uint64
	first          int64 // unix ns of its first record; 0 when unknown (written before this run)
}

func (s *shipper) set(fn func(*ReplicationStatus)) {
	s.mu.Lock()
	fn(&s.st)
	s.mu.Unlock()
}

// Status reports replication, with the RPO computed now.
func (s *shipper) Status() ReplicationStatus {
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()
	st.RPOSeconds = s.rpo(st.Applied)
	st.ResyncLeft = s.m.Stats().DirtyBytes + s.copyLeft.Load()
	return st
}

// rpo is the age of the oldest record not yet applied at the target.
func (s *shipper) rpo(applied journal.Pos) float64 {
	if applied.Seq == 0 && applied.Chain == 0 {
		return -1
	}
	pos := s.m.Stats().Pos
	if applied.Seq >= pos.Seq {
		return 0
	}
	// The oldest segment holding records after applied: one shipped and
	// not yet applied, else one still in the journal. It must start right
	// after applied; if not, records in between were shipped by an earlier
	// run and their times are unknown.
	first, known := s.oldestUnapplied(applied)
	if known && first != 0 {
		return max(0, time.Since(time.Unix(0, first)).Seconds())
	}
	// Segments from before this run carry no times: the last applied
	// record's time bounds the loss window from above.
	s.mu.Lock()
	at := s.appliedTime
	s.mu.Unlock()
	if at == 0 {
		return -1
	}
	return max(0, time.Since(time.Unix(0, at)).Seconds())
}

// oldestUnapplied returns the first-record time of the oldest segment with
// records after applied, if that segment starts right after applied.
func (s *shipper) oldestUnapplied(applied journal.Pos) (first int64, ok bool) {
	s.mu.Lock()
	for _, g := range s.shipped {
		if g.last > applied.Seq {
			s.mu.Unlock()
			return g.first, g.firstSeq <= applied.Seq+1
		}
	}
	s.mu.Unlock()
	segs := s.m.Segments()
	i := sort.Search(len(segs), func(i int) bool { return segs[i].LastSeq > applied.Seq })
	if i < len(segs) {
		return segs[i].FirstTime, segs[i].FirstSeq <= applied.Seq+1
	}
	return 0, false
}

// run ships until ctx ends.
func (s *shipper) run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		if !s.waitPeer(ctx) {
			return
		}
		began := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*time.Second {
			backoff = 200 * time.Millisecond // it was a good session
		}
		switch {
		case wire.HasCode(err, wire.CodeFenced):
			s.a.log.Error("fenced: the master target holds a newer epoch for this machine; shipping stopped", "err", err)
			s.set(func(st *ReplicationStatus) { st.enter(ReplFenced); st.LastError = err.Error() })
			<-ctx.Done()
			return
		case wire.HasCode(err, wire.CodeGap), wire.HasCode(err, wire.CodeFork):
			s.a.log.Warn("the replica does not continue this journal: resynchronising", "err", err)
			s.mu.Lock()
			s.needResync = true
			s.mu.Unlock()
			backoff = 200 * time.Millisecond
		case errors.Is(err, context.Canceled):
			backoff = 0 // an operator's resync ended the session: start the next at once
			err = nil
		case err != nil && !wire.IsTransient(err):
			// Retrying may not help (a refused certificate, a protocol
			// mismatch): say so loudly, and retry slowly.
			s.a.log.Error("replication refused; retrying in 30s", "err", err)
			backoff = 30 * time.Second
		case err != nil:
			s.a.log.Debug("replication stream ended", "err", err)
		}
		s.set(func(st *ReplicationStatus) {
			st.enter(ReplConnecting)
			if err != nil {
				st.LastError = err.Error()
			}
		})
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		case <-s.peerChanged:
			backoff = 0 // a new endpoint: try it at once
		}
		backoff = max(200*time.Millisecond, min(2*backoff, 5*time.Second))
	}
}

func (s *shipper) open() wire.Open {
	op := wire.Open{Machine: s.m.ID(), Name: s.a.cfg.Machine, Epoch: s.m.Stats().Epoch}
	for _, d := range s.m.Disks() {
		op.Disks = append(op.Disks, wire.DiskInfo{Name: d.Name(), Size: d.Size()})
	}
	return op
}

// session is one data stream to the process server.
func (s *shipper) session(ctx context.Context) error {
	p := s.currentPeer()
	c, err := s.dial(ctx, wire.StreamData)
	if err != nil {
		return err
	}
	defer c.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.endSession = cancel
	stale := !s.peer.same(p) // the peer changed while we dialled
	s.mu.Unlock()
	if stale {
		cancel()
	}
	stop := context.AfterFunc(sctx, func() { c.Close() })
	defer stop()
	if err := c.SendJSON(wire.TypeOpen, s.open()); err != nil {
		return err
	}
	var op wire.Opened
	if err := c.Expect(wire.TypeOpened, &op); err != nil {
		return err
	}
	s.mu.Lock()
	points := s.st.Points
	s.mu.Unlock()
	s.onAck(wire.Ack{Durable: op.Durable, Applied: op.Applied, Consistent: op.Consistent, Points: points})
	sent := op.Durable.Seq
	s.mu.Lock()
	resync := s.needResync || !op.Consistent || !s.continues(op.Durable)
	s.mu.Unlock()
	if resync {
		pos, err := s.resync(sctx, c, op)
		if err != nil {
			return fmt.Errorf("resync: %w", err)
		}
		sent = pos.Seq
		// The resync's bookmark (after a copy, the first consistent
		// point) goes without waiting for the ship interval.
		if err := s.m.SealActive(); err != nil {
			return err
		}
	}
	s.set(func(st *ReplicationStatus) {
		st.LastError = ""
		if st.State == ReplConnecting {
			// Protected only once the replica says it is consistent
			// (after an overflow it catches up on resync records first).
			st.enter(ReplResyncing)
			if op.Consistent && s.m.Stats().DirtyBytes == 0 {
				st.enter(ReplProtected)
			}
		}
	})
	pending := newPending()
	readErr := make(chan error, 1)
	go func() { readErr <- s.readAcks(sctx, c, pending) }()
	return s.ship(sctx, c, sent, pending, readErr)
}

// continues reports whether the journal this agent holds continues from
// the server's durable position: nothing between it and the oldest
// retained record is missing, and the server is not ahead of us.
func (s *shipper) continues(durable journal.Pos) bool {
	pos := s.m.Stats().Pos
	if durable.Seq > pos.Seq {
		return false // the server holds records we never wrote: a fork
	}
	if durable.Seq == pos.Seq {
		return durable == pos
	}
	segs := s.m.Segments()
	for _, g := range segs {
		if g.LastSeq > durable.Seq {
			return g.FirstSeq <= durable.Seq+1
		}
	}
	return false
}

// ship sends sealed, durable segments after sent, a window at a time.
func (s *shipper) ship(ctx context.Context, c *wire.Conn, sent uint64, p *pending, readErr chan error) error {
	seal := time.NewTicker(s.interval)
	defer seal.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	ping := time.NewTicker(2 * time.Second)
	defer ping.Stop()
	for {
		for p.count() < s.window {
			g, ok := s.nextSegment(sent)
			if !ok {
				break
			}
			if g.FirstSeq > sent+1 {
				return &wire.Error{Code: wire.CodeGap, Message: fmt.Sprintf("journal segment %d..%d does not follow %d", g.FirstSeq, g.LastSeq, sent)}
			}
			p.push(g.LastSeq) // before the send: its ack may come at once
			n, err := s.sendSegment(c, g.Path)
			if err != nil {
				return err
			}
			sent = g.LastSeq
			s.mu.Lock()
			s.st.SentBytes += uint64(n)
			s.st.SentSegments++
			if len(s.shipped) < 4096 {
				s.shipped = append(s.shipped, shippedSegment{firstSeq: g.FirstSeq, last: g.LastSeq, first: g.FirstTime})
			}
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			return err
		case <-seal.C:
			if err := s.m.SealActive(); err != nil {
				return err
			}
		case <-s.sealNow:
			if err := s.m.SealActive(); err != nil {
				return err
			}
		case <-ping.C:
			if err := c.Send(wire.TypePing, nil); err != nil {
				return err
			}
		case <-poll.C:
		case <-p.acked:
		}
	}
}

// sendSegment streams a sealed segment file to the process server.
func (s *shipper) sendSegment(c *wire.Conn, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read journal segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("read journal segment: %w", err)
	}
	return st.Size(), c.SendFrom(wire.TypeSegment, f, st.Size())
}

// nextSegment is the first sealed, durable segment with records after seq.
func (s *shipper) nextSegment(seq uint64) (capture.SegmentInfo, bool) {
	for _, g := range s.m.Segments() {
		if g.LastSeq <= seq || g.LastSeq < g.FirstSeq {
			continue
		}
		return g, g.Synced
	}
	return capture.SegmentInfo{}, false
}

func (s *shipper) readAcks(ctx context.Context, c *wire.Conn, p *pending) error {
	c.SetIdleTimeout(15 * time.Second)
	for {
		t, b, err := c.Recv()
		if err != nil {
			return err
		}
		if t == wire.TypePing {
			continue
		}
		if t != wire.TypeAck {
			return fmt.Errorf("%w: %s frame from the process server", wire.ErrProtocol, t)
		}
		var a wire.Ack
		if err := wire.Decode(t, b, &a); err != nil {
			return err
		}
		if err := s.onAck(a); err != nil {
			return err
		}
		p.ackUpTo(a.Durable.Seq)
	}
}

// onAck records an acknowledgement and drops the journal the process
// server holds durably.
func (s *shipper) onAck(a wire.Ack) error {
	s.mu.Lock()
	s.st.Durable, s.st.Applied, s.st.Consistent, s.st.Points = a.Durable, a.Applied, a.Consistent, a.Points
	if a.AppliedRecordTime != 0 {
		s.appliedTime = a.AppliedRecordTime
	}
	n := 0
	for n < len(s.shipped) && s.shipped[n].last <= a.Applied.Seq {
		n++
	}
	s.shipped = s.shipped[n:]
	dirty := s.m.Stats().DirtyBytes
	if s.st.State == ReplProtected && (!a.Consistent || dirty > 0) {
		s.st.enter(ReplResyncing) // an overflow: the replica catches up on resync records
	}
	if a.Consistent && !s.comparing && dirty == 0 && (s.st.State == ReplInitial || s.st.State == ReplResyncing) {
		s.st.enter(ReplProtected)
		s.a.log.Info("replica consistent: protected", "applied", a.Applied.Seq)
	}
	s.mu.Unlock()
	if a.Durable.Seq > 0 {
		return s.m.Release(a.Durable.Seq)
	}
	return nil
}

// pending tracks the segments sent and not yet durable at the server.
type pending struct {
	mu    sync.Mutex
	last  []uint64
	acked chan struct{}
}

func newPending() *pending { return &pending{acked: make(chan struct{}, 1)} }

func (p *pending) push(seq uint64) { p.mu.Lock(); p.last = append(p.last, seq); p.mu.Unlock() }

func (p *pending) count() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.last) }

func (p *pending) ackUpTo(seq uint64) {
	p.mu.Lock()
	n := 0
	for n < len(p.last) && p.last[n] <= seq {
		n++
	}
	p.last = p.last[n:]
	p.mu.Unlock()
	if n > 0 {
		select {
		case p.acked <- struct{}{}:
		default:
		}
	}
}

// resync compares the disks with the replica and sends what differs
// (DESIGN §4: initial replication and resynchronisation are one
// mechanism). A replica without recovery points takes the differing blocks
// as Copy frames straight into its images; otherwise they are journaled as
// resync records. It returns the position the stream now continues from.
func (s *shipper) resync(ctx context.Context, c *wire.Conn, op wire.Opened) (journal.Pos, error) {
	initial := op.Applied == (journal.Pos{})
	state := ReplResyncing
	if initial {
		state = ReplInitial
	}
	s.set(func(st *ReplicationStatus) { st.enter(state) })
	s.mu.Lock()
	s.comparing = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.comparing = false
		s.mu.Unlock()
	}()
	pos0, err := s.m.StartResync()
	if err != nil {
		return pos0, err
	}
	// MarkDirty always runs once: it ends the hold on bookmarks. On a
	// failure the next session compares again.
	marked := false
	mark := func(exts []capture.Extent) error {
		if marked {
			return nil
		}
		marked = true
		return s.m.MarkDirty(exts)
	}
	defer mark(nil)
	// The comparison can take a while (a drain, hashing the disks): keep
	// the data stream alive meanwhile.
	stopPing := keepAlive(ctx, c)
	diff, err := s.compare(ctx)
	stopPing()
	if err != nil {
		return pos0, err
	}
	total := diff.bytes()
	s.a.log.Info("compared with the replica", "state", state, "differing_bytes", total, "ranges", len(diff.exts), "from_seq", pos0.Seq)
	if err := c.SendJSON(wire.TypeRebase, wire.Rebase{Pos: pos0, Epoch: s.m.Stats().Epoch, Copy: total > 0, Tunnel: total > 0}); err != nil {
		return pos0, err
	}
	a, err := expectAck(c, func(a wire.Ack) bool { return a.Rebased })
	if err != nil {
		return pos0, err
	}
	mode := "journal"
	if total > 0 && a.Copy {
		mode = "copy"
		s.set(func(st *ReplicationStatus) { st.ResyncBytes, st.ResyncMode = total, mode })
		end, err := s.copyVia(ctx, c, a.Tunnel, diff)
		// The first consistent point must follow the last read of the
		// copy: only now may capture bookmark again.
		if merr := mark(nil); err == nil {
			err = merr
		}
		if err != nil {
			return pos0, fmt.Errorf("copy: %w", err)
		}
		if err := c.SendJSON(wire.TypeCopyEnd, end); err != nil {
			return pos0, err
		}
		if _, err := expectAck(c, func(a wire.Ack) bool { return a.Copied }); err != nil {
			return pos0, err
		}
		s.a.log.Info("copy complete", "bytes", end.Bytes, "frames", end.Frames)
		// The copy's read buffers are garbage now: give their memory back
		// at once rather than when the runtime gets round to it.
		debug.FreeOSMemory()
	} else if err := mark(diff.exts); err != nil {
		return pos0, err
	}
	if err := s.m.Release(pos0.Seq); err != nil {
		return pos0, err
	}
	s.mu.Lock()
	s.needResync = false
	s.st.ResyncBytes, s.st.ResyncMode, s.st.ComparedAt = total, mode, time.Now().UTC().Format(time.RFC3339Nano)
	s.mu.Unlock()
	return pos0, nil
}

// copyVia sends the copy through the copy tunnel the servers offered, or
// on the data stream c when they offered none or the tunnel cannot be
// opened. A tunnel has Streams connections (each its own TLS session:
// the encryption of one runs beside the other's); c is kept alive with
// pings meanwhile, and each connection's end is confirmed on it (every
// frame it carried is written) before the caller's CopyEnd on c, which
// makes the copy durable. It returns what all carried together.
func (s *shipper) copyVia(ctx context.Context, c *wire.Conn, offer *wire.Tunnel, diff difference) (wire.CopyEnd, error) {
	var total wire.CopyEnd
	if offer == nil {
		ends, err := s.copy(ctx, []*wire.Conn{c}, diff, []*copyPacker{nil})
		return ends[0], err
	}
	n := min(max(offer.Streams, 1), maxTunnelStreams)
	conns := make([]*wire.Conn, 0, n)
	defer func() {
		for _, tc := range conns {
			tc.Close()
		}
	}()
	for len(conns) < n {
		tc, err := s.openTunnel(ctx, offer)
		if err != nil {
			if len(conns) > 0 {
				s.a.log.Warn("copy tunnel stream not opened; going on with fewer", "streams", len(conns), "err", err)
				break
			}
			s.a.log.Warn("copy tunnel not opened; copying through the process server", "err", err)
			ends, err := s.copy(ctx, []*wire.Conn{c}, diff, []*copyPacker{nil})
			return ends[0], err
		}
		conns = append(conns, tc)
	}
	packers := make([]*copyPacker, len(conns))
	for i := range packers {
		z, err := newCopyPacker(offer.Compression)
		if err != nil {
			s.a.log.Warn("copying uncompressed", "err", err) // a newer process server's setting
		}
		defer z.close()
		packers[i] = z
	}
	s.a.log.Info("copying through a copy tunnel", "streams", len(conns), "compression", offer.Compression)
	defer keepAlive(ctx, append([]*wire.Conn{c}, conns...)...)()
	stop := context.AfterFunc(ctx, func() {
		for _, tc := range conns {
			tc.Close()
		}
	})
	defer stop()
	ends, err := s.copy(ctx, conns, diff, packers)
	if err != nil {
		return total, err
	}
	for i, tc := range conns {
		if err := tc.SendJSON(wire.TypeCopyEnd, ends[i]); err != nil {
			return total, err
		}
		total.Frames += ends[i].Frames
		total.Bytes += ends[i].Bytes
	}
	for _, tc := range conns {
		if _, err := expectAck(tc, func(a wire.Ack) bool { return a.Copied }); err != nil {
			return total, fmt.Errorf("copy tunnel end: %w", err)
		}
	}
	return total, nil
}

// keepAlive pings conns every 2 s, so that a peer's idle timeout does not
// end them while nothing else is sent on them, until stop is called.
func keepAlive(ctx context.Context, conns ...*wire.Conn) (stop func()) {
	ctx, stop = context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for _, c := range conns {
					c.Send(wire.TypePing, nil)
				}
			}
		}
	}()
	return stop
}

// maxTunnelStreams bounds the connections of one copy tunnel.
const maxTunnelStreams = 4

// expectAck reads Acks until one satisfies done (the server's heartbeats
// come in between).
func expectAck(c *wire.Conn, done func(wire.Ack) bool) (wire.Ack, error) {
	for {
		var a wire.Ack
		if err := c.Expect(wire.TypeAck, &a); err != nil {
			return a, err
		}
		if done(a) {
			return a, nil
		}
	}
}

// difference is what a comparison found: the ranges that differ, and per
// disk whether the replica's reads as zeros (then zero blocks need not be
// sent).
type difference struct {
	exts      []capture.Extent
	zeroDisks []bool
}

func (d difference) bytes() int64 {
	var n int64
	for _, e := range d.exts {
		n += e.Length
	}
	return n
}

// compare hashes this machine's disks (holes skipped locally) and compares
// each disk's hash tree with the replica's, level by level, through the
// process server (after it forwarded everything it holds): equal regions
// cost one hash at the highest level where they are equal. A replica disk
// whose tree root is zero (a new replica) is not compared: everything
// this disk holds differs, and nothing is hashed. It returns the ranges
// that differ.
func (s *shipper) compare(ctx context.Context) (difference, error) {
	var diff difference
	cc, err := s.dial(ctx, wire.StreamControl)
	if err != nil {
		return diff, err
	}
	defer cc.Close()
	if _, err := cc.CallJSON(ctx, wire.MethodDrain, wire.DrainArgs{Machine: s.m.ID()}, &wire.DrainResult{}); err != nil {
		return diff, fmt.Errorf("drain the process server: %w", err)
	}
	var hashes int64
	var applied *journal.Pos // every answer must come from the same replica state
	for i, d := range s.m.Disks() {
		f := s.a.disk(i)
		var holes []blockmap.Extent
		if fi, ok := f.(*os.File); ok {
			if holes, err = fileHoles(fi, d.Size()); err != nil {
				return diff, err
			}
		}
		p := blockmap.Params{BlockSize: blockSize, Fanout: treeFanout, Size: d.Size()}
		root, err := remoteRoot(ctx, cc, s.m.ID(), i, p, &applied)
		if err != nil {
			return diff, fmt.Errorf("compare disk %s with the replica: %w", d.Name(), err)
		}
		zero := root.Hashes[0].IsZero()
		diff.zeroDisks = append(diff.zeroDisks, zero)
		if zero {
			hashes++
			for _, e := range dataExtents(holes, d.Size()) {
				diff.exts = append(diff.exts, capture.Extent{Disk: i, Offset: e.Off, Length: e.Len})
			}
			continue
		}
		ours, err := blockmap.Hasher{BlockSize: blockSize, Workers: 2}.Hash(ctx, f, d.Size(), holes)
		if err != nil {
			return diff, fmt.Errorf("hash disk %s: %w", d.Name(), err)
		}
		tree, err := blockmap.NewTree(ours, treeFanout, d.Size())
		if err != nil {
			return diff, fmt.Errorf("hash tree of disk %s: %w", d.Name(), err)
		}
		rs, n, err := compareTree(ctx, cc, s.m.ID(), i, tree, root, &applied)
		if err != nil {
			return diff, fmt.Errorf("compare disk %s with the replica: %w", d.Name(), err)
		}
		hashes += n
		for _, r := range rs {
			diff.exts = append(diff.exts, capture.Extent{Disk: i, Offset: r.Off, Length: min(r.Len, d.Size()-r.Off)})
		}
	}
	s.mu.Lock()
	s.st.CompareHashes = hashes
	s.mu.Unlock()
	return diff, nil
}

// remoteRoot asks for the root of the replica's tree of a disk: ZeroHash
// when the replica's disk reads as zeros. The answer is also the first
// level of a comparison.
func remoteRoot(ctx context.Context, cc *wire.Conn, machine string, disk int, p blockmap.Params, applied **journal.Pos) (*blockmap.Nodes, error) {
	req, err := blockmap.RootRequest(p)
	if err != nil {
		return nil, err
	}
	ans, err := treeCall(ctx, cc, machine, disk, req, applied)
	if err != nil {
		return nil, err
	}
	if len(ans.Hashes) != 1 {
		return nil, fmt.Errorf("%w: tree answer of %d hashes to a root request", wire.ErrProtocol, len(ans.Hashes))
	}
	return ans, nil
}

// dataExtents is the complement of holes (sorted, disjoint) in [0, size).
func dataExtents(holes []blockmap.Extent, size int64) []blockmap.Extent {
	var out []blockmap.Extent
	off := int64(0)
	for _, h := range holes {
		if h.Off > off {
			out = append(out, blockmap.Extent{Off: off, Len: h.Off - off})
		}
		off = max(off, h.Off+h.Len)
	}
	if off < size {
		out = append(out, blockmap.Extent{Off: off, Len: size - off})
	}
	return out
}

// compareTree runs the level-by-level comparison of one disk's tree with
// the replica's, starting from root, the replica's answer to the root
// request, and returns the differing ranges and the number of remote
// hashes it took.
func compareTree(ctx context.Context, cc *wire.Conn, machine string, disk int, tree *blockmap.Tree, root *blockmap.Nodes, applied **journal.Pos) ([]blockmap.Range, int64, error) {
	cmp := blockmap.NewCompare(tree)
	for {
		req, ok := cmp.Next(wire.MaxTreeNodes)
		if !ok {
			return cmp.Ranges(), cmp.Received(), nil
		}
		ans := root
		root = nil
		var err error
		if ans == nil {
			ans, err = treeCall(ctx, cc, machine, disk, req, applied)
		}
		if err != nil {
			return nil, 0, err
		}
		if err := cmp.Receive(ans); err != nil {
			return nil, 0, fmt.Errorf("%w: tree answer: %v", wire.ErrProtocol, err)
		}
	}
}

// treeCall sends one tree request. *applied is the replica state the
// first answer came from; later answers must come from the same.
func treeCall(ctx context.Context, cc *wire.Conn, machine string, disk int, req *blockmap.Nodes, applied **journal.Pos) (*blockmap.Nodes, error) {
	b, err := blockmap.AppendNodes(nil, req)
	if err != nil {
		return nil, err
	}
	var res wire.TreeResult
	blob, err := cc.CallJSON(ctx, wire.MethodTree, wire.TreeArgs{Machine: machine, Disk: disk, Request: b}, &res)
	if err != nil {
		return nil, err
	}
	if *applied == nil {
		*applied = &res.Applied
	} else if **applied != res.Applied {
		// The replica moved during the comparison: the levels do not
		// describe one tree. Compare again (a transient failure).
		return nil, &wire.Error{Code: wire.CodeUnavailable, Transient: true,
			Message: fmt.Sprintf("the replica moved from %s to %s during the comparison", **applied, res.Applied)}
	}
	ans, err := blockmap.DecodeNodes(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: tree answer: %v", wire.ErrProtocol, err)
	}
	return ans, nil
}

// treeFanout is the children per node of the comparison's hash trees.
const treeFanout = 64

// blockSize is the comparison granularity: capture's dirty-bitmap chunk.
const blockSize = capture.DefaultChunkSize

// fileHoles lists the unallocated ranges of a regular file (SEEK_DATA /
// SEEK_HOLE); a block device, or a filesystem without the calls, has none.
func fileHoles(f *os.File, size int64) ([]blockmap.Extent, error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, err
	}
	var holes []blockmap.Extent
	fd := int(f.Fd())
	off := int64(0)
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			holes = append(holes, blockmap.Extent{Off: off, Len: size - off})
			break
		}
		if err != nil {
			return nil, nil // no SEEK_DATA: hash everything
		}
		if data > off {
			holes = append(holes, blockmap.Extent{Off: off, Len: min(data, size) - off})
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, nil
		}
		off = hole
	}
	return holes, nil
}
