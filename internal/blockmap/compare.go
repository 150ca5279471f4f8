package blockmap

import (
	"fmt"
	"slices"
)

// Run is the nodes [First, First+Count) of one tree level.
type Run struct {
	First int64
	Count int64
}

// Nodes names nodes of one level of a tree with the given Params. With
// Hashes empty it is a request (Compare.Next); with one hash per named node,
// in order, it is the answer (Tree.Answer). It is also the message that
// AppendNodes and DecodeNodes exchange.
type Nodes struct {
	Params Params
	Level  int
	Runs   []Run  // sorted and disjoint, each Count ≥ 1
	Hashes []Hash // empty in a request; Count() hashes in an answer
}

// Count returns the number of nodes the runs name.
func (n *Nodes) Count() int64 {
	var c int64
	for _, r := range n.Runs {
		c += r.Count
	}
	return c
}

// levelWidths returns the number of nodes of every level of a tree with
// parameters p, level 0 first (the same shape NewTree builds).
func levelWidths(p Params) []int64 {
	w := []int64{p.Blocks()}
	for w[len(w)-1] > 1 {
		w = append(w, (w[len(w)-1]+int64(p.Fanout)-1)/int64(p.Fanout))
	}
	return w
}

// Validate checks that the parameters are valid, the level exists, there is
// at least one run, the runs are sorted, disjoint, non-empty and inside the
// level, and Hashes is empty or has one hash per node.
func (n *Nodes) Validate() error {
	if err := n.Params.Validate(); err != nil {
		return err
	}
	w := levelWidths(n.Params)
	if n.Level < 0 || n.Level >= len(w) {
		return fmt.Errorf("%w: level %d of a %d-level tree", ErrParams, n.Level, len(w))
	}
	if len(n.Runs) == 0 {
		return fmt.Errorf("%w: no nodes named", ErrParams)
	}
	var end int64
	for _, r := range n.Runs {
		if r.Count < 1 || r.First < end || r.First > w[n.Level]-r.Count {
			return fmt.Errorf("%w: run [%d, +%d) after %d, level %d has %d nodes", ErrParams, r.First, r.Count, end, n.Level, w[n.Level])
		}
		end = r.First + r.Count
	}
	if len(n.Hashes) != 0 && int64(len(n.Hashes)) != n.Count() {
		return fmt.Errorf("%w: %d hashes for %d nodes", ErrParams, len(n.Hashes), n.Count())
	}
	return nil
}

// Answer returns the tree's hashes of the nodes that req names: the
// remote side of a comparison. req must be a valid request for a tree with
// the same Params (else an error wrapping ErrMismatch or ErrParams).
func (t *Tree) Answer(req *Nodes) (*Nodes, error) {
	if req.Params != t.p {
		return nil, fmt.Errorf("answer: %w: request for %+v, tree has %+v", ErrMismatch, req.Params, t.p)
	}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	if len(req.Hashes) != 0 {
		return nil, fmt.Errorf("answer: %w: request carries hashes", ErrParams)
	}
	ans := &Nodes{Params: t.p, Level: req.Level, Runs: slices.Clone(req.Runs), Hashes: make([]Hash, 0, req.Count())}
	for _, r := range req.Runs {
		for i := r.First; i < r.First+r.Count; i++ {
			ans.Hashes = append(ans.Hashes, t.Node(req.Level, i))
		}
	}
	return ans, nil
}

// Compare is the asking side of a level-by-level comparison of a local tree
// with a remote tree that has the same Params. It starts at the root and,
// level by level, asks for the remote's hashes of the children of every node
// that differed. It is a state machine without I/O: the caller carries each
// request to the remote (Tree.Answer there) and the answer back.
// A Compare is not safe for concurrent use.
type Compare struct {
	t        *Tree
	level    int   // level of the nodes in cur
	cur      []Run // nodes of level not yet asked about, in order
	next     []Run // nodes of level−1 to ask about once cur is done
	out      *Nodes
	ranges   rangeBuilder
	received int64
}

// NewCompare starts a comparison of t with a remote tree of the same Params.
func NewCompare(t *Tree) *Compare {
	c := &Compare{t: t, level: t.Levels() - 1, ranges: rangeBuilder{blockSize: int64(t.p.BlockSize), size: t.p.Size}}
	if t.Width(0) > 0 {
		c.cur = []Run{{First: 0, Count: 1}}
	}
	return c
}

// Next returns the next request, naming at most max nodes (no limit if max
// ≤ 0), and true; or nil and false when the comparison is done. Until the
// answer is received, Next returns the same request again, so a request lost
// with a connection can be sent again.
func (c *Compare) Next(max int) (*Nodes, bool) {
	if c.out != nil {
		return c.out, true
	}
	if len(c.cur) == 0 && len(c.next) > 0 {
		c.level--
		c.cur, c.next = c.next, nil
	}
	if len(c.cur) == 0 {
		return nil, false
	}
	req := &Nodes{Params: c.t.p, Level: c.level}
	left := int64(max)
	for len(c.cur) > 0 && (max <= 0 || left > 0) {
		r := c.cur[0]
		if max > 0 && r.Count > left {
			req.Runs = append(req.Runs, Run{r.First, left})
			c.cur[0] = Run{r.First + left, r.Count - left}
			break
		}
		req.Runs = append(req.Runs, r)
		c.cur = c.cur[1:]
		left -= r.Count
	}
	c.out = req
	return req, true
}

// Receive takes the remote's answer to the outstanding request. It returns
// an error wrapping ErrMismatch, and keeps the request outstanding, if ans is
// not the answer to it (other Params, level or nodes, or the wrong number of
// hashes).
func (c *Compare) Receive(ans *Nodes) error {
	req := c.out
	switch {
	case req == nil:
		return fmt.Errorf("compare: %w: no request outstanding", ErrMismatch)
	case ans.Params != req.Params || ans.Level != req.Level || !slices.Equal(ans.Runs, req.Runs):
		return fmt.Errorf("compare: %w: answer for level %d %v, asked level %d %v", ErrMismatch, ans.Level, ans.Runs, req.Level, req.Runs)
	case int64(len(ans.Hashes)) != req.Count():
		return fmt.Errorf("compare: %w: %d hashes for %d nodes", ErrMismatch, len(ans.Hashes), req.Count())
	}
	k := 0
	for _, r := range req.Runs {
		for i := r.First; i < r.First+r.Count; i++ {
			if ans.Hashes[k] != c.t.Node(req.Level, i) {
				c.differ(req.Level, i)
			}
			k++
		}
	}
	c.received += int64(len(ans.Hashes))
	c.out = nil
	return nil
}

// differ records that node i of level k differs: a block range at level 0,
// else its children to ask about next.
func (c *Compare) differ(k int, i int64) {
	if k == 0 {
		c.ranges.add(i)
		return
	}
	first, end := c.t.Children(k, i)
	if n := len(c.next); n > 0 && c.next[n-1].First+c.next[n-1].Count == first {
		c.next[n-1].Count += end - first
		return
	}
	c.next = append(c.next, Run{First: first, Count: end - first})
}

// Done reports whether the comparison is complete.
func (c *Compare) Done() bool { return c.out == nil && len(c.cur) == 0 && len(c.next) == 0 }

// Ranges returns the differing block ranges found so far, in order, adjacent
// blocks merged; once Done, they equal Diff of the two sides' maps. The
// caller must not modify the slice.
func (c *Compare) Ranges() []Range { return c.ranges.out }

// Received returns the number of remote node hashes received so far: the
// cost of the comparison.
func (c *Compare) Received() int64 { return c.received }

// RootRequest is the request for the root of a tree with parameters p: a
// client's probe of the remote tree before it hashes anything. A root of
// ZeroHash means the remote disk reads as zeros, so every local block that
// is not zero differs.
func RootRequest(p Params) (*Nodes, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	w := levelWidths(p)
	return &Nodes{Params: p, Level: len(w) - 1, Runs: []Run{{First: 0, Count: 1}}}, nil
}
