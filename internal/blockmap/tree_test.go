package blockmap

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func mustTree(tb testing.TB, m *Map, fanout int, size int64) *Tree {
	tb.Helper()
	t, err := NewTree(m, fanout, size)
	if err != nil {
		tb.Fatalf("NewTree: %v", err)
	}
	return t
}

// compareTrees runs the level-by-level protocol between two trees, each
// request and answer going through the wire encoding, at most max nodes a
// request. It returns the ranges and the number of node hashes received.
func compareTrees(tb testing.TB, local, remote *Tree, max int) ([]Range, int64) {
	tb.Helper()
	c := NewCompare(local)
	for {
		req, ok := c.Next(max)
		if !ok {
			break
		}
		b, err := AppendNodes(nil, req)
		if err != nil {
			tb.Fatalf("encode request: %v", err)
		}
		if req, err = DecodeNodes(b); err != nil {
			tb.Fatalf("decode request: %v", err)
		}
		ans, err := remote.Answer(req)
		if err != nil {
			tb.Fatalf("Answer: %v", err)
		}
		if b, err = AppendNodes(nil, ans); err != nil {
			tb.Fatalf("encode answer: %v", err)
		}
		if ans, err = DecodeNodes(b); err != nil {
			tb.Fatalf("decode answer: %v", err)
		}
		if err := c.Receive(ans); err != nil {
			tb.Fatalf("Receive: %v", err)
		}
	}
	if !c.Done() {
		tb.Fatalf("Next reports done but Done() is false")
	}
	return c.Ranges(), c.Received()
}

func TestTreeShape(t *testing.T) {
	tests := []struct {
		blocks int64
		fanout int
		levels int
	}{
		{0, 4, 1}, {1, 4, 1}, {2, 4, 2}, {4, 4, 2}, {5, 4, 3}, {16, 4, 3}, {17, 4, 4}, {64, 64, 2}, {65, 64, 3},
	}
	for _, tt := range tests {
		m := &Map{BlockSize: testBS, Size: tt.blocks * testBS, Hashes: make([]Hash, tt.blocks)}
		tr := mustTree(t, m, tt.fanout, 0)
		if tr.Levels() != tt.levels || tr.Width(tr.Levels()-1) > 1 {
			t.Errorf("%d blocks, fan-out %d: %d levels, want %d", tt.blocks, tt.fanout, tr.Levels(), tt.levels)
		}
		if !tr.Root().IsZero() {
			t.Errorf("%d zero blocks: root %s, want ZeroHash", tt.blocks, tr.Root())
		}
	}
	m := &Map{BlockSize: testBS, Size: 5 * testBS, Hashes: make([]Hash, 5)}
	if _, err := NewTree(m, 4, testBS); !errors.Is(err, ErrParams) {
		t.Errorf("tree smaller than its map: err = %v, want ErrParams", err)
	}
	if _, err := NewTree(m, 1, 0); !errors.Is(err, ErrParams) {
		t.Errorf("fan-out 1: err = %v, want ErrParams", err)
	}
	// Extending a map with zero blocks keeps every node below the new top.
	m.Hashes[3] = Hash{1}
	a, b := mustTree(t, m, 4, 0), mustTree(t, m, 4, 64*testBS)
	if a.Node(1, 0) != b.Node(1, 0) || a.Node(1, 1) != b.Node(1, 1) {
		t.Errorf("zero extension changed level-1 nodes")
	}
	if a.Root() == b.Root() {
		t.Errorf("trees of different shapes share a root")
	}
}

// TestCompareProperty: random disks with random modifications. Diff finds
// exactly the modified blocks, the level-by-level comparison finds the same
// ranges, and it costs at most 1 + changed × fanout × (levels−1) hashes.
func TestCompareProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 60 {
		size := r.IntN(3000*testBS) + 1
		disk := randomDisk(r, size)
		other := slices.Clone(disk)
		// Modify some blocks; sometimes grow or shrink the other side.
		changed := map[int64]bool{}
		for range r.IntN(12) {
			blk := r.IntN((size + testBS - 1) / testBS)
			run := 1 + r.IntN(3)
			for k := blk; k < blk+run && k*testBS < size; k++ {
				off := k*testBS + r.IntN(min(testBS, size-k*testBS))
				other[off] ^= byte(1 + r.IntN(255))
				changed[int64(k)] = true
			}
		}
		switch r.IntN(4) {
		case 0: // grow with zeros: nothing new differs
			other = append(other, make([]byte, r.IntN(50*testBS))...)
		case 1: // grow with data
			other = append(other, randomDisk(r, r.IntN(20*testBS)+1)...)
		case 2: // shrink
			other = other[:r.IntN(len(other)+1)]
		}
		// The oracle: blocks whose bytes differ, bytes past an end being zero.
		var want []int64
		for k := int64(0); k*testBS < int64(max(len(disk), len(other))); k++ {
			if !bytes.Equal(paddedBlock(disk, k), paddedBlock(other, k)) {
				want = append(want, k)
			}
		}
		for k := range changed {
			if !slices.Contains(want, k) && k*testBS < int64(min(len(disk), len(other))) {
				t.Fatalf("iter %d: modified block %d is not in the oracle", iter, k)
			}
		}
		a := mustHash(t, Hasher{BlockSize: testBS, Workers: 2}, disk, nil)
		b := mustHash(t, Hasher{BlockSize: testBS, Workers: 2}, other, nil)

		ranges, err := Diff(a, b)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, rg := range ranges {
			for off := rg.Off; off < rg.End(); off += testBS {
				got = append(got, off/testBS)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("iter %d: Diff blocks %v, want %v", iter, got, want)
		}
		for i := 1; i < len(ranges); i++ {
			if ranges[i-1].End() >= ranges[i].Off {
				t.Fatalf("iter %d: ranges not merged: %v", iter, ranges)
			}
		}

		fanout := []int{2, 4, 16, 64}[r.IntN(4)]
		union := max(a.Size, b.Size)
		ta, tb := mustTree(t, a, fanout, union), mustTree(t, b, fanout, union)
		if (ta.Root() == tb.Root()) != (len(want) == 0) {
			t.Fatalf("iter %d: roots equal %v with %d changed blocks", iter, ta.Root() == tb.Root(), len(want))
		}
		for _, max := range []int{0, 1, 7} {
			cr, cost := compareTrees(t, ta, tb, max)
			if !slices.Equal(cr, ranges) {
				t.Fatalf("iter %d max %d: Compare ranges %v, Diff %v", iter, max, cr, ranges)
			}
			bound := 1 + int64(len(want))*int64(fanout)*int64(ta.Levels()-1)
			if cost > bound {
				t.Fatalf("iter %d max %d: %d hashes for %d changed blocks, bound %d", iter, max, cost, len(want), bound)
			}
		}
		// Symmetric: comparing from the other side finds the same ranges.
		if cr, _ := compareTrees(t, tb, ta, 0); !slices.Equal(cr, ranges) {
			t.Fatalf("iter %d: reverse Compare ranges %v, want %v", iter, cr, ranges)
		}
	}
}

// paddedBlock returns block k of disk, zero-padded to testBS bytes.
func paddedBlock(disk []byte, k int64) []byte {
	b := make([]byte, testBS)
	if off := k * testBS; off < int64(len(disk)) {
		copy(b, disk[off:])
	}
	return b
}

func TestCompareMismatch(t *testing.T) {
	m := &Map{BlockSize: testBS, Size: 10 * testBS, Hashes: make([]Hash, 10)}
	m.Hashes[4] = Hash{1}
	a := mustTree(t, m, 4, 0)
	b := mustTree(t, m, 8, 0)
	c := NewCompare(a)
	req, _ := c.Next(0)
	if _, err := b.Answer(req); !errors.Is(err, ErrMismatch) {
		t.Errorf("answer with another fan-out: err = %v, want ErrMismatch", err)
	}
	ans, err := a.Answer(req)
	if err != nil {
		t.Fatal(err)
	}
	wrong := *ans
	wrong.Level++
	if err := c.Receive(&wrong); !errors.Is(err, ErrMismatch) {
		t.Errorf("answer for another level: err = %v, want ErrMismatch", err)
	}
	if again, _ := c.Next(0); again != req {
		t.Errorf("outstanding request not repeated after a bad answer")
	}
	if err := c.Receive(ans); err != nil {
		t.Fatal(err)
	}
	if err := c.Receive(ans); !errors.Is(err, ErrMismatch) {
		t.Errorf("answer without a request: err = %v, want ErrMismatch", err)
	}
	if _, ok := c.Next(0); ok || c.Received() != 1 || len(c.Ranges()) != 0 {
		t.Errorf("equal trees: more than the root compared")
	}
	bad := []*Nodes{
		{Params: a.Params(), Level: 5, Runs: []Run{{0, 1}}},
		{Params: a.Params(), Level: 0, Runs: []Run{{9, 2}}},
		{Params: a.Params(), Level: 0, Runs: []Run{{3, 2}, {4, 1}}},
		{Params: a.Params(), Level: 0},
		{Params: a.Params(), Level: 0, Runs: []Run{{0, 1}}, Hashes: make([]Hash, 2)},
	}
	for i, req := range bad {
		if _, err := a.Answer(req); err == nil {
			t.Errorf("bad request %d answered", i)
		}
	}
}

// TestRootRequest: the probe asks for exactly the root, which a tree of a
// zero disk answers with ZeroHash and any other with its root.
func TestRootRequest(t *testing.T) {
	for _, blocks := range []int64{1, 5, 17, 65} {
		m := &Map{BlockSize: testBS, Size: blocks * testBS, Hashes: make([]Hash, blocks)}
		zero := mustTree(t, m, 4, 0)
		req, err := RootRequest(zero.Params())
		if err != nil {
			t.Fatal(err)
		}
		if req.Level != zero.Levels()-1 || req.Count() != 1 {
			t.Fatalf("%d blocks: request level %d count %d, want level %d count 1", blocks, req.Level, req.Count(), zero.Levels()-1)
		}
		ans, err := zero.Answer(req)
		if err != nil || !ans.Hashes[0].IsZero() {
			t.Fatalf("%d zero blocks: answer %v, %v; want ZeroHash", blocks, ans, err)
		}
		m.Hashes[blocks-1] = Hash{7}
		other := mustTree(t, m, 4, 0)
		if ans, err = other.Answer(req); err != nil || ans.Hashes[0] != other.Root() || ans.Hashes[0].IsZero() {
			t.Fatalf("%d blocks, one set: answer %v, %v; want the root %s", blocks, ans, err, other.Root())
		}
	}
	if _, err := RootRequest(Params{}); !errors.Is(err, ErrParams) {
		t.Errorf("invalid params: err = %v, want ErrParams", err)
	}
}
