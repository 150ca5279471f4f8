package loadgen

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Check reports whether the images hold a consistent state of the run: a
// set S of applied writes, closed under happens-before (a write in S brings
// every write that happened before it), such that every block holds the
// last write of S touching it (initial content if none), where "last"
// orders writes by happens-before and, between concurrent writes, by one
// order chosen consistently for the whole machine. Every write is atomic.
//
// Check takes the smallest such S the images prove (the writes found, and
// those that happened before them) and returns it summarised in Result, or
// an *InconsistencyError naming a block and the writes expected and found.
func Check(l *Log, im Images) (Result, error) {
	c := &checker{
		l:     l,
		found: make([]location, len(l.Writes)+1),
		isIn:  make([]bool, len(l.Writes)+1),
		out:   make([]evidence, len(l.Writes)+1),
		edges: make(map[[2]uint64]location),
	}
	if err := scanBlocks(l, im, c.visit); err != nil {
		return Result{}, err
	}
	return c.decide()
}

// evidence is a block that must not hold a write's successor: it shows got
// (0: initial content), which the write would have replaced.
type evidence struct {
	at  location
	got uint64
	set bool
}

type checker struct {
	l     *Log
	found []location // by seq: the first block holding the write
	isIn  []bool     // by seq: the write is found in some block
	out   []evidence // by seq: a block proving the write is not applied
	// edges[{a, b}] is a block where concurrent write b is found on top of
	// a: if a is applied, it was applied before b.
	edges map[[2]uint64]location
}

func (c *checker) visit(at location, touching []uint64, found uint64) error {
	if found != 0 && !c.isIn[found] {
		c.isIn[found], c.found[found] = true, at
	}
	var f Write
	if found != 0 {
		f = c.l.Write(found)
	}
	for _, s := range touching {
		if s == found {
			continue
		}
		w := c.l.Write(s)
		switch {
		case found == 0 || f.HappensBefore(w):
			if !c.out[s].set {
				c.out[s] = evidence{at: at, got: found, set: true}
			}
		case w.HappensBefore(f):
		default:
			if _, ok := c.edges[[2]uint64{s, found}]; !ok {
				c.edges[[2]uint64{s, found}] = at
			}
		}
	}
	return nil
}

func (c *checker) decide() (Result, error) {
	// The smallest applied set: the writes found, and every write that
	// completed before the last-issued of them was issued.
	var witness uint64
	for s := uint64(1); s < uint64(len(c.isIn)); s++ {
		if c.isIn[s] && (witness == 0 || c.l.Write(s).Issued > c.l.Write(witness).Issued) {
			witness = s
		}
	}
	applied := func(s uint64) bool {
		return c.isIn[s] || witness != 0 && c.l.Write(s).HappensBefore(c.l.Write(witness))
	}
	var r Result
	cutDone := false
	for s := uint64(1); s < uint64(len(c.isIn)); s++ {
		if !applied(s) {
			cutDone = true
			continue
		}
		if ev := c.out[s]; ev.set {
			why := fmt.Sprintf("write %d is missing, but write %d (found at %s) happened after it",
				s, witness, c.found[witness])
			switch {
			case c.isIn[s] && ev.got == 0:
				why = fmt.Sprintf("torn write: write %d is found at %s but not here", s, c.found[s])
			case c.isIn[s]:
				why = fmt.Sprintf("torn or reordered write: write %d is found at %s, but here the older write %d is on top of it",
					s, c.found[s], ev.got)
			}
			return Result{}, &InconsistencyError{Disk: ev.at.disk, Offset: ev.at.off, Want: s, Got: ev.got, Reason: why}
		}
		r.Applied++
		r.Max = s
		if !cutDone {
			r.Cut = s
		}
	}
	if err := c.checkOrder(applied); err != nil {
		return Result{}, err
	}
	return r, nil
}

// checkOrder makes sure one order of the applied writes agrees with both
// happens-before and the order concurrent writes were found in.
func (c *checker) checkOrder(applied func(uint64) bool) error {
	var edges [][2]uint64
	for e := range c.edges {
		if applied(e[0]) {
			edges = append(edges, e)
		}
	}
	slices.SortFunc(edges, func(a, b [2]uint64) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	for _, e := range edges {
		if other, ok := c.edges[[2]uint64{e[1], e[0]}]; ok && applied(e[1]) {
			at := c.edges[e]
			return &InconsistencyError{Disk: at.disk, Offset: at.off, Want: e[0], Got: e[1], Reason: fmt.Sprintf(
				"concurrent writes %d and %d were applied in both orders: %d over %d here, %d over %d at %s",
				e[0], e[1], e[1], e[0], e[0], e[1], other)}
		}
	}
	if cycle := c.cycle(edges); cycle != nil {
		at := c.edges[cycle[0]]
		var ws []uint64
		for _, e := range cycle {
			ws = append(ws, e[0], e[1])
		}
		slices.Sort(ws)
		var seqs []string
		for _, s := range slices.Compact(ws) {
			seqs = append(seqs, fmt.Sprint(s))
		}
		return &InconsistencyError{Disk: at.disk, Offset: at.off, Want: cycle[0][0], Got: cycle[0][1], Reason: fmt.Sprintf(
			"no order of writes %s agrees with their completion order and the order they were found in",
			strings.Join(seqs, ", "))}
	}
	return nil
}

// cycle returns the found-order edges among writes on or behind a
// cycle of happens-before and found-order edges, or nil. Happens-before is
// an interval order, so it is drawn with a chain of helper nodes: write
// nodes sorted by Issued at 0..m-1, chain nodes at m..2m-1; chain node k
// leads to write k and chain node k+1, and a write leads to the chain node
// of the first write issued after it completed. Kahn's algorithm leaves
// exactly the nodes on or behind a cycle.
func (c *checker) cycle(edges [][2]uint64) [][2]uint64 {
	if len(edges) < 2 {
		return nil
	}
	var ws []uint64
	for _, e := range edges {
		ws = append(ws, e[0], e[1])
	}
	slices.Sort(ws)
	ws = slices.Compact(ws)
	slices.SortFunc(ws, func(a, b uint64) int {
		return cmp.Compare(c.l.Write(a).Issued, c.l.Write(b).Issued)
	})
	m := len(ws)
	pos := make(map[uint64]int, m)
	for i, s := range ws {
		pos[s] = i
	}
	next := make([][]int, 2*m)
	for k := range m {
		next[m+k] = append(next[m+k], k)
		if k+1 < m {
			next[m+k] = append(next[m+k], m+k+1)
		}
		done := c.l.Write(ws[k]).Completed
		if j := sort.Search(m, func(j int) bool { return c.l.Write(ws[j]).Issued > done }); j < m {
			next[k] = append(next[k], m+j)
		}
	}
	for _, e := range edges {
		next[pos[e[0]]] = append(next[pos[e[0]]], pos[e[1]])
	}
	indeg := make([]int, 2*m)
	for _, ns := range next {
		for _, n := range ns {
			indeg[n]++
		}
	}
	var queue []int
	for n, d := range indeg {
		if d == 0 {
			queue = append(queue, n)
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, v := range next[n] {
			if indeg[v]--; indeg[v] == 0 {
				queue = append(queue, v)
			}
		}
	}
	var left [][2]uint64
	for _, e := range edges {
		if indeg[pos[e[0]]] > 0 && indeg[pos[e[1]]] > 0 {
			left = append(left, e)
		}
	}
	return left
}
