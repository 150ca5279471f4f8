package loadgen

import (
	"context"
	"math/rand/v2"
	"testing"
)

const (
	diskA = 2 << 20
	diskB = 1 << 20
)

func TestCheckExactSnapshots(t *testing.T) {
	ds := []Disk{newMemDisk(diskA), newMemDisk(diskB)}
	g, err := NewGenerator(ds, Options{Seed: 11, Distribution: HotSpot, HotFraction: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	snaps := map[uint64][]*memDisk{0: {newMemDisk(diskA), newMemDisk(diskB)}}
	var n uint64
	for _, step := range []int{1, 9, 40, 150} {
		if err := g.Run(context.Background(), step); err != nil {
			t.Fatal(err)
		}
		n += uint64(step)
		snaps[n] = []*memDisk{ds[0].(*memDisk).clone(), ds[1].(*memDisk).clone()}
	}
	l := g.Log()
	for n, disks := range snaps {
		if err := CheckExact(l, images(disks, InitialZeros), n); err != nil {
			t.Errorf("snapshot after %d writes: CheckExact(%d): %v", n, n, err)
		}
		mustCheck(t, l, disks, n)
		for m := range snaps {
			if m != n && CheckExact(l, images(disks, InitialZeros), m) == nil {
				t.Errorf("snapshot after %d writes passed CheckExact(%d)", n, m)
			}
		}
	}
	// Replayed prefixes equal the snapshots' states, at every n.
	for _, n := range []uint64{0, 1, 2, 3, 17, 99, 199, 200} {
		disks := replay(l, prefix(n)...)
		if err := CheckExact(l, images(disks, InitialZeros), n); err != nil {
			t.Errorf("replay of 1..%d: %v", n, err)
		}
		if r := mustCheck(t, l, disks, n); r.Max != n || r.Applied != int(n) {
			t.Errorf("replay of 1..%d: %+v", n, r)
		}
	}
}

func TestCheckDroppedWrite(t *testing.T) {
	l, _ := mustGenerate(t, Options{Seed: 5}, 60, diskA, diskB)
	const n = 60
	vis := visibleAt(l, n)
	k := uint64(30)
	for !vis[k] {
		k++
	}
	seqs := prefix(n)
	disks := replay(l, append(seqs[:k-1:k-1], seqs[k:]...)...)
	_, err := Check(l, images(disks, InitialZeros))
	ie := mustInconsistent(t, err, k, errGot(l, k, n), "is missing")
	t.Log(ie)
	if err := CheckExact(l, images(disks, InitialZeros), n); err == nil {
		t.Error("CheckExact accepted a dropped write")
	}
}

// errGot returns what the first block of write k that is still visible at n
// holds when k is dropped: the previous writer, or initial content.
func errGot(l *Log, k, n uint64) uint64 {
	x, _ := newIndex(l)
	w := l.Write(k)
	for i := range int64(w.Blocks) {
		var last, prev uint64
		for _, s := range x.writes(w.Disk, w.Offset/int64(l.BlockSize)+i) {
			if s <= n {
				if s != k {
					prev = s
				}
				last = s
			}
		}
		if last == k {
			return prev
		}
	}
	panic("write not visible")
}

func TestCheckReorderedDependentWrites(t *testing.T) {
	l, _ := mustGenerate(t, Options{Seed: 8, MinBlocks: 2, Distribution: HotSpot, HotFraction: 0.01}, 200, diskA)
	bs := int64(l.BlockSize)
	// Find consecutive writes i, i+1 that overlap, with i+1 not covered by i.
	var i uint64
	for s := uint64(1); s < uint64(len(l.Writes)) && i == 0; s++ {
		a, b := l.Write(s), l.Write(s+1)
		overlap := a.Offset < b.Offset+int64(b.Blocks)*bs && b.Offset < a.Offset+int64(a.Blocks)*bs
		covered := a.Offset <= b.Offset && b.Offset+int64(b.Blocks)*bs <= a.Offset+int64(a.Blocks)*bs
		if overlap && !covered {
			i = s
		}
	}
	if i == 0 {
		t.Fatal("no overlapping pair of writes; change the seed")
	}
	seqs := append(prefix(i-1), i+1, i) // i+1 applied before i, then i on top
	disks := replay(l, seqs...)
	_, err := Check(l, images(disks, InitialZeros))
	t.Log(mustInconsistent(t, err, i+1, i, "reordered"))
	if err := CheckExact(l, images(disks, InitialZeros), i+1); err == nil {
		t.Error("CheckExact accepted reordered writes")
	}
}

func TestCheckTornWrite(t *testing.T) {
	l, _ := mustGenerate(t, Options{Seed: 9, MinBlocks: 4, MaxBlocks: 8}, 50, diskA, diskB)
	const n = 50
	disks := replay(l, prefix(n-1)...)
	w := l.Write(n)
	for i := range w.Blocks / 2 {
		applyBlock(l, disks, n, i)
	}
	_, err := Check(l, images(disks, InitialZeros))
	ie := mustInconsistent(t, err, n, errGot(l, n, n), "torn")
	if want := w.Offset + int64(w.Blocks/2*l.BlockSize); ie.Disk != w.Disk || ie.Offset != want {
		t.Errorf("torn write reported at disk %d offset %d, want disk %d offset %d", ie.Disk, ie.Offset, w.Disk, want)
	}
}

func TestCheckBlockFromAnotherDisk(t *testing.T) {
	l, disks := mustGenerate(t, Options{Seed: 4}, 80, diskB, diskB)
	w := l.Write(80)
	other := 1 - w.Disk
	copy(disks[other].b[w.Offset:], disks[w.Disk].b[w.Offset:w.Offset+int64(l.BlockSize)])
	_, err := Check(l, images(disks, InitialZeros))
	ie := mustInconsistent(t, err, 0, 80, "misplaced block")
	if ie.Disk != other || ie.Offset != w.Offset {
		t.Errorf("reported at disk %d offset %d, want disk %d offset %d", ie.Disk, ie.Offset, other, w.Offset)
	}
	if err := CheckExact(l, images(disks, InitialZeros), 80); err == nil {
		t.Error("CheckExact accepted a misplaced block")
	}
}

func TestCheckCorruptedBlock(t *testing.T) {
	l, disks := mustGenerate(t, Options{Seed: 4}, 80, diskA, diskB)
	w := l.Write(77)
	disks[w.Disk].b[w.Offset+int64(l.BlockSize)-1] ^= 0x10
	_, err := Check(l, images(disks, InitialZeros))
	mustInconsistent(t, err, 0, 77, "corrupted block")
	if err := CheckExact(l, images(disks, InitialZeros), 80); err == nil {
		t.Error("CheckExact accepted a corrupted block")
	}
}

func TestCheckInitialContent(t *testing.T) {
	// Disks full of random bytes and of blocks of another run.
	r := rand.New(rand.NewPCG(1, 2))
	var ds []Disk
	var disks []*memDisk
	for _, size := range []int{diskA, diskB} {
		d := newMemDisk(size)
		for i := range d.b {
			d.b[i] = byte(r.Uint32())
		}
		Encode(d.b[4096:8192], Header{BlockSize: 4096, RunID: 99, Seq: 1, Offset: 4096, Disk: 0, Index: 0, Count: 1})
		ds, disks = append(ds, d), append(disks, d)
	}
	g, err := NewGenerator(ds, Options{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background(), 30); err != nil {
		t.Fatal(err)
	}
	l := g.Log()
	if r, err := Check(l, images(disks, InitialForeign)); err != nil || r.Cut != 30 {
		t.Fatalf("foreign initial content: %+v, %v", r, err)
	}
	if err := CheckExact(l, images(disks, InitialForeign), 30); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(l, images(disks, InitialZeros)); err == nil {
		t.Fatal("random initial content accepted as zeros")
	}
}

func TestCheckShortImage(t *testing.T) {
	l, disks := mustGenerate(t, Options{Seed: 4}, 10, diskB)
	disks[0].b = disks[0].b[:diskB/2]
	if _, err := Check(l, images(disks, InitialZeros)); err == nil {
		t.Fatal("a short image passed")
	}
}
