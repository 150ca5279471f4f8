package loadgen

import (
	"cmp"
	"context"
	"slices"
	"testing"
	"time"
)

// completionOrder is a linear extension of happens-before: a write that
// happened before another also completed before it.
func completionOrder(l *Log) []uint64 {
	seqs := prefix(uint64(len(l.Writes)))
	slices.SortFunc(seqs, func(a, b uint64) int { return cmp.Compare(l.Write(a).Completed, l.Write(b).Completed) })
	return seqs
}

// latestFirstOrder is another linear extension: at each step it applies
// the highest seq whose predecessors are all applied, so that concurrent
// writes are applied against seq order wherever allowed.
func latestFirstOrder(l *Log) []uint64 {
	done := make([]bool, len(l.Writes)+1)
	var order []uint64
	for len(order) < len(l.Writes) {
		for s := uint64(len(l.Writes)); s >= 1; s-- {
			if done[s] {
				continue
			}
			ready := true
			for p := uint64(1); p <= uint64(len(l.Writes)) && ready; p++ {
				ready = done[p] || !l.Write(p).HappensBefore(l.Write(s))
			}
			if ready {
				done[s] = true
				order = append(order, s)
				break
			}
		}
	}
	return order
}

// foundSeqs returns the seqs of the writes found in some block of disks.
func foundSeqs(l *Log, disks []*memDisk) map[uint64]bool {
	found := map[uint64]bool{}
	for _, d := range disks {
		for off := 0; off < len(d.b); off += l.BlockSize {
			if h, err := DecodeBlock(d.b[off:off+l.BlockSize], nil); err == nil {
				found[h.Seq] = true
			}
		}
	}
	return found
}

func mustConcurrentLog(t *testing.T) (*Log, []*memDisk) {
	t.Helper()
	disks := []*memDisk{newMemDisk(diskB), newMemDisk(diskB / 2)}
	for _, d := range disks {
		d.delay = 20 * time.Microsecond
	}
	g, err := NewGenerator([]Disk{disks[0], disks[1]}, Options{
		Seed: 21, Concurrency: 4, Distribution: HotSpot, HotFraction: 0.03, MaxBlocks: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background(), 300); err != nil {
		t.Fatal(err)
	}
	l := g.Log()
	if l.Sequential() {
		t.Fatal("a log of 4 concurrent writers is sequential")
	}
	return l, disks
}

func TestCheckConcurrentEitherOrder(t *testing.T) {
	l, disks := mustConcurrentLog(t)
	// Writes overwritten by concurrent ones are not proven applied.
	t.Logf("generated images: %+v", mustConsistent(t, l, disks))
	for name, order := range map[string][]uint64{
		"completion":   completionOrder(l),
		"latest first": latestFirstOrder(l),
	} {
		inverted := 0 // concurrent overlapping pairs applied against seq order
		for i, a := range order {
			for _, b := range order[i+1:] {
				wa, wb := l.Write(a), l.Write(b)
				if a > b && wa.Disk == wb.Disk && wa.Offset < wb.Offset+int64(wb.Blocks*l.BlockSize) &&
					wb.Offset < wa.Offset+int64(wa.Blocks*l.BlockSize) {
					inverted++
				}
			}
		}
		if inverted == 0 {
			t.Fatalf("%s order: no overlapping writes applied against seq order; the test proves nothing", name)
		}
		for _, k := range []int{1, 10, 50, 151, 299, 300} {
			disks := replay(l, order[:k]...)
			r, err := Check(l, images(disks, InitialZeros))
			if err != nil {
				t.Fatalf("%s order, first %d writes: %v", name, k, err)
			}
			if r.Applied > k || r.Max < r.Cut {
				t.Fatalf("%s order, first %d writes: %+v", name, k, r)
			}
		}
	}
}

func TestCheckConcurrentHappensAfterWithoutPredecessor(t *testing.T) {
	l, _ := mustConcurrentLog(t)
	order := completionOrder(l)
	last := l.Write(order[len(order)-1])
	visible := foundSeqs(l, replay(l, order...))
	dropped := 0
	for i, s := range order[:len(order)-1] {
		if !visible[s] || !l.Write(s).HappensBefore(last) || dropped == 5 {
			continue
		}
		dropped++
		without := append(append([]uint64(nil), order[:i]...), order[i+1:]...)
		_, err := Check(l, images(replay(l, without...), InitialZeros))
		mustInconsistent(t, err, s, errorGot(err), "is missing")
	}
	if dropped == 0 {
		t.Fatal("no visible write happened before the last one")
	}
}

// errorGot returns the Got of an *InconsistencyError, or 0.
func errorGot(err error) uint64 {
	if ie, ok := err.(*InconsistencyError); ok {
		return ie.Got
	}
	return 0
}

// handLog builds a log of 512-byte blocks on one disk of 8 blocks.
func handLog(writes ...Write) *Log {
	l := &Log{RunID: 1, BlockSize: 512, DiskSizes: []int64{8 * 512}}
	for i, w := range writes {
		w.Seq = uint64(i + 1)
		w.Offset *= 512
		l.Writes = append(l.Writes, w)
	}
	return l
}

func TestCheckConcurrentInterleaved(t *testing.T) {
	// Writes 1 and 2 overlap on blocks 0 and 1 and in time.
	l := handLog(Write{Offset: 0, Blocks: 2, Issued: 1, Completed: 3}, Write{Offset: 0, Blocks: 2, Issued: 2, Completed: 4})
	// Either order is fine; the write underneath is not proven applied.
	if r := mustConsistent(t, l, replay(l, 1, 2)); r != (Result{Cut: 0, Max: 2, Applied: 1}) {
		t.Errorf("1 then 2: %+v", r)
	}
	if r := mustConsistent(t, l, replay(l, 2, 1)); r != (Result{Cut: 1, Max: 1, Applied: 1}) {
		t.Errorf("2 then 1: %+v", r)
	}
	disks := replay(l, 1)
	applyBlock(l, disks, 2, 1)
	_, err := Check(l, images(disks, InitialZeros))
	t.Log(mustInconsistent(t, err, 1, 2, "applied in both orders"))

	// Once write 1 completed before write 2 was issued, only one order is right.
	l = handLog(Write{Offset: 0, Blocks: 2, Issued: 1, Completed: 3}, Write{Offset: 0, Blocks: 3, Issued: 4, Completed: 5})
	mustCheck(t, l, replay(l, 1, 2), 2)
	_, err = Check(l, images(replay(l, 2, 1), InitialZeros))
	mustInconsistent(t, err, 2, 1, "reordered")
}

func TestCheckConcurrentCycle(t *testing.T) {
	// 1 happened before 3; 2 is concurrent with both. Block 0 shows 1 over 2,
	// block 1 shows 2 over 3, so 3 < 2 < 1 < 3: no order fits.
	l := handLog(
		Write{Offset: 0, Blocks: 1, Issued: 1, Completed: 3},
		Write{Offset: 0, Blocks: 2, Issued: 2, Completed: 7},
		Write{Offset: 1, Blocks: 2, Issued: 4, Completed: 5},
	)
	mustCheck(t, l, replay(l, 1, 2, 3), 3)
	mustCheck(t, l, replay(l, 1, 3, 2), 3)
	_, err := Check(l, images(replay(l, 3, 2, 1), InitialZeros))
	t.Log(mustInconsistent(t, err, 2, 1, "no order"))
}
