package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/standby-dr/standby/internal/nbd"
)

// Overlay is a writable disk over a read-only one (a View's disk): the
// disk of an export (docs/exports.md). Blocks written, zeroed or trimmed
// live in a sparse data file the size of the disk; a bitmap, one bit per
// OverlayBlockSize block, says which blocks the data file holds. A block
// not in the overlay reads from the base. Creating one writes a header and
// truncates two files: its cost does not depend on the disk's size.
//
// Bits are only ever set, never cleared, and a flush makes the data
// durable before the bitmap pages that name it: so whatever part of a
// bitmap write a crash keeps, each set bit names durable data
// (overlay_map.go).
//
// Overlay implements nbd.Backend; its methods are safe for concurrent use.
// Reads run in parallel; writes, zeroes and trims take the overlay for
// themselves (a partial block is read, merged and written whole, which
// must not interleave with another write of the same block).
type Overlay struct {
	base  io.ReaderAt
	size  int64
	point uint64

	data    *os.File
	dataB   *nbd.FileBackend
	bm      *overlayMap
	flushMu sync.Mutex // one flush at a time: see Flush

	mu     sync.RWMutex // writers hold it exclusively; readers shared
	closed bool
	// writes counts write-like calls, each counted before it releases mu:
	// a copier that saw the count unchanged across a pass over the
	// overlay's blocks read a state no write was changing (hydration).
	writes atomic.Uint64
}

var _ nbd.Backend = (*Overlay)(nil)

// OverlayBlockSize is the overlay's unit of allocation: a write of part of
// a block first copies the rest of it from the base.
const OverlayBlockSize = 4096

// CreateOverlay makes a new, empty overlay over base (size bytes) in the
// files path+".data" and path+".map", which must not exist. point is
// recorded in the map's header, so that OpenOverlay can refuse to pair the
// files with another point.
func CreateOverlay(path string, base io.ReaderAt, size int64, point uint64) (*Overlay, error) {
	if size <= 0 {
		return nil, fmt.Errorf("create overlay %s: disk size %d: want a positive size", path, size)
	}
	data, err := os.OpenFile(path+".data", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create overlay: %w", err)
	}
	if err := data.Truncate(size); err != nil { // sparse: nothing allocated
		data.Close()
		os.Remove(path + ".data")
		return nil, fmt.Errorf("create overlay %s: %w", path, err)
	}
	bm, err := createMap(path+".map", mapHeader{Version: mapVersion, BlockSize: OverlayBlockSize, Size: size, Point: point})
	if err == nil {
		err = syncDir(path)
	}
	if err != nil {
		data.Close()
		os.Remove(path + ".data")
		os.Remove(path + ".map")
		return nil, fmt.Errorf("create overlay %s: %w", path, err)
	}
	return newOverlay(base, size, point, data, bm)
}

// OpenOverlay opens the overlay CreateOverlay made at path, over the same
// base: what a restarted master target does with the exports it had. It
// reads the map's allocated pages only (its holes are skipped), and
// refuses a map made for another size or point (ErrDamaged).
func OpenOverlay(path string, base io.ReaderAt, size int64, point uint64) (*Overlay, error) {
	bm, err := openMap(path+".map", size, point)
	if err != nil {
		return nil, fmt.Errorf("open overlay %s: %w", path, err)
	}
	data, err := os.OpenFile(path+".data", os.O_RDWR, 0)
	if err == nil {
		var fi os.FileInfo
		if fi, err = data.Stat(); err == nil && fi.Size() != size {
			err = fmt.Errorf("%w: data file of %d bytes for a disk of %d", ErrDamaged, fi.Size(), size)
		}
		if err != nil {
			data.Close()
		}
	}
	if err != nil {
		bm.close()
		return nil, fmt.Errorf("open overlay %s: %w", path, err)
	}
	return newOverlay(base, size, point, data, bm)
}

func newOverlay(base io.ReaderAt, size int64, point uint64, data *os.File, bm *overlayMap) (*Overlay, error) {
	db, err := nbd.NewFileBackend(data)
	if err != nil {
		data.Close()
		bm.close()
		return nil, err
	}
	return &Overlay{base: base, size: size, point: point, data: data, dataB: db, bm: bm}, nil
}

// RemoveOverlay deletes the files of the overlay at path (closed first).
// Files already gone are not an error.
func RemoveOverlay(path string) error {
	var errs []error
	for _, f := range []string{path + ".data", path + ".map"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Size is the disk's size in bytes.
func (o *Overlay) Size() int64 { return o.size }

// Point is the recovery point id the overlay was made over.
func (o *Overlay) Point() uint64 { return o.point }

// Blocks is how many blocks the overlay holds (written, zeroed or trimmed
// since it was made).
func (o *Overlay) Blocks() int64 {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.bm.count
}

// Writes counts the write, zero and trim calls made so far (since the
// overlay was opened).
func (o *Overlay) Writes() uint64 { return o.writes.Load() }

// HasBlock says whether block k (of OverlayBlockSize bytes) is in the
// overlay: written, zeroed or trimmed since the overlay was made. A block
// that is not reads as the recovery point, which never changes.
func (o *Overlay) HasBlock(k int64) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return k >= 0 && k*OverlayBlockSize < o.size && o.bm.get(k)
}

// Close flushes nothing (Flush is the client's to call) and closes the
// files. It waits for calls in progress; later calls fail with ErrClosed
// (ESHUTDOWN to an NBD client). The base is the caller's to close.
func (o *Overlay) Close() error {
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	return errors.Join(o.data.Close(), o.bm.close())
}

// errOverlayClosed is ErrClosed that an NBD server reports as ESHUTDOWN.
var errOverlayClosed = fmt.Errorf("overlay: %w: %w", ErrClosed, syscall.ESHUTDOWN)

// check validates a request's range; the caller holds mu.
func (o *Overlay) check(off, n int64) error {
	if o.closed {
		return errOverlayClosed
	}
	if off < 0 || n < 0 || off > o.size || n > o.size-off {
		return fmt.Errorf("overlay: range %d+%d outside the disk's %d bytes: %w", off, n, o.size, syscall.EINVAL)
	}
	return nil
}

// block is the range of block k: [start, end), end short for the last.
func (o *Overlay) block(k int64) (start, end int64) {
	start = k * OverlayBlockSize
	return start, min(start+OverlayBlockSize, o.size)
}

// run returns the end of the run of blocks starting at off that are all in
// the overlay, or all not, stopping at limit; and which of the two it is.
func (o *Overlay) run(off, limit int64) (end int64, inOverlay bool) {
	k := off / OverlayBlockSize
	inOverlay = o.bm.get(k)
	for {
		_, end = o.block(k)
		if end >= limit {
			return limit, inOverlay
		}
		k++
		if o.bm.get(k) != inOverlay {
			return end, inOverlay
		}
	}
}

// ReadAt fills p from off: blocks in the overlay from its data file, the
// others from the base.
func (o *Overlay) ReadAt(ctx context.Context, p []byte, off int64) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if err := o.check(off, int64(len(p))); err != nil {
		return err
	}
	end := off + int64(len(p))
	for pos := off; pos < end; {
		runEnd, in := o.run(pos, end)
		b := p[pos-off : runEnd-off]
		var err error
		if in {
			err = o.dataB.ReadAt(ctx, b, pos)
		} else {
			err = readFull(o.base, b, pos)
		}
		if err != nil {
			return fmt.Errorf("overlay read %d+%d: %w", pos, len(b), err)
		}
		pos = runEnd
	}
	return nil
}

// WriteAt writes p at off into the overlay; with fua it returns once the
// write is durable.
func (o *Overlay) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	err := o.change(ctx, off, int64(len(p)), func(b []byte, at int64) {
		copy(b, p[at-off:])
	}, func(from, to int64) error {
		return o.dataB.WriteAt(ctx, p[from-off:to-off], from, false)
	})
	if err == nil && fua {
		err = o.Flush(ctx)
	}
	return err
}

// Zero makes the range read as zeros. Whole blocks become holes of the
// data file (allocated zeros if !mayTrim); the parts of blocks at the
// edges are merged with the rest of their block.
func (o *Overlay) Zero(ctx context.Context, off, length int64, mayTrim, fua bool) error {
	err := o.change(ctx, off, length, func(b []byte, _ int64) {
		clear(b)
	}, func(from, to int64) error {
		return o.dataB.Zero(ctx, from, to-from, mayTrim, false)
	})
	if err == nil && fua {
		err = o.Flush(ctx)
	}
	return err
}

// Trim discards the whole blocks of the range: they read as zeros after
// (the overlay's holes), and the base no longer shows through them. The
// parts of blocks at the edges are left as they are, as a trim is a hint.
func (o *Overlay) Trim(ctx context.Context, off, length int64, fua bool) error {
	from := (off + OverlayBlockSize - 1) / OverlayBlockSize * OverlayBlockSize
	to := (off + length) / OverlayBlockSize * OverlayBlockSize
	if off+length == o.size {
		to = o.size // the last block may be short
	}
	if to <= from {
		o.mu.RLock()
		defer o.mu.RUnlock()
		return o.check(off, length)
	}
	return o.Zero(ctx, from, to-from, true, fua)
}

// change applies a write-like operation to [off, off+n). whole writes the
// range [from, to) of whole blocks to the data file; merge changes a
// partial block b (which starts at at) in memory, after which the whole
// block is written. Bits are set after the data is written.
func (o *Overlay) change(ctx context.Context, off, n int64, merge func(b []byte, at int64), whole func(from, to int64) error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.writes.Add(1)
	if err := o.check(off, n); err != nil {
		return err
	}
	end := off + n
	for pos := off; pos < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := pos / OverlayBlockSize
		bs, be := o.block(k)
		if pos == bs && end >= be {
			// The run of blocks this request covers entirely.
			to := end / OverlayBlockSize * OverlayBlockSize
			if end == o.size {
				to = end
			}
			if err := whole(pos, to); err != nil {
				return fmt.Errorf("overlay write %d+%d: %w", pos, to-pos, err)
			}
			o.bm.setRange(k, (to+OverlayBlockSize-1)/OverlayBlockSize)
			pos = to
			continue
		}
		if err := o.mergeBlock(ctx, k, pos, min(end, be), merge); err != nil {
			return err
		}
		pos = min(end, be)
	}
	return nil
}

// mergeBlock changes [from, to), a part of block k, by reading the whole
// block (from the overlay if it is there, else from the base), merging and
// writing it back.
func (o *Overlay) mergeBlock(ctx context.Context, k, from, to int64, merge func(b []byte, at int64)) error {
	bs, be := o.block(k)
	buf := make([]byte, be-bs)
	var err error
	if o.bm.get(k) {
		err = o.dataB.ReadAt(ctx, buf, bs)
	} else {
		err = readFull(o.base, buf, bs)
	}
	if err != nil {
		return fmt.Errorf("overlay read block %d: %w", k, err)
	}
	merge(buf[from-bs:to-bs], from)
	if err := o.dataB.WriteAt(ctx, buf, bs, false); err != nil {
		return fmt.Errorf("overlay write block %d: %w", k, err)
	}
	o.bm.setRange(k, k+1)
	return nil
}

// Flush makes every write completed before it durable: the data file
// first, then the bitmap pages changed since the last flush. Flushes run
// one at a time, so that one never returns while another still holds
// pages it took.
func (o *Overlay) Flush(ctx context.Context) error {
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return errOverlayClosed
	}
	pages := o.bm.takeDirty()
	o.mu.Unlock()
	err := o.dataB.Flush(ctx)
	if err != nil {
		err = fmt.Errorf("overlay flush data: %w", err)
	} else if err = o.bm.writePages(pages); err != nil {
		err = fmt.Errorf("overlay flush map: %w", err)
	}
	if err != nil {
		o.mu.Lock()
		o.bm.redirty(pages) // the next flush tries them again
		o.mu.Unlock()
	}
	return err
}

// maxOverlayExtents bounds one Extents answer; NBD clients ask again.
const maxOverlayExtents = 1024

// Extents reports the base's blocks as data (a View does not tell its
// holes) and the overlay's as its data file does: zeroed and trimmed
// blocks are holes that read as zeros.
func (o *Overlay) Extents(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if err := o.check(off, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, fmt.Errorf("overlay extents: empty range at %d: %w", off, syscall.EINVAL)
	}
	end := off + length
	var exts []nbd.Extent
	add := func(e nbd.Extent) {
		if n := len(exts); n > 0 && exts[n-1].Hole == e.Hole && exts[n-1].Zero == e.Zero {
			exts[n-1].Length += e.Length
			return
		}
		exts = append(exts, e)
	}
	for pos := off; pos < end && len(exts) < maxOverlayExtents; {
		runEnd, in := o.run(pos, end)
		if !in {
			add(nbd.Extent{Length: runEnd - pos})
			pos = runEnd
			continue
		}
		des, err := o.dataB.Extents(ctx, pos, runEnd-pos)
		if err != nil {
			return nil, fmt.Errorf("overlay extents: %w", err)
		}
		for _, e := range des {
			add(e)
			pos += e.Length
		}
	}
	return exts, nil
}
