package replica

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Seeding copies unseeded blocks of a lazy base from current into the base
// (seeded.go). Apply seeds the blocks its records overwrite, just before
// it overwrites them; Seed does the rest in the background, in disk
// order, so that later applies find their blocks seeded and do not have
// to read current first. Both go through seedPieces, which keeps the
// durable order: base data written and fsynced, then the bits set and
// fsynced, and only then (Apply) current written.

const (
	// seedChunk bounds the data one chunk of Seed reads (in one read per
	// run of data), and the buffer Apply's seeding reads into.
	seedChunk = 8 << 20
	// seedChunkBlocks bounds the blocks one chunk of Seed seeds, holes
	// of current included (those cost no read).
	seedChunkBlocks = 1 << 30 / seedBlock
	// seedReadMax bounds one read of current in Apply's seeding, so that
	// a long run is read by several readers at once.
	seedReadMax = 1 << 20
	// seedReaders is how many reads of current seeding has in flight.
	seedReaders = 32
	// seedHoleCheck: a run of unseeded blocks this long or longer is
	// checked for holes of current (SEEK_DATA/SEEK_HOLE) before Apply
	// reads it; a shorter one is read.
	seedHoleCheck = 16
)

// seedPiece is the blocks [first, end) of a disk to seed: read from
// current and written into the base, or, for a hole of current, punched
// in the base without a read.
type seedPiece struct {
	disk       int
	first, end int64
	hole       bool
}

// seedCursor is where the next Seed starts: block of disk, in the lazy
// base of generation gen.
type seedCursor struct {
	gen   uint64
	disk  int
	block int64
}

// Seed seeds up to max bytes of the lazy base's unseeded blocks in the
// background: each is copied from current into the base image and marked
// seeded, as Apply does before it overwrites a block, so that later
// applies find it done. It goes in disk order, over every disk, resuming
// where the previous call stopped, and returns the bytes of unseeded
// blocks left (Status.SeedLeft): 0 once the base is fully seeded, and at
// once, with no work, for a base that is not lazy. It seeds at most
// ⌈max/4096⌉ blocks; with max ≤ 0 it only returns the count.
//
// A block that is a hole of current is seeded without a read: the base's
// block is punched. Data is read in runs of up to 8 MiB. The work goes by
// chunks of at most 8 MiB of data, each under the lock Apply takes, and
// each durable before its bits are set (docs/format/replica.md): Apply,
// ApplyBatch, views and Prune go on between chunks, and ctx stops Seed
// between two. Only one Seed runs at a time.
//
// Errors: ErrClosed, ErrBroken; ErrCopying while a copy is under way
// (what current holds is not the base's content before EndCopy). An I/O
// error before a chunk's bits are set leaves the replica as it was (Seed
// may be called again); one while they are written marks it ErrBroken.
func (r *Replica) Seed(ctx context.Context, max int64) (left int64, err error) {
	r.smu.Lock()
	defer r.smu.Unlock()
	st, err := r.snapshot(true)
	if err != nil {
		return 0, fmt.Errorf("replica seed: %w", err)
	}
	if st.BaseGen == 0 {
		return 0, nil
	}
	budget := max / seedBlock // in blocks
	if max > 0 && max%seedBlock != 0 {
		budget++
	}
	was := r.seedLeft.Load()
	for budget > 0 && r.seedLeft.Load() > 0 {
		n, err := r.seedNext(ctx, budget)
		if err != nil {
			return r.seedLeft.Load(), fmt.Errorf("replica seed: %w", err)
		}
		if n == 0 {
			break
		}
		budget -= n
	}
	left = r.seedLeft.Load()
	if left == 0 && was > 0 {
		r.log.Info("replica: base fully seeded", "machine", st.MachineID, "base_gen", st.BaseGen)
	}
	return left, nil
}

// seedNext seeds the next chunk of at most budget blocks from the
// cursor, under wmu, and returns how many blocks it seeded: 0 when none
// is left.
func (r *Replica) seedNext(ctx context.Context, budget int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	st, err := r.snapshot(true)
	switch {
	case err != nil:
		return 0, err
	case st.Copying:
		return 0, fmt.Errorf("machine %s: %w", st.MachineID, ErrCopying)
	case st.BaseGen == 0 || r.seedLeft.Load() == 0:
		return 0, nil
	}
	for i, m := range r.seeded {
		if m == nil { // a BeginCopy failed half way; the replica is broken
			return 0, fmt.Errorf("seeded bitmap of disk %d not loaded", i)
		}
	}
	if r.seedAt.gen != st.BaseGen {
		r.seedAt = seedCursor{gen: st.BaseGen}
	}
	// From the cursor to the end of the disks, then from the start of the
	// disks back to the cursor.
	for range len(r.seeded) + 1 {
		at := r.seedAt
		pieces, next, err := r.chunkPieces(ctx, at.disk, at.block, min(budget, seedChunkBlocks))
		if err != nil {
			return 0, fmt.Errorf("seed disk %s: %w", st.Disks[at.disk].Name, err)
		}
		if len(pieces) == 0 {
			r.seedAt = seedCursor{gen: at.gen, disk: (at.disk + 1) % len(r.seeded)}
			continue
		}
		if err := r.seedPieces(ctx, pieces); err != nil {
			return 0, fmt.Errorf("seed disk %s blocks %d..%d: %w", st.Disks[at.disk].Name, pieces[0].first, next-1, err)
		}
		r.seedAt.block = next
		var n int64
		for _, p := range pieces {
			n += p.end - p.first
		}
		return n, nil
	}
	// No unseeded block anywhere: the count was wrong.
	r.log.Warn("replica: seed count corrected", "machine", st.MachineID, "seed_left", r.seedLeft.Load())
	r.curMu.Lock()
	r.countSeedLeft()
	r.curMu.Unlock()
	return 0, nil
}

// chunkPieces returns the next chunk of disk d from block from: its
// unseeded blocks, at most limit of them and seedChunk bytes of data,
// split into holes of current and data; and the block after the chunk.
// Called with wmu held.
func (r *Replica) chunkPieces(ctx context.Context, d int, from, limit int64) ([]seedPiece, int64, error) {
	m := r.seeded[d]
	var pieces []seedPiece
	var blocks, data int64
	for b := from; b < m.blocks; {
		e := m.runEnd(b, m.blocks)
		if m.has(b) {
			b = e
			continue
		}
		e = min(e, b+limit-blocks)
		ps, err := r.splitHoles(ctx, blockRun{disk: d, first: b, end: e})
		if err != nil {
			return nil, 0, err
		}
		for _, p := range ps {
			if !p.hole {
				room := (seedChunk - data) / seedBlock
				if room == 0 {
					return pieces, p.first, nil
				}
				if p.end-p.first > room {
					p.end = p.first + room
					return append(pieces, p), p.end, nil
				}
				data += (p.end - p.first) * seedBlock
			}
			pieces = append(pieces, p)
			blocks += p.end - p.first
		}
		if b = e; blocks >= limit {
			return pieces, b, nil
		}
	}
	return pieces, m.blocks, nil
}

// splitHoles splits run into pieces of data and holes of current
// (SEEK_DATA/SEEK_HOLE, as BlockMap): a block is a hole only if all of it
// is. Without SEEK_DATA, all of it is data. Called with wmu held, so
// current does not change.
func (r *Replica) splitHoles(ctx context.Context, run blockRun) ([]seedPiece, error) {
	im := r.cur[run.disk].b
	off, end := run.first*seedBlock, min(run.end*seedBlock, im.Size())
	var data [][2]int64 // runs of blocks holding some data, in order
	for off < end {
		exts, err := im.Extents(ctx, off, end-off)
		if err != nil {
			return nil, err
		}
		for _, e := range exts {
			if !e.Hole {
				lo, hi := off/seedBlock, (off+e.Length+seedBlock-1)/seedBlock
				if n := len(data); n > 0 && data[n-1][1] >= lo {
					data[n-1][1] = max(data[n-1][1], hi)
				} else {
					data = append(data, [2]int64{lo, hi})
				}
			}
			off += e.Length
		}
	}
	var out []seedPiece
	b := run.first
	for _, x := range data {
		if x[0] > b {
			out = append(out, seedPiece{disk: run.disk, first: b, end: x[0], hole: true})
		}
		out = append(out, seedPiece{disk: run.disk, first: x[0], end: x[1]})
		b = x[1]
	}
	if b < run.end {
		out = append(out, seedPiece{disk: run.disk, first: b, end: run.end, hole: true})
	}
	return out, nil
}

// appendSplit appends p to ps, a piece of data cut into pieces of at most
// n blocks.
func appendSplit(ps []seedPiece, p seedPiece, n int64) []seedPiece {
	if p.hole {
		return append(ps, p)
	}
	for b := p.first; b < p.end; b += n {
		q := p
		q.first, q.end = b, min(b+n, p.end)
		ps = append(ps, q)
	}
	return ps
}

// pieceBytes is the disk bytes [off, end) of p (a disk's last block may
// be short).
func (r *Replica) pieceBytes(p seedPiece) (off, end int64) {
	return p.first * seedBlock, min(p.end*seedBlock, r.seeded[p.disk].size)
}

// seedPieces seeds pieces, which are unseeded blocks in disk and block
// order, each at most seedChunk bytes: it copies them into the base images
// (copyPieces), fsyncs the base images it wrote [after-seed-data], sets
// the bits and makes them durable [after-seed-map]. Called with wmu held,
// or from Open.
//
// A failure before the bits are set leaves the replica as it was: an
// unseeded block's bytes in the base are never read. One after marks it
// broken, as the bits in memory may be ahead of the file's.
func (r *Replica) seedPieces(ctx context.Context, pieces []seedPiece) error {
	if err := r.copyPieces(ctx, pieces); err != nil {
		return err
	}
	touched := make([]bool, len(r.base))
	for _, p := range pieces {
		touched[p.disk] = true
	}
	for i, t := range touched {
		if t {
			if err := r.base[i].f.Sync(); err != nil {
				return fmt.Errorf("sync %s: %w", r.base[i].f.Name(), err)
			}
		}
	}
	if err := failpoint("after-seed-data"); err != nil {
		return err
	}
	dirty := r.markSeeded(pieces)
	for i, spans := range dirty {
		if len(spans) == 0 {
			continue
		}
		if err := r.seeded[i].persist(spans); err != nil {
			return r.fail(fmt.Errorf("seeded bitmap of disk %d: %w", i, err))
		}
	}
	if err := failpoint("after-seed-map"); err != nil {
		return r.fail(err)
	}
	return nil
}

// markSeeded sets the bits of pieces in memory, under curMu, counts them
// off seedLeft, and returns per disk the bitmap's changed bytes.
func (r *Replica) markSeeded(pieces []seedPiece) [][][2]int64 {
	dirty := make([][][2]int64, len(r.seeded))
	r.curMu.Lock()
	defer r.curMu.Unlock()
	var n int64
	for _, p := range pieces {
		m := r.seeded[p.disk]
		for b := p.first; b < p.end; b++ {
			if !m.has(b) {
				m.set(b)
				n += m.blockBytes(b)
			}
		}
		dirty[p.disk] = append(dirty[p.disk], [2]int64{p.first >> 3, (p.end-1)>>3 + 1})
	}
	r.seedLeft.Add(-n)
	return dirty
}

// seedBufs are copyPieces' buffers, seedChunk bytes each (large
// allocations are page-aligned, as O_DIRECT reads need).
var seedBufs = sync.Pool{New: func() any { b := make([]byte, seedChunk); return &b }}

// copyPieces copies pieces from current into the base images: data pieces
// are read in groups that fit a buffer of at most seedChunk bytes, the
// reads of a group in parallel; whole blocks of zeros are punched in the
// base (its bytes there are not assumed to be zeros), holes too.
func (r *Replica) copyPieces(ctx context.Context, pieces []seedPiece) error {
	var total int64
	for _, p := range pieces {
		if !p.hole {
			off, end := r.pieceBytes(p)
			total += end - off
		}
	}
	pb := seedBufs.Get().(*[]byte) // reused: zeroing 8 MiB per call cost more than the copy's CPU
	defer seedBufs.Put(pb)
	buf := (*pb)[:min(total, seedChunk)]
	for i := 0; i < len(pieces); {
		j, used := i, int64(0)
		for ; j < len(pieces); j++ {
			if pieces[j].hole {
				continue
			}
			off, end := r.pieceBytes(pieces[j])
			if used+end-off > int64(len(buf)) {
				break
			}
			used += end - off
		}
		if j == i {
			return fmt.Errorf("seed: %d blocks of data do not fit the buffer", pieces[i].end-pieces[i].first)
		}
		group := pieces[i:j]
		datas, err := r.readPieces(group, buf)
		if err != nil {
			return err
		}
		for k, p := range group {
			if err := r.writePiece(ctx, p, datas[k]); err != nil {
				return fmt.Errorf("write base disk %d blocks %d..%d: %w", p.disk, p.first, p.end-1, err)
			}
		}
		i = j
	}
	return nil
}

// readPieces reads the data pieces of group from current into buf, up to
// seedReaders reads at a time, and returns each piece's bytes (nil for a
// hole).
func (r *Replica) readPieces(group []seedPiece, buf []byte) ([][]byte, error) {
	datas := make([][]byte, len(group))
	var jobs []int
	for k, p := range group {
		if p.hole {
			continue
		}
		off, end := r.pieceBytes(p)
		datas[k], buf = buf[:end-off:end-off], buf[end-off:]
		jobs = append(jobs, k)
	}
	read := func(k int) error {
		p := group[k]
		off, _ := r.pieceBytes(p)
		f := r.cur[p.disk].f
		if d := r.direct.file(r.log, f, p.disk, false); d != nil && directAligned(datas[k], off) {
			f = d
		}
		if err := readFull(f, datas[k], off); err != nil {
			return fmt.Errorf("read current disk %d blocks %d..%d: %w", p.disk, p.first, p.end-1, err)
		}
		return nil
	}
	if len(jobs) == 1 {
		return datas, read(jobs[0])
	}
	errs := make([]error, len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(seedReaders, len(jobs)) {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(jobs)) {
					return
				}
				errs[i] = read(jobs[i])
			}
		})
	}
	wg.Wait()
	return datas, errors.Join(errs...)
}

// writePiece writes piece p into its base image: data (nil for a hole)
// as runs of written blocks and of punched blocks of zeros.
func (r *Replica) writePiece(ctx context.Context, p seedPiece, data []byte) error {
	base := r.base[p.disk].b
	off, end := r.pieceBytes(p)
	if p.hole {
		return base.Zero(ctx, off, end-off, true, false)
	}
	for i := 0; i < len(data); {
		zero := allZero(data[i:min(i+seedBlock, len(data))])
		j := i + seedBlock
		for ; j < len(data) && allZero(data[j:min(j+seedBlock, len(data))]) == zero; j += seedBlock {
		}
		j = min(j, len(data))
		var err error
		switch d := r.direct.file(r.log, r.base[p.disk].f, p.disk, true); {
		case zero:
			err = base.Zero(ctx, off+int64(i), int64(j-i), true, false)
		case d != nil && directAligned(data[i:j], off+int64(i)):
			_, err = d.WriteAt(data[i:j], off+int64(i))
		default:
			err = base.WriteAt(ctx, data[i:j], off+int64(i), false)
		}
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

// blockBytes is the size of block b: seedBlock, but for a disk's last
// block, which may be short.
func (m *seedMap) blockBytes(b int64) int64 {
	return min(seedBlock, m.size-b*seedBlock)
}

// unseededBytes is the bytes of the disk's unseeded blocks.
func (m *seedMap) unseededBytes() int64 {
	set := int64(0)
	full := m.blocks / 8
	for _, c := range m.bits[:full] {
		set += int64(bits.OnesCount8(c))
	}
	for b := full * 8; b < m.blocks; b++ {
		if m.has(b) {
			set++
		}
	}
	n := (m.blocks - set) * seedBlock
	if last := m.blocks - 1; !m.has(last) {
		n -= seedBlock - m.blockBytes(last)
	}
	return n
}

// countSeedLeft sets seedLeft from the bitmaps. Called with curMu held
// for writing, or from Open.
func (r *Replica) countSeedLeft() {
	var n int64
	for _, m := range r.seeded {
		if m != nil {
			n += m.unseededBytes()
		}
	}
	r.seedLeft.Store(n)
}
