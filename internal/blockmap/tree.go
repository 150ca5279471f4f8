package blockmap

import (
	"crypto/sha256"
	"fmt"
)

// Tree is a Merkle tree over a Map (see the package glossary). Level 0 is the
// map's block hashes, extended with ZeroHash to Params.Size; level k+1 has
// ⌈width(k)/Fanout⌉ nodes; the top level, Levels()−1, has one node, the
// root. A Tree is immutable and safe for concurrent use.
type Tree struct {
	p      Params
	leaves *Map     // level 0; blocks past its end are ZeroHash
	levels [][]Hash // levels[k-1] is level k, for k ≥ 1
	width  []int64  // width[k] is the number of nodes of level k
}

// NewTree builds the tree of m with the given fan-out, over size bytes:
// size is 0 for m.Size, or the union of both sides' sizes when comparing
// with a larger remote (see "Disks of different sizes" in the package
// documentation). size must not be smaller than m.Size. The tree keeps a
// reference to m.Hashes and hashes about len(m.Hashes)/(fanout−1) nodes.
func NewTree(m *Map, fanout int, size int64) (*Tree, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("build tree: %w", err)
	}
	if size == 0 {
		size = m.Size
	}
	p := Params{BlockSize: m.BlockSize, Fanout: fanout, Size: size}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("build tree: %w", err)
	}
	if size < m.Size {
		return nil, fmt.Errorf("build tree: %w: size %d is smaller than the map's %d", ErrParams, size, m.Size)
	}
	t := &Tree{p: p, leaves: m, width: []int64{p.Blocks()}}
	below := func(i int64) Hash { return m.Block(i) }
	for w := t.width[0]; w > 1; {
		nw := (w + int64(fanout) - 1) / int64(fanout)
		level := make([]Hash, nw)
		buf := make([]byte, 1+fanout*HashSize)
		buf[0] = 0x01
		for j := range nw {
			zero := true
			for c := range int64(fanout) {
				h := ZeroHash
				if i := j*int64(fanout) + c; i < w {
					h = below(i)
				}
				zero = zero && h.IsZero()
				copy(buf[1+c*HashSize:], h[:])
			}
			if !zero {
				level[j] = sha256.Sum256(buf)
			}
		}
		t.levels = append(t.levels, level)
		t.width = append(t.width, nw)
		below = func(i int64) Hash { return level[i] }
		w = nw
	}
	return t, nil
}

// Params returns the tree's parameters.
func (t *Tree) Params() Params { return t.p }

// Levels returns the number of levels, leaves and root included: 1 for a
// disk of at most one block, and ⌈log_Fanout(blocks)⌉+1 otherwise.
func (t *Tree) Levels() int { return len(t.width) }

// Width returns the number of nodes of level k, 0 if there is no level k.
func (t *Tree) Width(k int) int64 {
	if k < 0 || k >= len(t.width) {
		return 0
	}
	return t.width[k]
}

// Root returns the hash of the top node: equal roots (with equal Params)
// mean equal disks. The root of an empty or all-zero disk is ZeroHash.
func (t *Tree) Root() Hash {
	if t.width[0] == 0 {
		return ZeroHash
	}
	return t.Node(len(t.width)-1, 0)
}

// Node returns the hash of node i of level k. It panics if there is no
// such node.
func (t *Tree) Node(k int, i int64) Hash {
	if i < 0 || i >= t.Width(k) {
		panic(fmt.Sprintf("blockmap: no node %d at level %d", i, k))
	}
	if k == 0 {
		return t.leaves.Block(i)
	}
	return t.levels[k-1][i]
}

// Children returns the nodes of level k−1 under node i of level k, as the
// run [first, end). Level k must be above 0 and node i must exist.
func (t *Tree) Children(k int, i int64) (first, end int64) {
	if k < 1 || i < 0 || i >= t.Width(k) {
		panic(fmt.Sprintf("blockmap: no children of node %d at level %d", i, k))
	}
	f := int64(t.p.Fanout)
	return i * f, min((i+1)*f, t.width[k-1])
}
