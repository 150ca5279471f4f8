package process

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/wire"
)

// A copy (docs/protocol.md §5) passes the process server without touching
// its cache: the agent stream's reader queues each Copy frame for the
// forwarding session that took the rebase, which sends it on while the
// reader takes the next. The queue is short, so the agent is held back by
// the master target. A copy belongs to one forwarding session; if that
// session ends, the copy has failed and the agent compares again.

// copyQueue is how many Copy frames may wait for the forwarding session.
const copyQueue = 8

// copyOp is one Copy frame (its payload owned by the op, from copyBufs),
// or the CopyEnd (answered on done once the target has the copy durably).
type copyOp struct {
	gen     uint64
	payload *[]byte
	end     *wire.CopyEnd
	done    chan error
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 0, wire.CopyFrameData+wire.CopyHeaderSize); return &b }}

// queueCopy queues a Copy frame's payload (which the queue then owns, and
// returns to copyBufs once sent) or, with end set, the CopyEnd of copy
// gen, and for the end waits until the copy is durable at the master
// target. It fails at once when the copy has failed.
func (f *forwarder) queueCopy(ctx context.Context, gen uint64, payload *[]byte, end *wire.CopyEnd) error {
	op := &copyOp{gen: gen, end: end, payload: payload}
	if end != nil {
		op.done = make(chan error, 1)
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	queued := false
	for {
		f.mu.Lock()
		err, ch := f.copyErr, f.changed
		if f.copyGen != gen {
			err = &wire.Error{Code: wire.CodeUnavailable, Message: "copy: superseded by another rebase", Transient: true}
		}
		f.mu.Unlock()
		if err != nil {
			return err
		}
		if queued {
			select {
			case err := <-op.done:
				return err
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		select {
		case f.copyq <- op:
			if end == nil {
				return nil
			}
			queued = true
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return &wire.Error{Code: wire.CodeUnavailable, Message: "copy: the stream to the master target does not take frames", Transient: true}
		}
	}
}

// serveCopy sends one queued op on the session's stream. An op of a copy
// this session did not start (a session before it failed) is dropped.
func (f *forwarder) serveCopy(ctx context.Context, c *wire.Conn, s *sendState, op *copyOp, readErr chan error) error {
	if op.payload != nil {
		defer copyBufs.Put(op.payload)
	}
	if !s.copying || op.gen != s.copyGen {
		if op.done != nil {
			op.done <- &wire.Error{Code: wire.CodeUnavailable, Message: "copy: the stream to the master target it began on ended", Transient: true}
		}
		return nil
	}
	if op.end != nil {
		err := f.endCopy(ctx, c, s, *op.end, readErr)
		op.done <- err
		return err
	}
	return f.sendCopy(ctx, c, *op.payload)
}

// sendCopy forwards one Copy frame, compressed when that pays.
func (f *forwarder) sendCopy(ctx context.Context, c *wire.Conn, payload []byte) error {
	h, data, err := wire.ParseCopy(payload)
	if err != nil {
		return &wire.Error{Code: wire.CodeBadRequest, Message: err.Error()}
	}
	out := payload
	compress := h.Flags == 0 && f.p.o.Pack.Level != segpack.LevelNone && (!f.p.o.Adaptive || f.tuner.Compress())
	if compress {
		z, err := f.zstd()
		if err != nil {
			return err
		}
		hz := h
		hz.Flags = wire.CopyZstd
		f.zbuf = z.EncodeAll(data, append(f.zbuf[:0], hz.Header()...))
		if len(f.zbuf) < len(payload) {
			out = f.zbuf
		}
	}
	t0 := time.Now()
	if err := f.p.limit.wait(ctx, len(out), func() error { return c.Send(wire.TypePing, nil) }); err != nil {
		return err
	}
	f.ad.limited(time.Since(t0).Seconds())
	if err := c.Send(wire.TypeCopy, out); err != nil {
		return err
	}
	in := len(payload)
	if h.Flags&wire.CopyZero == 0 {
		f.tuner.Sent(compress, int64(h.Length))
	}
	f.p.counters.add(in, len(out))
	f.update(func() {
		f.stats.CopyFrames++
		f.stats.BytesBefore += uint64(in)
		f.stats.BytesAfter += uint64(len(out))
		if h.Flags&wire.CopyZero != 0 {
			f.stats.ZeroBytes += h.Length
		}
	})
	return nil
}

// endCopy passes the agent's CopyEnd on and waits until the master target
// has the copy durably.
func (f *forwarder) endCopy(ctx context.Context, c *wire.Conn, s *sendState, end wire.CopyEnd, readErr chan error) error {
	s.copying = false
	if err := c.SendJSON(wire.TypeCopyEnd, end); err != nil {
		return err
	}
	select {
	case <-s.copied:
		return nil
	case err := <-readErr:
		readErr <- err
		var we *wire.Error
		if errors.As(err, &we) {
			return we
		}
		return &wire.Error{Code: wire.CodeUnavailable, Message: "master target stream ended before the copy was durable", Transient: true}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// zstd returns the forwarder's encoder for Copy frames, made on first use.
func (f *forwarder) zstd() (*zstd.Encoder, error) {
	if f.enc == nil {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(f.p.o.Pack.Level.ZstdLevel()), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		f.enc = enc
	}
	return f.enc, nil
}
