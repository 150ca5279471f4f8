package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/wire"
)

// copyRead is how much of a disk the copy reads at once; a Copy frame
// carries at most copyChunk of it.
const (
	copyRead  = 4 << 20
	copyChunk = 1 << 20
)

// copy sends the differing ranges of the disks as Copy frames, read from
// the disks after StartResync: a block changed meanwhile is also in the
// journal after the resync position, which the replica applies after the
// copy. Blocks of zeros are sent as zero runs, or not at all to a disk the
// replica holds as zeros. Reading runs ahead of sending by a few chunks.
func (s *shipper) copy(ctx context.Context, c *wire.Conn, diff difference) (wire.CopyEnd, error) {
	var end wire.CopyEnd
	// Reads go around the page cache where the disk allows (O_DIRECT:
	// the copy reads each block once, and filling the cache costs CPU),
	// else with a larger read-ahead: the copy reads in disk order.
	direct := make([]*os.File, len(s.m.Disks()))
	for i, f := range s.a.files {
		if d, err := os.OpenFile(f.Name(), os.O_RDONLY|unix.O_DIRECT, 0); err == nil {
			direct[i] = d
			defer d.Close()
		}
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
	const ahead = 3
	free := make(chan []byte, ahead+2)
	for range ahead + 2 {
		free <- make([]byte, copyRead)
	}
	chunks := make(chan chunk, ahead)
	go func() {
		defer close(chunks)
		for _, e := range diff.exts {
			f := s.a.disk(e.Disk)
			for off, stop := e.Offset, e.Offset+e.Length; off < stop; {
				var buf []byte
				select {
				case buf = <-free:
				case <-ctx.Done():
					return
				}
				n := min(int64(copyRead), stop-off)
				// A chunk ends at a chunk boundary, so reads stay aligned.
				n = min(n, copyRead-off%copyRead)
				err := readAt(f, direct[e.Disk], buf[:n], off)
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
		var n int
		var err error
		for from := 0; from < len(ch.data) && err == nil; from += copyChunk {
			var k int
			k, err = s.sendCopy(c, ch.disk, ch.off+int64(from), ch.data[from:min(from+copyChunk, len(ch.data))], diff.zeroDisks[ch.disk], &end)
			n += k
		}
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

// readAt fills p from f at off, through direct (an O_DIRECT descriptor of
// the same file, or nil) when p and off are aligned for it; past the end of
// a file it reads zeros.
func readAt(f io.ReaderAt, direct *os.File, p []byte, off int64) error {
	if direct != nil && off%directAlign == 0 && len(p)%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0 {
		if n, err := direct.ReadAt(p, off); n == len(p) {
			return nil
		} else if err != nil && err != io.EOF {
			return err
		}
		// A short read at the end of the file: finish through the cache.
	}
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if fi, ok := f.(*os.File); ok && err != nil && n < len(p) {
		st, serr := fi.Stat()
		if serr == nil && st.Mode().IsRegular() && off+int64(n) >= st.Size() {
			clear(p[n:])
			return nil
		}
	}
	return err
}

// directAlign is the alignment of offset, length and memory an O_DIRECT
// read needs.
const directAlign = 4096
