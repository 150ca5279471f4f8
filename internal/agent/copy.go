package agent

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/wire"
)

// copyChunk is how much of a disk the copy reads at once; a Copy frame
// carries at most this much data.
const copyChunk = 1 << 20

// copy sends the differing ranges of the disks as Copy frames, read from
// the disks after StartResync: a block changed meanwhile is also in the
// journal after the resync position, which the replica applies after the
// copy. Blocks of zeros are sent as zero runs, or not at all to a disk the
// replica holds as zeros. Reading runs ahead of sending by a few chunks.
func (s *shipper) copy(ctx context.Context, c *wire.Conn, diff difference) (wire.CopyEnd, error) {
	var end wire.CopyEnd
	for _, f := range s.a.files {
		// A larger read-ahead: the copy reads in disk order.
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	}
	s.copyLeft.Store(diff.bytes())
	defer s.copyLeft.Store(0)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type chunk struct {
		disk int
		off  int64
		data []byte
		err  error
	}
	const ahead = 4
	free := make(chan []byte, ahead+2)
	for range ahead + 2 {
		free <- make([]byte, copyChunk)
	}
	chunks := make(chan chunk, ahead)
	go func() {
		defer close(chunks)
		for _, e := range diff.exts {
			f := s.a.files[e.Disk]
			for off, stop := e.Offset, e.Offset+e.Length; off < stop; {
				var buf []byte
				select {
				case buf = <-free:
				case <-ctx.Done():
					return
				}
				n := min(int64(copyChunk), stop-off)
				// A chunk ends at a chunk boundary, so reads stay aligned.
				n = min(n, copyChunk-off%copyChunk)
				err := readAt(f, buf[:n], off)
				select {
				case chunks <- chunk{disk: e.Disk, off: off, data: buf[:n], err: err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
				off += n
			}
		}
	}()
	for ch := range chunks {
		if ch.err != nil {
			return end, fmt.Errorf("read disk %s at %d: %w", s.m.Disks()[ch.disk].Name(), ch.off, ch.err)
		}
		n, err := s.sendCopy(c, ch.disk, ch.off, ch.data, diff.zeroDisks[ch.disk], &end)
		free <- ch.data[:cap(ch.data)]
		if err != nil {
			return end, err
		}
		s.copyLeft.Add(-int64(len(ch.data)))
		s.mu.Lock()
		s.st.SentBytes += uint64(n)
		s.mu.Unlock()
	}
	return end, ctx.Err()
}

// sendCopy sends one chunk read at off as runs: data, and zeros (skipped
// when the replica's disk is known to be zeros). It returns the bytes put
// on the stream.
func (s *shipper) sendCopy(c *wire.Conn, disk int, off int64, data []byte, remoteZero bool, end *wire.CopyEnd) (int, error) {
	sent := 0
	send := func(from, to int, zero bool) error {
		h := wire.CopyHeader{Disk: uint32(disk), Offset: uint64(off) + uint64(from), Length: uint64(to - from)}
		var err error
		if zero {
			h.Flags = wire.CopyZero
			err = c.Send(wire.TypeCopy, h.Header())
			sent += wire.CopyHeaderSize
		} else {
			err = c.SendParts(wire.TypeCopy, h.Header(), data[from:to])
			sent += wire.CopyHeaderSize + to - from
		}
		end.Frames++
		end.Bytes += h.Length
		return err
	}
	runStart, runZero := 0, false
	for b := 0; b < len(data); b += blockSize {
		z := blockmap.AllZero(data[b:min(b+blockSize, len(data))])
		if b == 0 {
			runZero = z
			continue
		}
		if z != runZero {
			if !runZero || !remoteZero {
				if err := send(runStart, b, runZero); err != nil {
					return sent, err
				}
			}
			runStart, runZero = b, z
		}
	}
	if !runZero || !remoteZero {
		if err := send(runStart, len(data), runZero); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// readAt fills p from f at off; past the end of a file it reads zeros.
func readAt(f *os.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err != nil && n < len(p) {
		st, serr := f.Stat()
		if serr == nil && st.Mode().IsRegular() && off+int64(n) >= st.Size() {
			clear(p[n:])
			return nil
		}
	}
	return err
}
