package target

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/wire"
)

// idleTimeout ends a data stream whose peer sent nothing, not even a ping.
const idleTimeout = 30 * time.Second

// takeover makes the calling stream the machine's only one: an older
// stream is cancelled and waited for.
func (m *machine) takeover(ctx context.Context) (context.Context, func()) {
	m.mu.Lock()
	if m.cancel != nil {
		m.cancel()
	}
	done := m.done
	sctx, cancel := context.WithCancel(ctx)
	mine := make(chan struct{})
	m.cancel, m.done = cancel, mine
	m.mu.Unlock()
	if done != nil {
		<-done
	}
	m.streamMu.Lock()
	return sctx, func() {
		m.streamMu.Unlock()
		cancel()
		close(mine)
	}
}

func (t *Target) serveData(c *wire.Conn) error {
	var op wire.Open
	if err := c.Expect(wire.TypeOpen, &op); err != nil {
		return err
	}
	m, known, err := t.machineFor(t.ctx, op)
	if err != nil {
		c.SendError(&wire.Error{Code: wire.CodeBadRequest, Message: err.Error()})
		return err
	}
	ctx, release := m.takeover(t.ctx)
	defer release()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	st := m.rep.Status()
	if err := c.SendJSON(wire.TypeOpened, wire.Opened{Durable: st.Applied, Applied: st.Applied, Consistent: st.Consistent, Epoch: st.Epoch, Known: known}); err != nil {
		return err
	}
	t.log.Info("stream opened", "machine", m.id, "name", op.Name, "peer", c.RemoteAddr(), "applied", st.Applied.Seq, "consistent", st.Consistent)
	ack := func(rebased bool, more ...func(*wire.Ack)) error {
		st := m.rep.Status()
		a := wire.Ack{Durable: st.Applied, Applied: st.Applied, Consistent: st.Consistent, Rebased: rebased, Points: st.Points, Epoch: st.Epoch}
		for _, fn := range more {
			fn(&a)
		}
		if !st.AppliedAt.IsZero() {
			a.AppliedAt = st.AppliedAt.UnixNano()
		}
		if !st.LastRecordTime.IsZero() {
			a.AppliedRecordTime = st.LastRecordTime.UnixNano()
		}
		return c.SendJSON(wire.TypeAck, a)
	}
	go func() { // heartbeat: the client learns the frontier even when idle
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if ack(false) != nil {
					return
				}
			}
		}
	}()
	items := make(chan streamItem, 8)
	go t.readStream(ctx, c, items, nil)
	var cp *copyProgress // a copy this stream's rebase started
	var tn *tunnel       // and the tunnel it may come through
	defer func() { t.dropTunnel(tn) }()
	var next *streamItem // taken from a channel while batching, not yet handled
	for {
		var it streamItem
		var tunneled chan streamItem
		if tn != nil {
			tunneled = tn.items
		}
		if next != nil {
			it, next = *next, nil
		} else {
			select {
			case it = <-items:
			case it = <-tunneled:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if it.tunnel != nil && it.err != nil {
			t.tunnelFailed(m, it)
			continue
		}
		for it.seg != nil {
			// A backlog is applied as one batch: one image fsync and one
			// state write for all of it.
			batch, wireBytes, segBytes := [][]byte{it.seg}, it.wire, len(it.seg)
			it = streamItem{}
		more:
			for segBytes < maxBatch {
				select {
				case next := <-items:
					if next.seg == nil {
						it = next
						break more
					}
					batch = append(batch, next.seg)
					wireBytes += next.wire
					segBytes += len(next.seg)
				default:
					break more
				}
			}
			_, err := m.rep.ApplyBatch(ctx, batch)
			m.mu.Lock()
			m.bytesIn += uint64(wireBytes)
			m.bytesOut += uint64(segBytes)
			m.segments += uint64(len(batch))
			m.mu.Unlock()
			if aerr := ack(false); aerr != nil {
				return aerr
			}
			if err != nil {
				c.SendError(t.classify(err, m))
				return fmt.Errorf("apply segment: %w", err)
			}
		}
		switch {
		case it.err != nil:
			if it.reply != nil {
				c.SendError(it.reply)
			}
			return it.err
		case it.rebase != nil:
			r := it.rebase
			cp = nil
			t.dropTunnel(tn)
			tn = nil
			err := replica.ErrHasPoints
			if r.Copy {
				err = m.rep.BeginCopy(ctx, r.Pos, r.Epoch)
			}
			if errors.Is(err, replica.ErrHasPoints) {
				err = m.rep.Rebase(ctx, r.Pos, r.Epoch)
			} else if err == nil {
				cp = &copyProgress{}
			}
			if err != nil {
				c.SendError(t.classify(err, m))
				return err
			}
			if cp != nil && r.Tunnel {
				tn = t.issueTunnel(ctx, m)
			}
			t.log.Info("rebased: resynchronisation in progress", "machine", m.id, "seq", r.Pos.Seq, "epoch", r.Epoch, "copy", cp != nil, "tunnel", tn != nil)
			if err := ack(true, func(a *wire.Ack) {
				a.Copy = cp != nil
				if tn != nil {
					a.Tunnel = &wire.Tunnel{Ticket: tn.ticket, Streams: tunnelStreams}
				}
			}); err != nil {
				return err
			}
		case it.copy != nil:
			// Copy frames waiting already are written together (a deeper
			// queue for the disk), up to copyBatch of them.
			batch := []streamItem{it}
			for len(batch) < copyBatch && it.copy.Flags&wire.CopyZero == 0 {
				var more streamItem
				got := true
				select {
				case more = <-items:
				case more = <-tunneled:
				default:
					got = false
				}
				if got && (more.copy == nil || more.copy.Flags&wire.CopyZero != 0) {
					next = &more
				}
				if next != nil || !got {
					break
				}
				batch = append(batch, more)
			}
			if err := t.applyCopies(ctx, m, cp, batch); err != nil {
				we := t.classify(err, m)
				for _, it := range batch {
					if it.tunnel != nil {
						it.tunnel.c.SendError(we)
					}
				}
				c.SendError(we)
				return err
			}
		case it.copyEnd != nil && it.tunnel != nil:
			t.tunnelEnd(it)
		case it.copyEnd != nil:
			if err := t.endCopy(ctx, m, cp, *it.copyEnd); err != nil {
				c.SendError(t.classify(err, m))
				return err
			}
			cp = nil
			t.dropTunnel(tn)
			tn = nil
			if err := ack(false, func(a *wire.Ack) { a.Copied = true }); err != nil {
				return err
			}
		}
	}
}

// maxBatch bounds the segment bytes applied as one batch.
const maxBatch = 64 << 20

// streamItem is one frame of a data stream, decoded: a segment (unpacked),
// a rebase, a Copy frame (decompressed) or the CopyEnd, or the error that
// ended the stream (with the Error frame to send, if the peer is at
// fault).
type streamItem struct {
	seg     []byte
	wire    int // bytes on the wire
	rebase  *wire.Rebase
	copy    *wire.CopyHeader
	data    []byte  // a Copy frame's data
	buf     *[]byte // the buffer data lies in, returned to pool after the write
	pool    *sync.Pool
	copyEnd *wire.CopyEnd
	err     error
	reply   *wire.Error
	tunnel  *tunnelConn // the copy tunnel connection the item came through; nil on the data stream
}

// Copy frames are received into frameBufs, whose slices start 24 bytes
// before a 4 KiB boundary so that a plain frame's data (after its 24-byte
// header) is aligned for the replica's O_DIRECT writes; a compressed
// frame's data is decompressed into dataBufs, aligned at their start.
var (
	frameBufs = sync.Pool{New: func() any {
		b := make([]byte, 4096+wire.CopyHeaderSize+wire.CopyFrameData)[4096-wire.CopyHeaderSize:]
		return &b
	}}
	dataBufs = sync.Pool{New: func() any { b := make([]byte, 0, wire.CopyFrameData); return &b }}
)

// copyProgress counts a copy's frames against its CopyEnd.
type copyProgress struct {
	frames, bytes uint64
}

// copyBatch is the most Copy frames written at once.
const copyBatch = 4

// applyCopies writes Copy frames into the replica: one zero run, or data
// runs together.
func (t *Target) applyCopies(ctx context.Context, m *machine, cp *copyProgress, batch []streamItem) error {
	for _, it := range batch {
		if it.buf != nil {
			defer it.pool.Put(it.buf)
		}
	}
	if cp == nil {
		return &wire.Error{Code: wire.CodeBadRequest, Message: "copy frame without a rebase this stream took as a copy"}
	}
	var err error
	if h := batch[0].copy; h.Flags&wire.CopyZero != 0 {
		err = m.rep.ZeroCopy(ctx, int(h.Disk), int64(h.Offset), int64(h.Length))
	} else {
		ws := make([]replica.CopyWrite, len(batch))
		for i, it := range batch {
			ws[i] = replica.CopyWrite{Disk: int(it.copy.Disk), Off: int64(it.copy.Offset), Data: it.data}
		}
		err = m.rep.WriteCopies(ctx, ws)
	}
	if err != nil {
		return err
	}
	for _, it := range batch {
		h := it.copy
		cp.frames++
		cp.bytes += h.Length
		if it.tunnel != nil {
			it.tunnel.frames++
			it.tunnel.bytes += h.Length
		}
		m.mu.Lock()
		m.bytesIn += uint64(it.wire)
		m.copyBytes += h.Length
		m.mu.Unlock()
	}
	return nil
}

// endCopy checks a CopyEnd against what arrived and makes the copy durable.
func (t *Target) endCopy(ctx context.Context, m *machine, cp *copyProgress, end wire.CopyEnd) error {
	switch {
	case cp == nil:
		return &wire.Error{Code: wire.CodeBadRequest, Message: "copy end without a copy"}
	case end.Frames != cp.frames || end.Bytes != cp.bytes:
		return &wire.Error{Code: wire.CodeBadRequest, Message: fmt.Sprintf("copy end says %d frames of %d bytes, %d frames of %d bytes arrived", end.Frames, end.Bytes, cp.frames, cp.bytes)}
	}
	if err := m.rep.EndCopy(ctx); err != nil {
		return err
	}
	t.log.Info("copy durable", "machine", m.id, "bytes", cp.bytes, "frames", cp.frames)
	return nil
}

// readStream reads and unpacks a data stream's frames ahead of the apply
// loop, so that receiving and unpacking the next segments overlaps applying
// the current ones. The last item it sends carries the error that ended
// the stream. On a copy tunnel connection (tunnel, over c) only Copy frames and the
// CopyEnd may come, and every item says where it came from.
func (t *Target) readStream(ctx context.Context, c *wire.Conn, items chan<- streamItem, tunnel *tunnelConn) {
	send := func(it streamItem) bool {
		it.tunnel = tunnel
		select {
		case items <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	un, err := segpack.NewUnpacker(segpack.Options{})
	if err != nil {
		send(streamItem{err: err})
		return
	}
	var zd *zstd.Decoder
	defer func() {
		if zd != nil {
			zd.Close()
		}
	}()
	c.SetIdleTimeout(idleTimeout)
	rb := frameBufs.Get().(*[]byte) // the receive buffer; a Copy frame takes it along
	defer func() { frameBufs.Put(rb) }()
	for {
		typ, p, err := c.RecvInto(*rb)
		if err != nil {
			send(streamItem{err: err})
			return
		}
		it := streamItem{wire: len(p)}
		if tunnel != nil && typ != wire.TypeCopy && typ != wire.TypeCopyEnd && typ != wire.TypePing {
			send(streamItem{err: fmt.Errorf("%w: %s frame on a copy tunnel", wire.ErrProtocol, typ)})
			return
		}
		switch typ {
		case wire.TypePing:
			continue
		case wire.TypeRebase:
			var r wire.Rebase
			if err := wire.Decode(typ, p, &r); err != nil {
				send(streamItem{err: err})
				return
			}
			it.rebase = &r
		case wire.TypePacked:
			if it.seg, err = un.Unpack(nil, p); err != nil {
				send(streamItem{err: err, reply: &wire.Error{Code: wire.CodeBadRequest, Message: "unpack segment: " + err.Error()}})
				return
			}
		case wire.TypeSegment:
			it.seg = append([]byte(nil), p...)
		case wire.TypeCopy:
			h, data, err := wire.ParseCopy(p)
			switch {
			case err != nil, h.Flags&wire.CopyZero != 0:
			case h.Flags&wire.CopyZstd != 0:
				if zd == nil {
					zd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(wire.MaxCopyRun))
				}
				it.buf, it.pool = dataBufs.Get().(*[]byte), &dataBufs
				if err == nil {
					*it.buf, err = zd.DecodeAll(data, (*it.buf)[:0])
					it.data = *it.buf
				}
				if err == nil && uint64(len(it.data)) != h.Length {
					err = fmt.Errorf("copy run of %d bytes decompressed to %d", h.Length, len(it.data))
				}
			case cap(p) == cap(*rb):
				// The data stays where it was received; the next frame
				// goes into another buffer.
				it.buf, it.pool, it.data = rb, &frameBufs, data
				rb = frameBufs.Get().(*[]byte)
			default:
				it.data = data // a frame larger than the buffers: its own allocation
			}
			if err != nil {
				send(streamItem{err: err, reply: &wire.Error{Code: wire.CodeBadRequest, Message: "copy frame: " + err.Error()}})
				return
			}
			it.copy = &h
		case wire.TypeCopyEnd:
			var end wire.CopyEnd
			if err := wire.Decode(typ, p, &end); err != nil {
				send(streamItem{err: err})
				return
			}
			it.copyEnd = &end
		default:
			send(streamItem{err: fmt.Errorf("%w: %s frame on a data stream", wire.ErrProtocol, typ)})
			return
		}
		if !send(it) {
			return
		}
	}
}

// classify turns an apply error into the Error frame the process server
// acts on: gap, fork and bad-request (a corrupt segment) are permanent and
// lead to the agent's resynchronisation; fenced stops the agent; anything
// else (a full disk) is transient and retried.
func (t *Target) classify(err error, m *machine) *wire.Error {
	st := m.rep.Status()
	if we := wire.PosError(err, st.Applied); we != nil {
		return we
	}
	switch {
	case errors.Is(err, replica.ErrFenced):
		return &wire.Error{Code: wire.CodeFenced, Message: err.Error()}
	case errors.Is(err, replica.ErrCopying):
		// A copy was cut short (a crash, a broken stream): the replica
		// lacks part of it, so the agent must compare again.
		return &wire.Error{Code: wire.CodeGap, Message: err.Error()}
	case errors.Is(err, replica.ErrNotCopying):
		return &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	case errors.Is(err, journal.ErrCorrupt), errors.Is(err, replica.ErrMachineID), errors.Is(err, replica.ErrDiskRange):
		return &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &wire.Error{Code: wire.CodeUnavailable, Message: "stream taken over or target stopping", Transient: true}
	}
	return &wire.Error{Code: wire.CodeInternal, Message: err.Error(), Transient: true}
}

func (t *Target) serveControl(c *wire.Conn) error {
	for {
		var call wire.Call
		if err := c.Expect(wire.TypeCall, &call); err != nil {
			return err
		}
		result, blob, err := t.call(call)
		if err != nil {
			c.SendError(err)
			continue
		}
		if err := c.ReplyJSON(result, blob); err != nil {
			return err
		}
	}
}

func (t *Target) call(call wire.Call) (any, []byte, *wire.Error) {
	bad := func(err error) (any, []byte, *wire.Error) {
		return nil, nil, &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	}
	switch call.Method {
	case wire.MethodTree:
		var a wire.TreeArgs
		if err := json.Unmarshal(call.Args, &a); err != nil {
			return bad(err)
		}
		return t.treeAnswer(a)
	case wire.MethodStatus:
		return t.Status(), nil, nil
	}
	return bad(fmt.Errorf("unknown method %q", call.Method))
}

// treeAnswer answers one level of a comparison of a disk's hash tree. The
// tree is built from the replica's block map when a request names another
// disk, other parameters or another applied position than the kept one's
// (nothing is applied during a resync's comparison: the process server
// drained first), and dropped a minute after its last use.
func (t *Target) treeAnswer(a wire.TreeArgs) (any, []byte, *wire.Error) {
	bad := func(err error) (any, []byte, *wire.Error) {
		return nil, nil, &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	}
	req, err := blockmap.DecodeNodes(a.Request)
	if err != nil {
		return bad(fmt.Errorf("tree request: %w", err))
	}
	if req.Count() > wire.MaxTreeNodes || len(req.Hashes) > 0 {
		return bad(fmt.Errorf("tree request of %d nodes (at most %d, and no hashes)", req.Count(), wire.MaxTreeNodes))
	}
	t.mu.Lock()
	id, _ := canonicalID(a.Machine)
	m, ok := t.machines[id]
	t.mu.Unlock()
	if !ok {
		return bad(fmt.Errorf("no replica of machine %s", a.Machine))
	}
	disks := m.rep.Status().Disks
	if a.Disk < 0 || a.Disk >= len(disks) {
		return bad(fmt.Errorf("disk %d: the machine has %d disks", a.Disk, len(disks)))
	}
	if req.Params.Size != disks[a.Disk].Size {
		return bad(fmt.Errorf("tree of %d bytes, disk %s has %d", req.Params.Size, disks[a.Disk].Name, disks[a.Disk].Size))
	}
	rst := m.rep.Status()
	applied := rst.Applied
	m.mu.Lock()
	c := m.tree
	m.mu.Unlock()
	if c == nil || c.disk != a.Disk || c.params != req.Params || c.applied != applied || c.gen != rst.Generation {
		bm, err := m.rep.BlockMap(t.ctx, a.Disk, req.Params.BlockSize)
		if err != nil {
			return bad(err)
		}
		tree, err := blockmap.NewTree(bm, req.Params.Fanout, req.Params.Size)
		if err != nil {
			return bad(err)
		}
		c = &treeCache{disk: a.Disk, params: req.Params, applied: applied, gen: rst.Generation, tree: tree}
	}
	m.mu.Lock()
	c.used = time.Now()
	m.tree = c
	m.mu.Unlock()
	ans, err := c.tree.Answer(req)
	if err != nil {
		return bad(err)
	}
	blob, err := blockmap.AppendNodes(nil, ans)
	if err != nil {
		return bad(err)
	}
	return wire.TreeResult{Applied: applied}, blob, nil
}

// MachineStatus is one replica as the status call and /metrics see it.
type MachineStatus struct {
	ID     string         `json:"id"`
	Name   string         `json:"name,omitempty"`
	Status replica.Status `json:"status"`
	// BytesIn are packed bytes received, BytesOut the segment bytes they
	// unpacked to.
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	Segments uint64 `json:"segments"`
	// CopyBytes are the disk bytes copies wrote (initial replication of a
	// replica without recovery points), zero runs included.
	CopyBytes uint64 `json:"copy_bytes"`
}

// Status reports every replica.
func (t *Target) Status() []MachineStatus {
	var out []MachineStatus
	for _, id := range t.MachineIDs() {
		t.mu.Lock()
		m := t.machines[id]
		t.mu.Unlock()
		m.mu.Lock()
		ms := MachineStatus{ID: id, Name: m.name, BytesIn: m.bytesIn, BytesOut: m.bytesOut, Segments: m.segments, CopyBytes: m.copyBytes}
		m.mu.Unlock()
		ms.Status = m.rep.Status()
		out = append(out, ms)
	}
	return out
}
