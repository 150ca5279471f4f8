package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/wire"
)

// copyRead is how much of a disk the copy reads at once; a Copy frame
// carries at most copyChunk of it.
const (
	copyRead  = 4 << 20
	copyChunk = wire.CopyFrameData
	// copyReaders is how many reads of a copy are outstanding at once.
	copyReaders = 2
)

// copy sends the differing ranges of the disks as Copy frames, read from
// the disks after StartResync: a block changed meanwhile is also in the
// journal after the resync position, which the replica applies after the
// copy. Blocks of zeros are sent as zero runs, or not at all to a disk the
// replica holds as zeros. Reading runs ahead of sending by a few chunks.
// Each of conns (the streams of a copy tunnel, or the data stream) has a
// sender of its own, which takes the next chunk read; packers[i], when
// not nil, compresses what conns[i] sends. The ends say what each
// carried.
func (s *shipper) copy(ctx context.Context, conns []*wire.Conn, diff difference, packers []*copyPacker) ([]wire.CopyEnd, error) {
	ends := make([]wire.CopyEnd, len(conns))
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
		n    int64
		data []byte
	}
	// Buffers: one read waiting for a sender, besides those being read and
	// sent: 5 of 4 MiB with two readers and two streams.
	const ahead = 1
	free := make(chan []byte, ahead+copyReaders+len(conns))
	for range ahead + copyReaders + len(conns) {
		free <- make([]byte, copyRead)
	}
	// The chunks to read, in disk order, for copyReaders readers: reads
	// of the next chunks are outstanding while one completes.
	todo := make(chan chunk)
	go func() {
		defer close(todo)
		for _, e := range diff.exts {
			for off, stop := e.Offset, e.Offset+e.Length; off < stop; {
				n := min(int64(copyRead), stop-off)
				// A chunk ends at a chunk boundary, so reads stay aligned.
				n = min(n, copyRead-off%copyRead)
				select {
				case todo <- chunk{disk: e.Disk, off: off, n: n}:
				case <-ctx.Done():
					return
				}
				off += n
			}
		}
	}()
	chunks := make(chan chunk, ahead)
	var readErr atomic.Pointer[error]
	var readers sync.WaitGroup
	for range copyReaders {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for ch := range todo {
				var buf []byte
				select {
				case buf = <-free:
				case <-ctx.Done():
					return
				}
				ch.data = buf[:ch.n]
				if err := readAt(s.a.disk(ch.disk), direct[ch.disk], ch.data, ch.off); err != nil {
					err = fmt.Errorf("read disk %s at %d: %w", s.m.Disks()[ch.disk].Name(), ch.off, err)
					readErr.CompareAndSwap(nil, &err)
					cancel()
					return
				}
				select {
				case chunks <- ch:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		readers.Wait()
		close(chunks)
	}()
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ch := range chunks {
				var n int
				var err error
				for from := 0; from < len(ch.data) && err == nil && ctx.Err() == nil; from += copyChunk {
					var k int
					k, err = s.sendCopy(c, ch.disk, ch.off+int64(from), ch.data[from:min(from+copyChunk, len(ch.data))], diff.zeroDisks[ch.disk], packers[i], &ends[i])
					n += k
				}
				free <- ch.data[:cap(ch.data)]
				if err != nil {
					errs[i] = err
					cancel()
				}
				if ctx.Err() != nil { // this sender failed, or another, or a read
					return
				}
				s.copyLeft.Add(-int64(len(ch.data)))
				s.mu.Lock()
				s.st.SentBytes += uint64(n)
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := readErr.Load(); err != nil {
		return ends, *err
	}
	if err := errors.Join(errs...); err != nil {
		return ends, err
	}
	return ends, ctx.Err()
}

// sendCopy sends one chunk read at off as runs: data (compressed by z when
// it is not nil and that pays), and zeros (skipped when the replica's disk
// is known to be zeros). It returns the bytes put on the stream.
func (s *shipper) sendCopy(c *wire.Conn, disk int, off int64, data []byte, remoteZero bool, z *copyPacker, end *wire.CopyEnd) (int, error) {
	sent := 0
	send := func(from, to int, zero bool) error {
		h := wire.CopyHeader{Disk: uint32(disk), Offset: uint64(off) + uint64(from), Length: uint64(to - from)}
		var err error
		if zero {
			h.Flags = wire.CopyZero
			err = c.Send(wire.TypeCopy, h.Header())
			sent += wire.CopyHeaderSize
		} else if p, compressed := z.pack(h, data[from:to]); p != nil {
			err = c.Send(wire.TypeCopy, p)
			sent += len(p)
			z.sent(compressed, h.Length)
		} else {
			err = c.SendParts(wire.TypeCopy, h.Header(), data[from:to])
			sent += wire.CopyHeaderSize + to - from
			z.sent(compressed, h.Length)
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

// copyPacker compresses the Copy frames of a copy tunnel as the process
// server's offer says: the process server cannot, as the tunnel's bytes
// are encrypted for the master target (it compresses the Copy frames it
// forwards itself the same way). With "auto" a segpack.CopyTuner decides
// by measuring.
type copyPacker struct {
	level    segpack.Level
	adaptive bool
	tuner    segpack.CopyTuner
	enc      *zstd.Encoder // made at the first frame compressed
	buf      []byte
}

// newCopyPacker returns the packer for a tunnel offer's compression, nil
// for none.
func newCopyPacker(compression string) (*copyPacker, error) {
	level, adaptive, err := segpack.ParseCompression(compression)
	if err != nil {
		return nil, fmt.Errorf("copy tunnel compression: %w", err)
	}
	if level == segpack.LevelNone {
		return nil, nil
	}
	return &copyPacker{level: level, adaptive: adaptive}, nil
}

// pack returns the Copy frame of data at h compressed, or nil when it
// is not to be compressed now or did not get smaller; compressed says
// whether compression was tried (for sent).
func (z *copyPacker) pack(h wire.CopyHeader, data []byte) (p []byte, compressed bool) {
	if z == nil {
		return nil, false
	}
	if z.adaptive && !z.tuner.Compress() {
		z.close() // until the tuner measures again: the agent's memory
		z.enc, z.buf = nil, nil
		return nil, false
	}
	if z.enc == nil {
		// The agent's memory matters more than the last percent of
		// compression: a small window, the encoder's lower-memory mode.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(z.level.ZstdLevel()), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, false
		}
		z.enc = enc
	}
	hz := h
	hz.Flags = wire.CopyZstd
	z.buf = z.enc.EncodeAll(data, append(z.buf[:0], hz.Header()...))
	if len(z.buf) >= wire.CopyHeaderSize+len(data) {
		return nil, true
	}
	return z.buf, true
}

// sent records a frame of n disk bytes sent, compressed or not.
func (z *copyPacker) sent(compressed bool, n uint64) {
	if z != nil && z.adaptive {
		z.tuner.Sent(compressed, int64(n))
	}
}

// close releases the encoder.
func (z *copyPacker) close() {
	if z != nil && z.enc != nil {
		z.enc.Close()
	}
}
