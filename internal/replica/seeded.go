package replica

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
)

// A lazy base (state.json's base_gen ≥ 1) does not hold every block of the
// state at the base. Each disk has a seeded bitmap, one bit per seedBlock
// bytes: a seeded block is in the base image; an unseeded block has not
// been touched by any record applied to current since the base was made
// lazy (BeginCopy), so the current image holds its content at the base,
// and at every position after it. Before a record is applied to current,
// the unseeded blocks it overlaps are copied from current into the base
// ("seeding"), then marked. docs/format/replica.md describes the file.

const (
	seedBlock      = 4096 // bytes of disk per bit; the last block of a disk may be short
	seedHeaderSize = 48
	seedVersion    = 1
)

var (
	seedMagic  = [8]byte{'S', 'T', 'B', 'Y', 'S', 'E', 'E', 'D'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)

	// errStaleMap: the bitmap file is missing or of another generation
	// than state.json's base_gen (a BeginCopy did not get to write it).
	errStaleMap = errors.New("seeded bitmap missing or stale")
)

// seedHeader is the fixed header of a base/<disk>.seeded file.
type seedHeader struct {
	Gen  uint64 // the lazy base's generation (state.json's base_gen)
	Size int64  // the disk's size in bytes
}

func seedBlocks(size int64) int64 { return (size + seedBlock - 1) / seedBlock }

// encode returns the header's seedHeaderSize bytes.
func (h seedHeader) encode() []byte {
	b := make([]byte, seedHeaderSize)
	copy(b, seedMagic[:])
	binary.LittleEndian.PutUint32(b[8:], seedVersion)
	binary.LittleEndian.PutUint32(b[12:], seedBlock)
	binary.LittleEndian.PutUint64(b[16:], h.Gen)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.Size))
	binary.LittleEndian.PutUint64(b[32:], uint64(seedBlocks(h.Size)))
	// b[40:44] reserved, zero.
	binary.LittleEndian.PutUint32(b[44:], crc32.Checksum(b[:44], castagnoli))
	return b
}

// Validate checks a header's fields.
func (h seedHeader) Validate() error {
	if h.Gen == 0 {
		return errors.New("generation 0")
	}
	if h.Size <= 0 {
		return fmt.Errorf("disk size %d", h.Size)
	}
	return nil
}

// decodeSeedHeader reads and checks the header at the start of b.
func decodeSeedHeader(b []byte) (seedHeader, error) {
	var h seedHeader
	switch {
	case len(b) < seedHeaderSize:
		return h, fmt.Errorf("%d bytes, shorter than the header", len(b))
	case [8]byte(b[:8]) != seedMagic:
		return h, errors.New("bad magic")
	case binary.LittleEndian.Uint32(b[44:]) != crc32.Checksum(b[:44], castagnoli):
		return h, errors.New("header checksum mismatch")
	case binary.LittleEndian.Uint32(b[8:]) != seedVersion:
		return h, fmt.Errorf("version %d, this build reads %d", binary.LittleEndian.Uint32(b[8:]), seedVersion)
	case binary.LittleEndian.Uint32(b[12:]) != seedBlock:
		return h, fmt.Errorf("block size %d, this build uses %d", binary.LittleEndian.Uint32(b[12:]), seedBlock)
	}
	h.Gen = binary.LittleEndian.Uint64(b[16:])
	h.Size = int64(binary.LittleEndian.Uint64(b[24:]))
	if err := h.Validate(); err != nil {
		return h, err
	}
	if n := binary.LittleEndian.Uint64(b[32:]); n != uint64(seedBlocks(h.Size)) {
		return h, fmt.Errorf("%d blocks for %d bytes", n, h.Size)
	}
	return h, nil
}

// seedMap is one disk's seeded bitmap, in memory and in its file. Bit b is
// bit b%8 (least significant first) of byte b/8. Bits are set under wmu
// and curMu's write lock: holding either one is enough to read them.
type seedMap struct {
	f      *os.File
	size   int64
	blocks int64
	bits   []byte
}

func seedMapPath(dir string, d DiskInfo) string {
	return filepath.Join(dir, baseDir, d.Name+seededExt)
}

// openSeedMap opens the bitmap of disk d, which must be of generation gen:
// errStaleMap if it is missing or of another generation, ErrDamaged if it
// does not parse or does not fit d.
func openSeedMap(dir string, d DiskInfo, gen uint64) (*seedMap, error) {
	path := seedMapPath(dir, d)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, errStaleMap)
	} else if err != nil {
		return nil, err
	}
	h, err := decodeSeedHeader(b)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %s: %w", ErrDamaged, path, err)
	case h.Gen != gen:
		return nil, fmt.Errorf("%s: generation %d, base_gen %d: %w", path, h.Gen, gen, errStaleMap)
	case h.Size != d.Size:
		return nil, fmt.Errorf("%w: %s: for %d bytes, disk %s has %d", ErrDamaged, path, h.Size, d.Name, d.Size)
	}
	m := &seedMap{size: d.Size, blocks: seedBlocks(d.Size)}
	if want := seedHeaderSize + (m.blocks+7)/8; int64(len(b)) != want {
		return nil, fmt.Errorf("%w: %s is %d bytes, want %d", ErrDamaged, path, len(b), want)
	}
	m.bits = b[seedHeaderSize:]
	if m.f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		return nil, err
	}
	return m, nil
}

// writeSeedMap makes disk d's bitmap an empty one of generation gen,
// atomically and durably.
func writeSeedMap(dir string, d DiskInfo, gen uint64) error {
	b := seedHeader{Gen: gen, Size: d.Size}.encode()
	b = append(b, make([]byte, (seedBlocks(d.Size)+7)/8)...)
	return writeAtomic(seedMapPath(dir, d), b)
}

func closeSeedMaps(maps []*seedMap) error {
	var errs []error
	for _, m := range maps {
		if m != nil {
			errs = append(errs, m.f.Close())
		}
	}
	return errors.Join(errs...)
}

func (m *seedMap) has(b int64) bool { return m.bits[b>>3]&(1<<(b&7)) != 0 }

func (m *seedMap) set(b int64) { m.bits[b>>3] |= 1 << (b & 7) }

// runEnd returns the first block in (b, end) whose bit differs from block
// b's, or end.
func (m *seedMap) runEnd(b, end int64) int64 {
	v := m.has(b)
	same := byte(0)
	if v {
		same = 0xff
	}
	for b++; b < end; {
		if b&7 == 0 && b+8 <= end && m.bits[b>>3] == same {
			b += 8
			continue
		}
		if m.has(b) != v {
			return b
		}
		b++
	}
	return end
}

// persist writes the bytes [lo, hi) of the bitmap given by spans (in
// order of lo; they may touch or overlap) to its file, joining spans less
// than a sector apart, and fsyncs it. Bits only ever go from 0 to 1, so a crash in the
// middle leaves some of them set, each after its block's data was made
// durable.
func (m *seedMap) persist(spans [][2]int64) error {
	for i := 0; i < len(spans); {
		lo, hi := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0]-hi <= 512; i++ {
			hi = spans[i][1]
		}
		if _, err := m.f.WriteAt(m.bits[lo:hi], seedHeaderSize+lo); err != nil {
			return err
		}
	}
	return m.f.Sync()
}

// seedRange is the disk bytes [off, end) a change record writes.
type seedRange struct {
	disk     int
	off, end int64
}

// blockRun is the blocks [first, end) of a disk.
type blockRun struct {
	disk       int
	first, end int64
}

// unseeded returns the runs of unseeded blocks that rs overlap, each block
// once, in disk and block order. Called with wmu held.
func (r *Replica) unseeded(rs []seedRange) []blockRun {
	all := make([]blockRun, 0, len(rs))
	for _, x := range rs {
		if x.end > x.off {
			all = append(all, blockRun{disk: x.disk, first: x.off / seedBlock, end: (x.end + seedBlock - 1) / seedBlock})
		}
	}
	slices.SortFunc(all, func(a, b blockRun) int {
		return cmp.Or(cmp.Compare(a.disk, b.disk), cmp.Compare(a.first, b.first))
	})
	var out []blockRun
	for i := 0; i < len(all); {
		cur := all[i]
		for i++; i < len(all) && all[i].disk == cur.disk && all[i].first <= cur.end; i++ {
			cur.end = max(cur.end, all[i].end)
		}
		m := r.seeded[cur.disk]
		for b := cur.first; b < cur.end; {
			e := m.runEnd(b, cur.end)
			if !m.has(b) {
				out = append(out, blockRun{disk: cur.disk, first: b, end: e})
			}
			b = e
		}
	}
	return out
}

// seed makes every unseeded block that rs overlap seeded (seedPieces):
// its content is read from current (in parallel, adjacent blocks in one
// read, holes of current not at all) and written into the base image, the
// base images are fsynced, and then the bits are set and made durable.
// Only after that may the records be applied to current. A block already
// seeded is never copied again, so a redo after a crash does not copy
// newer data into the base. A no-op for a base that is not lazy.
//
// Called with wmu held (or from Open): current does not change and no
// other bit is set meanwhile. curMu is taken only to set the bits in
// memory, so views go on reading while the blocks are copied: they read
// an unseeded block from current, never from the base.
func (r *Replica) seed(ctx context.Context, rs []seedRange) error {
	if r.seeded == nil {
		return nil
	}
	for i, m := range r.seeded {
		if m == nil { // a BeginCopy failed half way; the replica is broken
			return fmt.Errorf("seeded bitmap of disk %d not loaded", i)
		}
	}
	runs := r.unseeded(rs)
	if len(runs) == 0 {
		return nil
	}
	var pieces []seedPiece
	for _, run := range runs {
		ps := []seedPiece{{disk: run.disk, first: run.first, end: run.end}}
		if run.end-run.first >= seedHoleCheck {
			var err error
			if ps, err = r.splitHoles(ctx, run); err != nil {
				return fmt.Errorf("seed disk %d blocks %d..%d: %w", run.disk, run.first, run.end-1, err)
			}
		}
		for _, p := range ps {
			pieces = appendSplit(pieces, p, seedReadMax/seedBlock)
		}
	}
	return r.seedPieces(ctx, pieces)
}

// checkSeeded returns an error unless every block rec writes is seeded:
// a base roll writes the records after the base into the base images, and
// each was seeded before it reached current. Called by rollBase.
func (r *Replica) checkSeeded(rec *journal.Record) error {
	r.curMu.RLock()
	defer r.curMu.RUnlock()
	if r.seeded == nil || int(rec.Disk) >= len(r.seeded) {
		return nil
	}
	m := r.seeded[rec.Disk]
	end := (int64(rec.End()) + seedBlock - 1) / seedBlock
	for b := int64(rec.Offset) / seedBlock; b < end; b = m.runEnd(b, end) {
		if !m.has(b) {
			return fmt.Errorf("%w: record %d writes block %d of disk %d, which was never seeded", ErrDamaged, rec.Seq, b, rec.Disk)
		}
	}
	return nil
}

// loadSeeded reads the seeded bitmaps of a lazy base (Open). A disk whose
// bitmap is missing or of an older generation gets the reset BeginCopy did
// not finish; that is only possible before anything was applied to the
// lazy base, so with points or stored segments it is damage.
func (r *Replica) loadSeeded() error {
	st := r.st
	if st.BaseGen == 0 {
		return nil
	}
	maps := make([]*seedMap, len(st.Disks))
	var stale []int
	for i, d := range st.Disks {
		m, err := openSeedMap(r.dir, d, st.BaseGen)
		if errors.Is(err, errStaleMap) {
			if len(st.Points) > 0 || len(st.Log) > 0 {
				closeSeedMaps(maps)
				return fmt.Errorf("%w: %w, with points or segments stored", ErrDamaged, err)
			}
			stale = append(stale, i)
			continue
		} else if err != nil {
			closeSeedMaps(maps)
			return err
		}
		maps[i] = m
	}
	r.seeded = maps
	if len(stale) == 0 {
		r.countSeedLeft()
		return nil
	}
	if err := r.resetBase(st.Disks, stale, st.BaseGen); err != nil {
		return fmt.Errorf("reset lazy base: %w", err)
	}
	for _, i := range stale {
		r.log.Info("replica: reset the base of a copy", "machine", st.MachineID, "disk", st.Disks[i].Name, "base_gen", st.BaseGen)
	}
	return nil
}

// resetBase makes the base images of the disks numbered in which empty
// (sparse, all holes) and gives them empty bitmaps of generation gen in
// r.seeded, which must have room for every disk. Each step replaces a file
// atomically, so a crash leaves old or new files, and Open repeats what is
// missing. Called with curMu held for writing, or from Open.
func (r *Replica) resetBase(disks []DiskInfo, which []int, gen uint64) error {
	if err := r.direct.forgetBase(); err != nil { // of the files being replaced
		return err
	}
	for _, i := range which {
		im, err := emptyImage(filepath.Join(r.dir, baseDir, disks[i].Name+imageExt), disks[i].Size)
		if err != nil {
			return err
		}
		r.base[i].f.Close()
		r.base[i] = im
	}
	if err := failpoint("copy-after-reset"); err != nil {
		return err
	}
	for _, i := range which {
		if err := writeSeedMap(r.dir, disks[i], gen); err != nil {
			return err
		}
		m, err := openSeedMap(r.dir, disks[i], gen)
		if err != nil {
			return err
		}
		if old := r.seeded[i]; old != nil {
			old.f.Close()
		}
		r.seeded[i] = m
	}
	r.countSeedLeft()
	return failpoint("copy-after-maps")
}

// emptyImage replaces the image at path with a sparse one of size bytes,
// atomically and durably, and opens it. Only for base images: a current
// image is never replaced, as it may be a link to a file outside the
// replica (CreateInPlace), which a rename would detach; emptyImage refuses
// a link.
func emptyImage(path string, size int64) (image, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return image{}, fmt.Errorf("%s is a symbolic link: not replaced", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*"+tmpExt)
	if err != nil {
		return image{}, err
	}
	tmp := f.Name()
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return image{}, err
	}
	if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
		return image{}, err
	}
	if f, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		return image{}, err
	}
	b, err := nbd.NewFileBackend(f)
	if err != nil {
		f.Close()
		return image{}, err
	}
	return image{f: f, b: b}, nil
}

// lazyBase reads a lazy base image of a view's disk: seeded blocks from
// the view's descriptor of the base image, unseeded ones from the current
// image. It holds curMu's read lock across the bitmap check and the read,
// so a block cannot be seeded and overwritten in current between the two.
type lazyBase struct {
	r    *Replica
	disk int
	f    io.ReaderAt // the view's descriptor of the base image
}

// ReadAt fills p; bytes past the disk's end read as zeros (indexedDisk
// does not ask for them).
func (b *lazyBase) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	b.r.curMu.RLock()
	defer b.r.curMu.RUnlock()
	if b.r.cur == nil || b.r.seeded == nil {
		return 0, ErrClosed
	}
	m := b.r.seeded[b.disk]
	end := off + int64(len(p))
	for pos := off; pos < end; {
		if pos >= m.size {
			clear(p[pos-off:])
			break
		}
		blk := pos / seedBlock
		next := min(end, m.runEnd(blk, min(m.blocks, (end+seedBlock-1)/seedBlock))*seedBlock)
		src := b.f
		if !m.has(blk) {
			src = b.r.cur[b.disk].f
		}
		if err := readFull(src, p[pos-off:next-off], pos); err != nil {
			return int(pos - off), err
		}
		pos = next
	}
	return len(p), nil
}
