package replica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/retention"
)

// copyModel is a model whose disks start with random content (a third of
// every 32 KiB chunk zeros), which a copy brings to the replica, and whose
// journal continues from pos.
func copyModel(tb testing.TB, seed uint64, disks []DiskInfo, pos journal.Pos) *model {
	m := newModel(tb, seed, disks)
	for _, d := range m.live {
		for off := 0; off < len(d); off += 32 << 10 {
			if m.rnd.IntN(3) > 0 {
				end := min(off+32<<10, len(d))
				for i := off; i < end; i++ {
					d[i] = byte(m.rnd.Uint32() | 1)
				}
			}
		}
	}
	m.gens[0].start, m.gens[0].prev = clone2(m.live), pos
	return m
}

// copyPos is where the copies of the tests put the journal.
var copyPos = journal.Pos{Seq: 1000, Chain: 77}

// writeCopy copies disks into r's current images as the agent does: 32 KiB
// chunks, zeros with ZeroCopy, the others in two writes of which the first
// is not a multiple of a block.
func writeCopy(tb testing.TB, r *Replica, disks [][]byte) {
	tb.Helper()
	ctx := context.Background()
	for d, b := range disks {
		for off := 0; off < len(b); off += 32 << 10 {
			p := b[off:min(off+32<<10, len(b))]
			if allZero(p) {
				if err := r.ZeroCopy(ctx, d, int64(off), int64(len(p))); err != nil {
					tb.Fatal(err)
				}
				continue
			}
			k := min(1000, len(p))
			if err := r.WriteCopy(ctx, d, int64(off), p[:k]); err != nil {
				tb.Fatal(err)
			}
			if err := r.WriteCopy(ctx, d, int64(off+k), p[k:]); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// mustCopy runs a whole copy of m's disks at the start of its journal.
func mustCopy(tb testing.TB, r *Replica, m *model) {
	tb.Helper()
	ctx := context.Background()
	if err := r.BeginCopy(ctx, m.gens[0].prev, m.epoch); err != nil {
		tb.Fatal(err)
	}
	writeCopy(tb, r, m.gens[0].start)
	if err := r.EndCopy(ctx); err != nil {
		tb.Fatal(err)
	}
}

// seededBlocks counts the seeded blocks of each disk; nil if the base is
// not lazy.
func seededBlocks(r *Replica) []int64 {
	r.curMu.RLock()
	defer r.curMu.RUnlock()
	if r.seeded == nil {
		return nil
	}
	n := make([]int64, len(r.seeded))
	for i, m := range r.seeded {
		for b := range m.blocks {
			if m.has(b) {
				n[i]++
			}
		}
	}
	return n
}

// mustBeEmptyBase fails unless every base image is sparse zeros and no
// block is seeded (what BeginCopy leaves).
func mustBeEmptyBase(tb testing.TB, r *Replica) {
	tb.Helper()
	for i, d := range r.Status().Disks {
		path := filepath.Join(r.dir, baseDir, d.Name+imageExt)
		if b := readFile(tb, path); int64(len(b)) != d.Size || !allZero(b) {
			tb.Errorf("base image of disk %s: %d bytes, zeros %v; want %d bytes of zeros", d.Name, len(b), allZero(b), d.Size)
		}
		mustHaveHole(tb, path)
		if n := seededBlocks(r); n == nil || n[i] != 0 {
			tb.Errorf("seeded blocks %v, want none", n)
		}
	}
}

// TestCopyThenRecords: a copy, then segments that overwrite copied blocks;
// every point stays exact through more segments, base rolls and a reopen.
func TestCopyThenRecords(t *testing.T) {
	ctx := context.Background()
	dir := mustCreate(t, testDisks, nil)
	now := new(time.Time)
	o := testOptions(dir)
	o.Retention, o.Now = retention.Policy{KeepAll: 40 * time.Minute}, func() time.Time { return *now }
	r := mustOpen(t, o)

	// Current holds something else before the copy, and segments are stored.
	pre := newModel(t, 60, testDisks)
	pre.bookmarkEvery = 0
	for range 3 {
		mustApply(t, r, pre.next(20), pre.g().at(pre.g().sent))
	}
	gen := r.Status().Generation

	m := copyModel(t, 61, testDisks, copyPos)
	m.step = time.Minute
	if err := r.BeginCopy(ctx, copyPos, 1); err != nil {
		t.Fatal(err)
	}
	st := r.Status()
	if !st.Copying || st.Consistent || st.Segments != 0 || st.Bytes != 0 || st.Applied != copyPos || st.Generation <= gen {
		t.Fatalf("after BeginCopy: %+v; want copying, not consistent, no segments, applied %s, a new generation", st, copyPos)
	}
	mustMatchLog(t, r, false)
	mustBeEmptyBase(t, r)
	gen = st.Generation
	writeCopy(t, r, m.live)
	if st := r.Status(); st.Generation <= gen {
		t.Errorf("generation %d after the copy's writes, was %d", st.Generation, gen)
	}
	if err := r.EndCopy(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.Copying || st.Consistent {
		t.Fatalf("after EndCopy: copying %v consistent %v, want false false", st.Copying, st.Consistent)
	}
	mustEqualDisks(t, "current after the copy", currentDisks(t, r), m.live)
	if n := seededBlocks(r); n[0] != 0 || n[1] != 0 {
		t.Fatalf("seeded after the copy: %v, want none", n)
	}

	// Segments overwrite copied blocks, the last partial block included.
	m.bookmarkEvery = 4
	batch := [][]byte{m.next(10), m.withBookmark(10, "first"), m.next(10)}
	if pos, err := r.ApplyBatch(ctx, batch); err != nil || pos != m.g().at(m.g().sent) {
		t.Fatalf("batch: %s, %v", pos, err)
	}
	size := testDisks[1].Size
	m.add(journal.Record{Kind: journal.KindWrite, Disk: 1, Offset: uint64(size - 100), Length: 100, Data: make([]byte, 100)})
	m.add(journal.Record{Kind: journal.KindWrite, Disk: 1, Offset: uint64(size - 5000), Length: 10, Data: []byte("0123456789")})
	mustApply(t, r, m.withBookmark(5, "tail"), m.g().at(m.g().sent))
	mustCheck(t, r, m)
	if n := seededBlocks(r); n[0] == 0 || n[1] == 0 || n[0] == seedBlocks(testDisks[0].Size) || n[1] == seedBlocks(size) {
		t.Errorf("seeded blocks %v: want some of each disk, not all", n)
	}
	for range 12 {
		mustApply(t, r, m.next(25), m.g().at(m.g().sent))
	}
	mustCheck(t, r, m)

	// Prune rolls the base over seeded blocks.
	*now = m.clock
	_, remove := mustPrune(t, r, m, *now)
	if len(remove) == 0 {
		t.Fatal("nothing pruned")
	}
	if st, _ := r.snapshot(false); st.Base == (logPos{}) || st.BaseGen != 1 {
		t.Fatalf("base %+v gen %d after a prune, want rolled, generation 1", st.Base, st.BaseGen)
	}
	for range 5 {
		mustApply(t, r, m.next(25), m.g().at(m.g().sent))
	}
	*now = m.clock
	mustPrune(t, r, m, *now)
	seeded := seededBlocks(r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = mustOpen(t, o)
	mustMatchLog(t, r, true)
	mustCheck(t, r, m)
	if got := seededBlocks(r); fmt.Sprint(got) != fmt.Sprint(seeded) {
		t.Errorf("seeded blocks after reopen %v, before %v", got, seeded)
	}
}

// TestCopyRefusals: what the copy methods and Apply refuse, each leaving
// the replica as it was.
func TestCopyRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("points", func(t *testing.T) {
		m := newModel(t, 62, testDisks)
		dir := mustCreate(t, testDisks, nil)
		r := mustOpen(t, testOptions(dir))
		mustApply(t, r, m.withBookmark(5, "p"), m.g().at(m.g().sent))
		before, files := r.Status(), listDir(t, dir)
		if err := r.BeginCopy(ctx, copyPos, 1); !errors.Is(err, ErrHasPoints) {
			t.Fatalf("begin copy with a point: %v, want ErrHasPoints", err)
		}
		if after := r.Status(); !sameStatus(before, after) || after.Copying || after.Generation != before.Generation {
			t.Errorf("status changed:\n got %+v\nwant %+v", after, before)
		}
		if got := listDir(t, dir); got != files {
			t.Errorf("files changed:\n got %s\nwant %s", got, files)
		}
		mustApply(t, r, m.next(5), m.g().at(m.g().sent))
		mustCheck(t, r, m)
	})
	t.Run("not copying", func(t *testing.T) {
		dir := mustCreate(t, testDisks, nil)
		r := mustOpen(t, testOptions(dir))
		files := listDir(t, dir)
		for name, err := range map[string]error{
			"write": r.WriteCopy(ctx, 0, 0, []byte{1}),
			"zero":  r.ZeroCopy(ctx, 0, 0, 1),
			"end":   r.EndCopy(ctx),
		} {
			if !errors.Is(err, ErrNotCopying) {
				t.Errorf("%s without a copy: %v, want ErrNotCopying", name, err)
			}
		}
		if got := listDir(t, dir); got != files {
			t.Errorf("files changed:\n got %s\nwant %s", got, files)
		}
	})
	t.Run("arguments", func(t *testing.T) {
		r := mustOpen(t, testOptions(mustCreate(t, testDisks, nil)))
		if err := r.Rebase(ctx, copyPos, 3); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name  string
			pos   journal.Pos
			epoch uint64
			want  error
		}{
			{"epoch 0", copyPos, 0, nil},
			{"older epoch", copyPos, 2, ErrFenced},
			{"chain at the start", journal.Pos{Chain: 5}, 3, nil},
		} {
			if err := r.BeginCopy(ctx, tt.pos, tt.epoch); err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			}
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if err := r.BeginCopy(cancelled, copyPos, 3); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled: %v", err)
		}
		if st := r.Status(); st.Copying {
			t.Fatal("copying after refusals")
		}
	})
	t.Run("while copying", func(t *testing.T) {
		m := copyModel(t, 63, testDisks, copyPos)
		dir := mustCreate(t, testDisks, nil)
		r := mustOpen(t, testOptions(dir))
		if err := r.BeginCopy(ctx, copyPos, 1); err != nil {
			t.Fatal(err)
		}
		seg := m.next(10)
		before, files := r.Status(), listDir(t, dir)
		if _, err := r.Apply(ctx, seg); !errors.Is(err, ErrCopying) {
			t.Errorf("apply while copying: %v, want ErrCopying", err)
		}
		if _, err := r.ApplyBatch(ctx, [][]byte{seg}); !errors.Is(err, ErrCopying) {
			t.Errorf("apply batch while copying: %v, want ErrCopying", err)
		}
		size := testDisks[1].Size
		for _, tt := range []struct {
			name string
			err  error
		}{
			{"write to disk 2", r.WriteCopy(ctx, 2, 0, []byte{1})},
			{"write to disk -1", r.WriteCopy(ctx, -1, 0, []byte{1})},
			{"write at -1", r.WriteCopy(ctx, 1, -1, []byte{1})},
			{"write past the end", r.WriteCopy(ctx, 1, size-1, []byte{1, 2})},
			{"write after the end", r.WriteCopy(ctx, 1, size+1, nil)},
			{"zero past the end", r.ZeroCopy(ctx, 1, size-4096, 4097)},
			{"zero of -1 bytes", r.ZeroCopy(ctx, 1, 0, -1)},
		} {
			if !errors.Is(tt.err, ErrDiskRange) {
				t.Errorf("%s: %v, want ErrDiskRange", tt.name, tt.err)
			}
		}
		if after := r.Status(); !sameStatus(before, after) || !after.Copying || after.Generation != before.Generation {
			t.Errorf("status changed:\n got %+v\nwant %+v", after, before)
		}
		if got := listDir(t, dir); got != files {
			t.Errorf("files changed:\n got %s\nwant %s", got, files)
		}
		if err := r.WriteCopy(ctx, 1, size-2, []byte{1, 2}); err != nil {
			t.Errorf("write up to the end: %v", err)
		}
		// The agent starts again: BeginCopy restarts, Rebase ends the copy.
		if err := r.BeginCopy(ctx, copyPos, 1); err != nil {
			t.Fatal(err)
		}
		if st, _ := r.snapshot(false); st.BaseGen != 2 || !st.Copying {
			t.Fatalf("second BeginCopy: base_gen %d copying %v, want 2 true", st.BaseGen, st.Copying)
		}
		writeCopy(t, r, m.gens[0].start)
		gen := r.Status().Generation
		if err := r.Rebase(ctx, copyPos, 1); err != nil {
			t.Fatal(err)
		}
		if st := r.Status(); st.Copying || st.Generation == gen {
			t.Fatalf("after Rebase: copying %v generation %d (was %d)", st.Copying, st.Generation, gen)
		}
		if err := r.EndCopy(ctx); !errors.Is(err, ErrNotCopying) {
			t.Errorf("end copy after a rebase: %v, want ErrNotCopying", err)
		}
		mustApply(t, r, seg, m.g().at(m.g().sent))
		mustApply(t, r, m.withBookmark(10, "p"), m.g().at(m.g().sent))
		mustCheck(t, r, m)
	})
}

// TestSeededMaps: the bitmap files' checks at Open.
func TestSeededMaps(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		points bool
		damage func(t *testing.T, path string)
		want   error
	}{
		{"garbled header", true, func(t *testing.T, path string) {
			b := readFile(t, path)
			b[20] ^= 1
			writeFile(t, path, b)
		}, ErrDamaged},
		{"truncated", true, func(t *testing.T, path string) { os.Truncate(path, seedHeaderSize+1) }, ErrDamaged},
		{"missing with points", true, func(t *testing.T, path string) { os.Remove(path) }, ErrDamaged},
		{"older generation with points", true, func(t *testing.T, path string) {
			writeFile(t, path, append(seedHeader{Gen: 7, Size: testDisks[1].Size}.encode(), make([]byte, (seedBlocks(testDisks[1].Size)+7)/8)...))
		}, ErrDamaged},
		{"for another size", false, func(t *testing.T, path string) {
			writeFile(t, path, append(seedHeader{Gen: 1, Size: 4096}.encode(), 0))
		}, ErrDamaged},
		{"missing before any segment", false, func(t *testing.T, path string) { os.Remove(path) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := copyModel(t, 64, testDisks, copyPos)
			dir := mustCreate(t, testDisks, nil)
			o := testOptions(dir)
			r := mustOpen(t, o)
			mustCopy(t, r, m)
			if tt.points {
				mustApply(t, r, m.withBookmark(10, "p"), m.g().at(m.g().sent))
			}
			r.Close()
			tt.damage(t, seedMapPath(dir, testDisks[1]))
			if tt.want != nil {
				if _, err := Open(ctx, o); !errors.Is(err, tt.want) {
					t.Fatalf("open: %v, want %v", err, tt.want)
				}
				return
			}
			r = mustOpen(t, o)
			mustBeEmptyBase(t, r)
			mustApply(t, r, m.withBookmark(10, "p"), m.g().at(m.g().sent))
			mustCheck(t, r, m)
		})
	}
}

// TestRollChecksSeeded: a base roll refuses to write a block that was
// never seeded (its content at the base is in current).
func TestRollChecksSeeded(t *testing.T) {
	m := copyModel(t, 65, testDisks, copyPos)
	m.step = time.Minute
	o := testOptions(mustCreate(t, testDisks, nil))
	now := new(time.Time)
	o.Retention, o.Now = retention.Policy{KeepAll: time.Minute}, func() time.Time { return *now }
	r := mustOpen(t, o)
	mustCopy(t, r, m)
	for range 4 {
		mustApply(t, r, m.withBookmark(10, "p"), m.g().at(m.g().sent))
	}
	*now = m.clock
	r.curMu.Lock()
	for _, sm := range r.seeded {
		clear(sm.bits)
	}
	r.curMu.Unlock()
	if _, _, err := r.Prune(context.Background()); !errors.Is(err, ErrDamaged) {
		t.Fatalf("prune over unseeded blocks: %v, want ErrDamaged", err)
	}
}

// TestCopyConcurrentViews reads views of points while ApplyBatch seeds
// blocks and overwrites them in current, and Prune rolls the base (run it
// with -race): every read equals the point's content.
func TestCopyConcurrentViews(t *testing.T) {
	ctx := context.Background()
	f := newConcurrentCopy(t, 66, 15, 12)
	r, m := f.r, f.m
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		f.applyAll(ctx, errs)
	})
	loop := loopUntil(&wg, done, errs)
	loop(func() error { return readSmallPieces(f.v, f.want) })
	loop(func() error { return checkSomePoint(ctx, r, m) })
	loop(func() error { _, _, err := r.Prune(ctx); return err })
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := seededBlocks(r); n[0] < seedBlocks(testDisks[0].Size)/2 {
		t.Errorf("only %v blocks seeded: the test overwrote too little", n)
	}
	f.finish(t)
}

// concurrentCopy is a replica after a copy, with its first point and a
// view of it open, and batches of segments to apply while other work goes
// on.
type concurrentCopy struct {
	r       *Replica
	m       *model
	v       *View
	want    [][]byte // the first point's disks
	batches [][][]byte
	advance func() // moves the replica's clock 5 minutes on
}

func newConcurrentCopy(t *testing.T, seed uint64, batches, records int) *concurrentCopy {
	t.Helper()
	ctx := context.Background()
	m := copyModel(t, seed, testDisks, copyPos)
	m.step = time.Minute
	o := testOptions(mustCreate(t, testDisks, nil))
	o.Retention = retention.Policy{KeepAll: 15 * time.Minute}
	var clock sync.Mutex
	now := m.clock
	o.Now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	r := mustOpen(t, o)
	mustCopy(t, r, m)
	mustApply(t, r, m.withBookmark(2, "first"), m.g().at(m.g().sent))
	first := r.Points()[0]
	v, err := r.OpenPoint(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	f := &concurrentCopy{r: r, m: m, v: v, want: m.marks[first.Time.UnixNano()].disks}
	f.advance = func() { clock.Lock(); now = now.Add(5 * time.Minute); clock.Unlock() }
	m.bookmarkEvery = 8
	for range batches {
		f.batches = append(f.batches, [][]byte{m.next(records), m.next(records)})
	}
	return f
}

// applyAll applies the batches, the clock moving between them.
func (f *concurrentCopy) applyAll(ctx context.Context, errs chan<- error) {
	for i, b := range f.batches {
		if _, err := f.r.ApplyBatch(ctx, b); err != nil {
			errs <- fmt.Errorf("batch %d: %w", i, err)
			return
		}
		f.advance()
	}
}

// finish checks the view once more and every point left against the model.
func (f *concurrentCopy) finish(t *testing.T) {
	t.Helper()
	if err := readSmallPieces(f.v, f.want); err != nil {
		t.Error(err)
	}
	m := f.m
	m.g().sent = len(m.g().recs)
	for _, p := range m.wantPoints() {
		m.pruned[p] = true
	}
	for _, p := range f.r.Points() {
		delete(m.pruned, p.Time.UnixNano())
	}
	mustCheck(t, f.r, m)
}

// loopUntil returns a function that runs f over and over in a goroutine
// of wg until done is closed or f fails (its error goes to errs).
func loopUntil(wg *sync.WaitGroup, done <-chan struct{}, errs chan<- error) func(f func() error) {
	return func(f func() error) {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := f(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
}

// readSmallPieces reads each disk of v in pieces of 5000 bytes, across
// block boundaries, and compares them with want.
func readSmallPieces(v *View, want [][]byte) error {
	for i, d := range v.Disks() {
		for off := int64(0); off < d.Size; off += 5000 {
			p := make([]byte, 5000)
			n, err := v.DiskReaderAt(i).ReadAt(p, off)
			if err != nil && err != io.EOF {
				return err
			}
			if string(p[:n]) != string(want[i][off:off+int64(n)]) {
				return fmt.Errorf("point %d disk %d: bytes at %d differ", v.Point().ID, i, off)
			}
		}
	}
	return nil
}
