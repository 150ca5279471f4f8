package replica

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/journal"
)

// View presents the disks of the machine at one recovery point, read-only.
// A View of a point pins it: Prune neither removes the point nor rolls the
// base past it until Close. It holds its own descriptors of the files it
// reads, so it stays exact while the replica applies and prunes.
type View struct {
	r       *Replica
	point   Point
	disks   []DiskInfo
	readers []io.ReaderAt
	files   []*os.File
	lazy    bool // the base images are lazy: read them through lazyBase
	once    sync.Once
	err     error
}

// Point is the point the view presents; ID 0 for the latest state.
func (v *View) Point() Point { return v.point }

// Disks are the machine's disks, in journal order.
func (v *View) Disks() []DiskInfo { return slices.Clone(v.disks) }

// Size is the size of disk i in bytes.
func (v *View) Size(i int) int64 { return v.disks[i].Size }

// DiskReaderAt returns disk i at the view's point. Reads are safe for
// concurrent use; a read past the disk's end returns io.EOF.
func (v *View) DiskReaderAt(i int) io.ReaderAt { return v.readers[i] }

// Close releases the view's files and its pin on the point.
func (v *View) Close() error {
	v.once.Do(func() {
		for _, f := range v.files {
			v.err = errors.Join(v.err, f.Close())
		}
		if v.point.ID != 0 {
			v.r.unpin(v.point.ID)
		}
	})
	return v.err
}

// OpenPoint opens a view of recovery point id. Building it reads the
// stored segments between the base and the point into an in-memory
// extent index (last writer wins): its cost follows the journal between the
// base and the point, not the disks' size. Reads go to the index, else to
// the base image; where a lazy base is not seeded, to the current image
// (which then holds the base's content), so such a view reads current and
// returns ErrClosed after the replica is closed.
//
// id 0 is the latest state: a live view of the current images, which move
// as Apply proceeds (a read sees the state after some whole segment, never
// a half-applied one). It returns ErrNotConsistent while the replica is
// resynchronising: use a recovery point then. A live view does not pin.
func (r *Replica) OpenPoint(ctx context.Context, id uint64) (*View, error) {
	if id == 0 {
		return r.openLatest()
	}
	v, spans, err := r.pin(id)
	if err != nil {
		return nil, fmt.Errorf("replica open point %d: %w", id, err)
	}
	if err := v.build(ctx, spans); err != nil {
		v.Close()
		return nil, fmt.Errorf("replica open point %d: %w", id, err)
	}
	return v, nil
}

func (r *Replica) openLatest() (*View, error) {
	st, err := r.snapshot(false)
	if err != nil {
		return nil, fmt.Errorf("replica open latest: %w", err)
	}
	if !st.Consistent {
		return nil, fmt.Errorf("replica open latest: machine %s at seq %d: %w", st.MachineID, st.Applied.Seq, ErrNotConsistent)
	}
	v := &View{r: r, disks: slices.Clone(st.Disks)}
	for i := range st.Disks {
		v.readers = append(v.readers, &liveDisk{r: r, disk: i, size: st.Disks[i].Size})
	}
	return v, nil
}

// span is a stored segment's records a view needs: lo < seq ≤ hi.
type span struct {
	lo, hi uint64
}

// pin pins point id and opens the files its view reads: the base images
// and the stored segments with records between the base and the point.
// It holds filesMu's read lock, so Prune cannot delete them before they
// are open.
func (r *Replica) pin(id uint64) (*View, []span, error) {
	r.filesMu.RLock()
	defer r.filesMu.RUnlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil, ErrClosed
	}
	st := r.st
	i, ok := st.point(id)
	if !ok {
		r.mu.Unlock()
		return nil, nil, ErrNotFound
	}
	r.pins[id]++
	r.mu.Unlock()
	v := &View{r: r, point: st.Points[i], disks: slices.Clone(st.Disks), lazy: st.BaseGen > 0}
	v.point.InUse = true
	if err := v.openBase(r.dir); err != nil {
		v.Close()
		return nil, nil, err
	}
	var spans []span
	for _, e := range st.Log {
		lo, hi := e.span(st.Base, v.point.at())
		if lo == hi {
			continue
		}
		f, err := os.Open(filepath.Join(r.dir, segmentsDir, segName(e.Index)))
		if err != nil {
			v.Close()
			return nil, nil, err
		}
		v.files = append(v.files, f)
		spans = append(spans, span{lo: lo, hi: hi})
	}
	return v, spans, nil
}

func (v *View) openBase(dir string) error {
	for _, d := range v.disks {
		f, err := os.Open(filepath.Join(dir, baseDir, d.Name+imageExt))
		if err != nil {
			return err
		}
		v.files = append(v.files, f)
	}
	return nil
}

func (r *Replica) unpin(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pins[id]--; r.pins[id] <= 0 {
		delete(r.pins, id)
	}
}

// build reads the view's segments (v.files after the base images) and
// makes each disk's index.
func (v *View) build(ctx context.Context, spans []span) error {
	nd := len(v.disks)
	chs := make([][]change, nd)
	segs := make([]io.ReaderAt, len(spans))
	for k, sp := range spans {
		if err := ctx.Err(); err != nil {
			return err
		}
		f := v.files[nd+k]
		segs[k] = f
		if err := readChanges(f, k, sp, chs); err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(f.Name()), err)
		}
	}
	for i, d := range v.disks {
		var base io.ReaderAt = v.files[i]
		if v.lazy {
			base = &lazyBase{r: v.r, disk: i, f: v.files[i]}
		}
		v.readers = append(v.readers, &indexedDisk{size: d.Size, index: buildIndex(chs[i]), base: base, files: segs})
	}
	return nil
}

// readChanges appends the change records of span sp of the segment in f
// (file number k of the view) to chs, per disk.
func readChanges(f *os.File, k int, sp span, chs [][]change) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	rd, err := journal.NewReader(bufio.NewReaderSize(io.NewSectionReader(f, 0, fi.Size()), 64<<10))
	if err != nil {
		return err
	}
	var rec journal.Record
	for {
		err := rd.Next(&rec)
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if rec.Seq <= sp.lo || rec.Kind == journal.KindBookmark {
			continue
		}
		if rec.Seq > sp.hi {
			return nil
		}
		if int(rec.Disk) >= len(chs) {
			return fmt.Errorf("%w: record %d names disk %d", ErrDiskRange, rec.Seq, rec.Disk)
		}
		c := change{off: int64(rec.Offset), end: int64(rec.End()), file: -1}
		if rec.Kind == journal.KindWrite {
			c.file, c.foff = k, rd.Offset()-int64(len(rec.Data))
		}
		chs[rec.Disk] = append(chs[rec.Disk], c)
	}
}

// liveDisk reads a current image under curMu, so that a read never sees a
// segment half applied.
type liveDisk struct {
	r    *Replica
	disk int
	size int64
}

func (d *liveDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(p)
	p = p[:min(int64(want), d.size-off)]
	d.r.curMu.RLock()
	defer d.r.curMu.RUnlock()
	if d.r.cur == nil {
		return 0, ErrClosed
	}
	if err := readFull(d.r.cur[d.disk].f, p, off); err != nil {
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// BlockMap hashes current image disk (its holes are not read) into a
// block map with the given block size (0: blockmap.DefaultBlockSize). The
// map is of the frontier when BlockMap was called: Apply waits meanwhile.
func (r *Replica) BlockMap(ctx context.Context, disk int, blockSize int) (*blockmap.Map, error) {
	r.curMu.RLock()
	defer r.curMu.RUnlock()
	if r.cur == nil {
		return nil, fmt.Errorf("replica block map: %w", ErrClosed)
	}
	if disk < 0 || disk >= len(r.cur) {
		return nil, fmt.Errorf("replica block map: disk %d: allowed: 0 to %d", disk, len(r.cur)-1)
	}
	im := r.cur[disk]
	var holes []blockmap.Extent
	for off := int64(0); off < im.b.Size(); {
		exts, err := im.b.Extents(ctx, off, im.b.Size()-off)
		if err != nil {
			return nil, fmt.Errorf("replica block map: disk %d: %w", disk, err)
		}
		for _, e := range exts {
			if e.Hole {
				holes = append(holes, blockmap.Extent{Off: off, Len: e.Length})
			}
			off += e.Length
		}
	}
	m, err := blockmap.Hasher{BlockSize: blockSize}.Hash(ctx, im.f, im.b.Size(), holes)
	if err != nil {
		return nil, fmt.Errorf("replica block map: disk %d: %w", disk, err)
	}
	return m, nil
}
