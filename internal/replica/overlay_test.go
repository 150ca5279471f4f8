package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// mustOverlay makes an overlay over base in a temporary directory.
func mustOverlay(tb testing.TB, base []byte, point uint64) (*Overlay, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "disk")
	o, err := CreateOverlay(path, bytes.NewReader(base), int64(len(base)), point)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { o.Close() })
	return o, path
}

func readOverlay(tb testing.TB, o *Overlay) []byte {
	tb.Helper()
	b := make([]byte, o.Size())
	if err := o.ReadAt(context.Background(), b, 0); err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustEqualBytes(tb testing.TB, what string, got, want []byte) {
	tb.Helper()
	mustEqualDisks(tb, what, [][]byte{got}, [][]byte{want})
}

func randomBytes(rnd *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32() | 1)
	}
	return b
}

// TestOverlayModel applies random writes, zeroes and trims to an overlay
// and to a reference copy, checks random reads and the whole disk against
// the reference, then reopens the overlay from its files after a flush.
// The base never changes.
func TestOverlayModel(t *testing.T) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(7, 11))
	const size = 300<<10 + 512 // the last block is short
	base := randomBytes(rnd, size)
	baseCopy := bytes.Clone(base)
	o, path := mustOverlay(t, base, 42)
	ref := bytes.Clone(base)
	for i := range 300 {
		off := rnd.Int64N(size)
		n := 1 + rnd.Int64N(min(size-off, 40<<10))
		if rnd.IntN(3) == 0 { // block-aligned sometimes
			off &^= OverlayBlockSize - 1
			n = min((n+OverlayBlockSize-1)&^(OverlayBlockSize-1), size-off)
		}
		var err error
		switch k := rnd.IntN(10); {
		case k < 6:
			p := randomBytes(rnd, int(n))
			err = o.WriteAt(ctx, p, off, rnd.IntN(20) == 0)
			copy(ref[off:], p)
		case k < 8:
			err = o.Zero(ctx, off, n, rnd.IntN(2) == 0, false)
			clear(ref[off : off+n])
		default:
			err = o.Trim(ctx, off, n, false)
			// A trim discards the whole blocks it covers; they read as zeros.
			from := (off + OverlayBlockSize - 1) &^ (OverlayBlockSize - 1)
			to := (off + n) &^ (OverlayBlockSize - 1)
			if off+n == size {
				to = size
			}
			if from < to {
				clear(ref[from:to])
			}
		}
		if err != nil {
			t.Fatalf("op %d at %d+%d: %v", i, off, n, err)
		}
		roff := rnd.Int64N(size)
		rb := make([]byte, 1+rnd.Int64N(min(size-roff, 20000)))
		if err := o.ReadAt(ctx, rb, roff); err != nil {
			t.Fatal(err)
		}
		mustEqualBytes(t, fmt.Sprintf("after op %d, read %d+%d", i, roff, len(rb)), rb, ref[roff:roff+int64(len(rb))])
	}
	mustEqualBytes(t, "overlay", readOverlay(t, o), ref)
	mustEqualBytes(t, "base", base, baseCopy)
	blocks := o.Blocks()
	if blocks == 0 || blocks > (size+OverlayBlockSize-1)/OverlayBlockSize {
		t.Fatalf("blocks %d", blocks)
	}
	if err := o.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o2, err := OpenOverlay(path, bytes.NewReader(base), size, 42)
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	if o2.Blocks() != blocks {
		t.Fatalf("reopened: %d blocks, want %d", o2.Blocks(), blocks)
	}
	mustEqualBytes(t, "reopened overlay", readOverlay(t, o2), ref)
}

// TestOverlayCreateIsConstant makes an overlay over a 64 GiB disk: the
// files it allocates are a header page, whatever the size.
func TestOverlayCreateIsConstant(t *testing.T) {
	const size = 64 << 30
	path := filepath.Join(t.TempDir(), "disk")
	o, err := CreateOverlay(path, zeroReader{}, size, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	for _, f := range []string{path + ".data", path + ".map"} {
		if got := allocated(t, f); got > 64<<10 {
			t.Errorf("%s: %d bytes allocated for an empty overlay", f, got)
		}
	}
	// A write near the end allocates a block and a bitmap page there.
	ctx := context.Background()
	if err := o.WriteAt(ctx, []byte("end"), size-3, true); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	if err := o.ReadAt(ctx, b, size-8); err != nil {
		t.Fatal(err)
	}
	if string(b) != "\x00\x00\x00\x00\x00end" {
		t.Fatalf("read back %q", b)
	}
	if got := allocated(t, path+".map"); got > 64<<10 {
		t.Errorf("map: %d bytes allocated after one write", got)
	}
}

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) { clear(p); return len(p), nil }

func allocated(tb testing.TB, path string) int64 {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		tb.Skip("no allocation figures on this system")
	}
	return st.Blocks * 512
}

// TestOverlayExtents: the base reads as data, zeroed blocks of the overlay
// as holes that read as zeros; the answer is contiguous from off.
func TestOverlayExtents(t *testing.T) {
	ctx := context.Background()
	const size = 64 * OverlayBlockSize
	o, _ := mustOverlay(t, bytes.Repeat([]byte{1}, size), 1)
	if err := o.Zero(ctx, 8*OverlayBlockSize, 8*OverlayBlockSize, true, false); err != nil {
		t.Fatal(err)
	}
	if err := o.WriteAt(ctx, []byte{9}, 20*OverlayBlockSize, false); err != nil {
		t.Fatal(err)
	}
	exts, err := o.Extents(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	var holes []int64
	for _, e := range exts {
		if e.Hole != e.Zero {
			t.Fatalf("extent %+v: a hole here always reads as zeros", e)
		}
		if e.Hole {
			holes = append(holes, sum, e.Length)
		}
		sum += e.Length
	}
	if sum != size {
		t.Fatalf("extents cover %d bytes, want %d: %+v", sum, size, exts)
	}
	// Not every file system makes holes; where it does, they are exactly the zeroed blocks.
	if len(holes) > 0 && fmt.Sprint(holes) != fmt.Sprint([]int64{8 * OverlayBlockSize, 8 * OverlayBlockSize}) {
		t.Fatalf("holes at %v, want the zeroed 8 blocks at block 8", holes)
	}
	if _, err := o.Extents(ctx, size-1, 2); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("extents past the end: %v, want EINVAL", err)
	}
}

// TestOverlayConcurrent runs writers of interleaved partial blocks and
// readers at once (run with -race): every writer's bytes land, none is
// lost to another's read-modify-write of the same block.
func TestOverlayConcurrent(t *testing.T) {
	ctx := context.Background()
	const size = 32 * OverlayBlockSize
	base := randomBytes(rand.New(rand.NewPCG(1, 2)), size)
	o, _ := mustOverlay(t, base, 1)
	const writers, chunk = 4, 1000 // chunks straddle blocks; writers share blocks
	var wg sync.WaitGroup
	errs := make(chan error, writers*2)
	for w := range writers {
		wg.Go(func() {
			for off := int64(w * chunk); off+chunk <= size; off += writers * chunk {
				if err := o.WriteAt(ctx, bytes.Repeat([]byte{byte(w + 1)}, chunk), off, false); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			b := make([]byte, 3*OverlayBlockSize)
			for range 50 {
				if err := o.ReadAt(ctx, b, int64(w)*OverlayBlockSize); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := bytes.Clone(base)
	for off := 0; off+chunk <= size; off += chunk {
		w := (off / chunk) % writers
		copy(want[off:off+chunk], bytes.Repeat([]byte{byte(w + 1)}, chunk))
	}
	mustEqualBytes(t, "after concurrent writes", readOverlay(t, o), want)
}

// TestOverlayRefuses: bad ranges, a map of another point or size, a
// damaged header, and calls after Close.
func TestOverlayRefuses(t *testing.T) {
	ctx := context.Background()
	base := make([]byte, 10*OverlayBlockSize)
	o, path := mustOverlay(t, base, 5)
	if err := o.WriteAt(ctx, []byte{1, 2}, int64(len(base))-1, false); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("write past the end: %v", err)
	}
	if err := o.ReadAt(ctx, make([]byte, 1), -1); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("read before the start: %v", err)
	}
	if _, err := CreateOverlay(path, bytes.NewReader(base), int64(len(base)), 5); !errors.Is(err, os.ErrExist) {
		t.Fatalf("create over existing files: %v", err)
	}
	if _, err := CreateOverlay(path+"2", bytes.NewReader(base), 0, 5); err == nil {
		t.Fatal("an overlay of an empty disk was made")
	}
	o.Close()
	if err := o.WriteAt(ctx, []byte{1}, 0, false); !errors.Is(err, ErrClosed) || !errors.Is(err, syscall.ESHUTDOWN) {
		t.Fatalf("write after close: %v", err)
	}
	if err := o.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("flush after close: %v", err)
	}
	for _, c := range []struct {
		size  int64
		point uint64
	}{{int64(len(base)), 6}, {int64(len(base)) + 1, 5}} {
		if _, err := OpenOverlay(path, bytes.NewReader(base), c.size, c.point); !errors.Is(err, ErrDamaged) {
			t.Fatalf("open as point %d of %d bytes: %v, want ErrDamaged", c.point, c.size, err)
		}
	}
	f, err := os.OpenFile(path+".map", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff}, 20)
	f.Close()
	if _, err := OpenOverlay(path, bytes.NewReader(base), int64(len(base)), 5); !errors.Is(err, ErrDamaged) {
		t.Fatalf("open with a damaged header: %v, want ErrDamaged", err)
	}
	if err := RemoveOverlay(path); err != nil {
		t.Fatal(err)
	}
	if err := RemoveOverlay(path); err != nil {
		t.Fatalf("removing again: %v", err)
	}
}

// TestOverlayOverView: an overlay over a point's view reads the point,
// and writes to it change neither the view nor the replica.
func TestOverlayOverView(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 3, testDisks)
	r := mustOpen(t, testOptions(mustCreate(t, testDisks, nil)))
	seg := m.withBookmark(30, "p1")
	mustApply(t, r, seg, m.g().at(len(m.g().recs)))
	pts := r.Points()
	if len(pts) == 0 {
		t.Fatal("no recovery point")
	}
	p := pts[len(pts)-1]
	want := m.marks[p.Time.UnixNano()].disks
	v, err := r.OpenPoint(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	o, err := CreateOverlay(filepath.Join(t.TempDir(), "d1"), v.DiskReaderAt(1), v.Size(1), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	mustEqualBytes(t, "overlay before writes", readOverlay(t, o), want[1])
	if err := o.WriteAt(ctx, bytes.Repeat([]byte{0xee}, 10000), 5000, false); err != nil {
		t.Fatal(err)
	}
	got := readOverlay(t, o)
	if !bytes.Equal(got[5000:15000], bytes.Repeat([]byte{0xee}, 10000)) {
		t.Fatal("the write does not read back")
	}
	mustEqualBytes(t, "overlay outside the write", got[15000:], want[1][15000:])
	mustEqualDisks(t, "point after overlay writes", viewDisks(t, r, p.ID), want)
	mustEqualDisks(t, "view after overlay writes", [][]byte{readDisk(t, v.DiskReaderAt(1), v.Size(1))}, [][]byte{want[1]})
}
