package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/retention"
)

// seedSetup makes a replica that a copy of m's disks filled (a third of
// them holes), with points after it that seeded some blocks, and a clock
// at the last record for Prune.
func seedSetup(t *testing.T, seed uint64, disks []DiskInfo) (*model, *Replica, Options, *time.Time) {
	t.Helper()
	m := copyModel(t, seed, disks, copyPos)
	m.step = time.Minute
	o := testOptions(mustCreate(t, disks, nil))
	now := new(time.Time)
	o.Retention, o.Now = retention.Policy{KeepAll: 10 * time.Minute}, func() time.Time { return *now }
	r := mustOpen(t, o)
	mustCopy(t, r, m)
	m.bookmarkEvery = 4
	mustApply(t, r, m.withBookmark(4, "first"), m.g().at(m.g().sent))
	for range 2 {
		mustApply(t, r, m.next(4), m.g().at(m.g().sent))
	}
	*now = m.clock
	n := seededBlocks(r)
	for i, d := range disks {
		if n[i] == 0 || n[i] == seedBlocks(d.Size) {
			t.Fatalf("seeded blocks %v: want some of each disk, not all", n)
		}
	}
	return m, r, o, now
}

// blockID is a block of a disk.
type blockID struct {
	disk  int
	block int64
}

// unseededBlocks lists the unseeded blocks in disk order, and their bytes
// per disk.
func unseededBlocks(r *Replica) ([]blockID, []int64) {
	r.curMu.RLock()
	defer r.curMu.RUnlock()
	var ids []blockID
	bytes := make([]int64, len(r.seeded))
	for i, m := range r.seeded {
		for b := range m.blocks {
			if !m.has(b) {
				ids = append(ids, blockID{i, b})
				bytes[i] += min(seedBlock, m.size-b*seedBlock)
			}
		}
	}
	return ids, bytes
}

func sum(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}

// mustSeedLeft fails unless Status.SeedLeft counts the unseeded blocks.
func mustSeedLeft(tb testing.TB, r *Replica) int64 {
	tb.Helper()
	_, bytes := unseededBlocks(r)
	if got, want := r.Status().SeedLeft, sum(bytes); got != want {
		tb.Fatalf("seed_left %d, the bitmaps have %d bytes unseeded", got, want)
	}
	return sum(bytes)
}

// baseWant is the content of the disks at r's base position: the copy's,
// or after a roll the point the base is at.
func baseWant(tb testing.TB, r *Replica, m *model) [][]byte {
	tb.Helper()
	st, _ := r.snapshot(false)
	if st.Base == (logPos{}) {
		return m.gens[0].start
	}
	for _, p := range st.Points {
		if p.at() == st.Base {
			return m.marks[p.Time.UnixNano()].disks
		}
	}
	tb.Fatalf("base %+v is at no point", st.Base)
	return nil
}

// mustFullySeeded fails unless every block is seeded, in memory and in
// the bitmap files, the count is 0, and the base images hold the state at
// the base.
func mustFullySeeded(tb testing.TB, r *Replica, m *model) {
	tb.Helper()
	if left := r.Status().SeedLeft; left != 0 {
		tb.Errorf("seed_left %d, want 0", left)
	}
	var base [][]byte
	for i, d := range r.Status().Disks {
		if n := seededBlocks(r); n[i] != seedBlocks(d.Size) {
			tb.Errorf("disk %s: %d of %d blocks seeded", d.Name, n[i], seedBlocks(d.Size))
		}
		b := readFile(tb, seedMapPath(r.dir, d))[seedHeaderSize:]
		for k := range seedBlocks(d.Size) {
			if b[k>>3]&(1<<(k&7)) == 0 {
				tb.Fatalf("disk %s: block %d not seeded in the bitmap file", d.Name, k)
			}
		}
		base = append(base, readFile(tb, filepath.Join(r.dir, baseDir, d.Name+imageExt)))
	}
	mustEqualDisks(tb, "base images", base, baseWant(tb, r, m))
}

// TestSeed seeds a lazy base with data, holes of current and seeded
// blocks, at the copy's base and after a roll: afterwards every block is
// seeded, the base images hold the state at the base (holes where current
// had them), and every point stays exact, through more segments, a prune
// and a reopen.
func TestSeed(t *testing.T) {
	for _, rolled := range []bool{false, true} {
		t.Run(fmt.Sprintf("rolled %v", rolled), func(t *testing.T) {
			ctx := context.Background()
			m, r, o, now := seedSetup(t, 80, testDisks)
			if rolled {
				for range 6 {
					mustApply(t, r, m.next(4), m.g().at(m.g().sent))
				}
				*now = m.clock
				if _, remove := mustPrune(t, r, m, *now); len(remove) == 0 {
					t.Fatal("nothing pruned")
				}
			}
			left := mustSeedLeft(t, r)
			if got, err := r.Seed(ctx, 0); err != nil || got != left {
				t.Fatalf("seed of 0 bytes: %d, %v; want %d", got, err, left)
			}
			mustSeedLeft(t, r)
			got, err := r.Seed(ctx, 1<<62)
			if err != nil || got != 0 {
				t.Fatalf("seed: %d, %v; want 0", got, err)
			}
			mustFullySeeded(t, r, m)
			for _, d := range testDisks {
				mustHaveHole(t, filepath.Join(r.dir, baseDir, d.Name+imageExt))
			}
			mustCheck(t, r, m)
			if got, err := r.Seed(ctx, 1<<62); err != nil || got != 0 {
				t.Fatalf("seed again: %d, %v", got, err)
			}
			// Segments find every block seeded; rolls write over them.
			for range 6 {
				mustApply(t, r, m.next(6), m.g().at(m.g().sent))
			}
			mustFullySeeded(t, r, m)
			*now = m.clock
			mustPrune(t, r, m, *now)
			mustFullySeeded(t, r, m)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			r = mustOpen(t, o)
			mustFullySeeded(t, r, m)
			mustCheck(t, r, m)
		})
	}
}

// TestSeedHoles: the chunks Seed plans split unseeded blocks into holes
// of current, which it does not read, and data, at most seedChunk bytes
// of it a chunk, in disk order.
func TestSeedHoles(t *testing.T) {
	disks := []DiskInfo{{Name: "big", Size: 20<<20 + 512}, {Name: "small", Size: 64 << 10}}
	m, r, _, _ := seedSetup(t, 81, disks)
	ctx := context.Background()
	ids, _ := unseededBlocks(r)
	var got []blockID
	holes := make(map[blockID]bool)
	chunks := 0
	for d := range disks {
		for b := int64(0); b < seedBlocks(disks[d].Size); chunks++ {
			r.wmu.Lock()
			pieces, next, err := r.chunkPieces(ctx, d, b, 1<<40)
			r.wmu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if next <= b {
				t.Fatalf("disk %d: chunk from %d ends at %d", d, b, next)
			}
			var data int64
			for _, p := range pieces {
				if p.disk != d || p.first < b || p.end > next || p.first >= p.end {
					t.Fatalf("chunk [%d, %d) of disk %d has piece %+v", b, next, d, p)
				}
				for k := p.first; k < p.end; k++ {
					got = append(got, blockID{d, k})
					holes[blockID{d, k}] = p.hole
				}
				if !p.hole {
					data += (p.end - p.first) * seedBlock
				} else if off, end := r.pieceBytes(p); !allZero(m.gens[0].start[d][off:end]) {
					t.Fatalf("disk %d: hole piece %+v is not zeros in current", d, p)
				}
			}
			if data > seedChunk {
				t.Fatalf("disk %d: a chunk of %d bytes of data", d, data)
			}
			b = next
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("chunks cover %d blocks, %d are unseeded (or out of order)", len(got), len(ids))
	}
	if chunks < 3 {
		t.Errorf("%d chunks for %d bytes of disk", chunks, disks[0].Size)
	}
	// Each 32 KiB chunk the copy zeroed (a punched hole) is a hole where
	// it is unseeded.
	n := 0
	for d, disk := range m.gens[0].start {
		for off := int64(0); off+32<<10 <= int64(len(disk)); off += 32 << 10 {
			if !allZero(disk[off : off+32<<10]) {
				continue
			}
			for k := off / seedBlock; k < (off+32<<10)/seedBlock; k++ {
				if hole, ok := holes[blockID{d, k}]; ok && !hole {
					t.Fatalf("disk %d block %d: a hole of current planned as data", d, k)
				} else if ok {
					n++
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no hole planned")
	}
	left, err := r.Seed(ctx, 1<<62)
	if err != nil || left != 0 {
		t.Fatalf("seed: %d, %v", left, err)
	}
	mustFullySeeded(t, r, m)
	mustCheck(t, r, m)
}

// TestSeedMax: each call seeds the next max bytes (whole blocks) of
// unseeded blocks in disk order, resuming where the last stopped, and
// returns what is left; the cursor wraps round to blocks behind it.
func TestSeedMax(t *testing.T) {
	ctx := context.Background()
	m, r, _, _ := seedSetup(t, 82, testDisks)
	order, _ := unseededBlocks(r)
	seen := 0
	for i := 0; ; i++ {
		max := []int64{1, 5000, 4096, 100000, 12345}[i%5]
		before := mustSeedLeft(t, r)
		left, err := r.Seed(ctx, max)
		if err != nil {
			t.Fatal(err)
		}
		now, _ := unseededBlocks(r)
		n := min(int((max+seedBlock-1)/seedBlock), len(order)-seen)
		if want := order[seen+n:]; fmt.Sprint(now) != fmt.Sprint(want) {
			t.Fatalf("call %d (max %d): %d blocks left unseeded, want the %d after the next %d", i, max, len(now), len(want), n)
		}
		seen += n
		if got := mustSeedLeft(t, r); left != got || left > before || before-left > ((max+seedBlock-1)/seedBlock)*seedBlock {
			t.Fatalf("call %d (max %d): left %d, before %d, count %d", i, max, left, before, got)
		}
		if left == 0 {
			break
		}
		if i == 7 { // blocks behind the cursor, as a failed chunk leaves them
			r.smu.Lock()
			r.seedAt.disk, r.seedAt.block = 1, seedBlocks(testDisks[1].Size)-1
			r.smu.Unlock()
			if left, err := r.Seed(ctx, 1<<62); err != nil || left != 0 {
				t.Fatalf("seed after moving the cursor: %d, %v", left, err)
			}
			break
		}
	}
	mustFullySeeded(t, r, m)
	mustCheck(t, r, m)
}

// TestSeedRefusals: a base that is not lazy has nothing to seed; a copy
// under way, a closed replica and a cancelled context are refused,
// writing nothing.
func TestSeedRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("not lazy", func(t *testing.T) {
		m := newModel(t, 83, testDisks)
		dir := mustCreate(t, testDisks, nil)
		r := mustOpen(t, testOptions(dir))
		mustApply(t, r, m.withBookmark(10, "p"), m.g().at(m.g().sent))
		files := listDir(t, dir)
		if left, err := r.Seed(ctx, 1<<30); left != 0 || err != nil {
			t.Fatalf("seed: %d, %v; want 0", left, err)
		}
		if st := r.Status(); st.SeedLeft != 0 {
			t.Errorf("seed_left %d", st.SeedLeft)
		}
		if got := listDir(t, dir); got != files {
			t.Errorf("files changed:\n got %s\nwant %s", got, files)
		}
	})
	t.Run("copying", func(t *testing.T) {
		dir := mustCreate(t, testDisks, nil)
		r := mustOpen(t, testOptions(dir))
		if err := r.BeginCopy(ctx, copyPos, 1); err != nil {
			t.Fatal(err)
		}
		files := listDir(t, dir)
		left, err := r.Seed(ctx, 1<<30)
		if !errors.Is(err, ErrCopying) || left != testDisks[0].Size+testDisks[1].Size {
			t.Fatalf("seed while copying: %d, %v; want every byte and ErrCopying", left, err)
		}
		if got := listDir(t, dir); got != files {
			t.Errorf("files changed:\n got %s\nwant %s", got, files)
		}
		mustBeEmptyBase(t, r)
	})
	t.Run("cancelled and closed", func(t *testing.T) {
		_, r, _, _ := seedSetup(t, 84, testDisks)
		before := mustSeedLeft(t, r)
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if left, err := r.Seed(cancelled, 1<<30); !errors.Is(err, context.Canceled) || left != before {
			t.Fatalf("cancelled: %d, %v; want %d and context.Canceled", left, err, before)
		}
		mustSeedLeft(t, r)
		r.Close()
		if _, err := r.Seed(ctx, 1<<30); !errors.Is(err, ErrClosed) {
			t.Fatalf("closed: %v, want ErrClosed", err)
		}
	})
}

// TestSeedConcurrent runs Seed, a little at a time, alongside ApplyBatch,
// Prune, views of points (one opened before and read throughout) and
// Status (run it with -race): every read equals the point's content,
// seed_left never grows, and in the end every block is seeded and the base
// images hold the state at the base.
func TestSeedConcurrent(t *testing.T) {
	ctx := context.Background()
	f := newConcurrentCopy(t, 85, 12, 6)
	r, m := f.r, f.m
	applied := make(chan struct{})
	seeded := make(chan struct{})
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(applied)
		f.applyAll(ctx, errs)
	})
	wg.Go(func() {
		defer close(seeded)
		last := r.Status().SeedLeft
		for {
			left, err := r.Seed(ctx, 6000)
			if err != nil {
				errs <- fmt.Errorf("seed: %w", err)
				return
			}
			if left > last {
				errs <- fmt.Errorf("seed_left grew from %d to %d", last, left)
			}
			last = left
			if left == 0 {
				return
			}
		}
	})
	done := make(chan struct{})
	go func() { <-applied; <-seeded; close(done) }()
	loop := loopUntil(&wg, done, errs)
	loop(func() error { return readSmallPieces(f.v, f.want) })
	loop(func() error { return checkSomePoint(ctx, r, m) })
	loop(func() error { _, _, err := r.Prune(ctx); return err })
	loop(func() error {
		if st := r.Status(); st.SeedLeft < 0 || st.SeedLeft > testDisks[0].Size+testDisks[1].Size {
			return fmt.Errorf("seed_left %d", st.SeedLeft)
		}
		return nil
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	f.finish(t)
	mustFullySeeded(t, r, m)
}

// TestCrashSeedBackground crashes Seed at its durable steps, in its first
// chunk (disk 0) and its second (disk 1). After Open every point is
// exact, the count matches the bitmaps, and the bits of a chunk are set
// exactly when its fsyncs of the bits were reached; Seed then finishes.
func TestCrashSeedBackground(t *testing.T) {
	tests := []struct {
		step   string
		after  int
		chunks int // chunks whose bits are durable
	}{
		{"after-seed-data", 0, 0},
		{"after-seed-map", 0, 1},
		{"after-seed-data", 1, 1},
		{"after-seed-map", 1, 2},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d", tt.step, tt.after), func(t *testing.T) {
			ctx := context.Background()
			m, r, o, now := seedSetup(t, 86, testDisks)
			_, perDisk := unseededBlocks(r)
			failAt(t, tt.step, tt.after)
			if _, err := r.Seed(ctx, 1<<62); !errors.Is(err, errCrash) {
				t.Fatalf("seed: %v, want the simulated crash", err)
			}
			crash(r)
			noFail()
			r = mustOpen(t, o)
			want := sum(perDisk[tt.chunks:])
			if got := mustSeedLeft(t, r); got != want {
				t.Fatalf("seed_left %d after the crash, want %d", got, want)
			}
			mustCheck(t, r, m)
			mustApply(t, r, m.next(8), m.g().at(m.g().sent))
			if left, err := r.Seed(ctx, 1<<62); err != nil || left != 0 {
				t.Fatalf("seed after the crash: %d, %v", left, err)
			}
			mustFullySeeded(t, r, m)
			mustApply(t, r, m.withBookmark(8, "b"), m.g().at(m.g().sent))
			*now = m.clock
			mustPrune(t, r, m, *now)
			mustFullySeeded(t, r, m)
		})
	}
}

// TestSeedApplyLarge: Apply seeds a long run (a zero record over megabytes
// of data and holes, read in pieces in parallel, in several groups) and
// many scattered blocks at once; the point before it stays exact, and
// Seed does the rest.
func TestSeedApplyLarge(t *testing.T) {
	ctx := context.Background()
	disks := []DiskInfo{{Name: "big", Size: 16 << 20}, {Name: "small", Size: 64<<10 + 512}}
	m := copyModel(t, 87, disks, copyPos)
	m.bookmarkEvery = 0
	o := testOptions(mustCreate(t, disks, nil))
	r := mustOpen(t, o)
	mustCopy(t, r, m)
	mustApply(t, r, m.withBookmark(0, "before"), m.g().at(m.g().sent))
	for i := range 300 {
		off := uint64(m.rnd.Int64N(disks[0].Size - 1))
		m.add(journal.Record{Kind: journal.KindWrite, Disk: 0, Offset: off, Length: 1, Data: []byte{byte(i | 1)}})
	}
	m.add(journal.Record{Kind: journal.KindZero, Flags: journal.FlagNoHole, Disk: 0, Offset: 1<<20 + 100, Length: 14 << 20})
	m.add(journal.Record{Kind: journal.KindTrim, Disk: 1, Offset: 0, Length: uint64(disks[1].Size)})
	mustApply(t, r, m.withBookmark(0, "after"), m.g().at(m.g().sent))
	mustSeedLeft(t, r)
	if n := seededBlocks(r); n[0] < (14<<20)/seedBlock || n[1] != seedBlocks(disks[1].Size) {
		t.Fatalf("seeded blocks %v", n)
	}
	mustCheck(t, r, m)
	if left, err := r.Seed(ctx, 1<<62); err != nil || left != 0 {
		t.Fatalf("seed: %d, %v", left, err)
	}
	mustFullySeeded(t, r, m)
	mustCheck(t, r, m)
}

// TestSeedLeftOpen: BeginCopy sets the count to every byte, and Open
// counts the bitmaps again.
func TestSeedLeftOpen(t *testing.T) {
	ctx := context.Background()
	o := testOptions(mustCreate(t, testDisks, nil))
	r := mustOpen(t, o)
	if left := r.Status().SeedLeft; left != 0 {
		t.Fatalf("seed_left %d before a copy", left)
	}
	if err := r.BeginCopy(ctx, copyPos, 1); err != nil {
		t.Fatal(err)
	}
	if left := r.Status().SeedLeft; left != testDisks[0].Size+testDisks[1].Size {
		t.Fatalf("seed_left %d after BeginCopy, want every byte", left)
	}
	r.Close()
	r = mustOpen(t, o)
	if left := r.Status().SeedLeft; left != testDisks[0].Size+testDisks[1].Size {
		t.Fatalf("seed_left %d after Open, want every byte", left)
	}
	r.Close()

	_, r, o, _ = seedSetup(t, 88, testDisks)
	if _, err := r.Seed(ctx, 50000); err != nil {
		t.Fatal(err)
	}
	left := mustSeedLeft(t, r)
	r.Close()
	r = mustOpen(t, o)
	if got := mustSeedLeft(t, r); got != left {
		t.Fatalf("seed_left %d after Open, %d before", got, left)
	}
}
