package replica

import (
	"cmp"
	"container/heap"
	"fmt"
	"io"
	"slices"
	"sort"
)

// change is one change record between the base and a point, as the index
// needs it: where it lands and where its bytes are.
type change struct {
	off, end int64 // disk bytes [off, end)
	file     int   // index into the view's files; -1: reads as zeros
	foff     int64 // file offset of the byte at off
}

// extent is a run of disk bytes [off, end) that the index answers: zeros
// (file -1) or bytes of a stored segment from foff on.
type extent struct {
	off, end int64
	file     int
	foff     int64
}

// buildIndex resolves changes, given in log order, to the disjoint extents
// the last writer of each byte defines, sorted by offset. It sweeps the
// boundaries of the changes in order with a heap of the changes covering
// the sweep position, latest on top: O(n log n) for n changes, whatever
// the disk size.
func buildIndex(chs []change) []extent {
	if len(chs) == 0 {
		return nil
	}
	bounds := make([]int64, 0, 2*len(chs))
	for _, c := range chs {
		bounds = append(bounds, c.off, c.end)
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	byOff := make([]int, len(chs))
	for i := range byOff {
		byOff[i] = i
	}
	slices.SortStableFunc(byOff, func(a, b int) int { return cmp.Compare(chs[a].off, chs[b].off) })
	var (
		h    = &latest{}
		next int
		out  []extent
	)
	for k := 0; k+1 < len(bounds); k++ {
		x := bounds[k]
		for next < len(byOff) && chs[byOff[next]].off == x {
			heap.Push(h, byOff[next])
			next++
		}
		for h.Len() > 0 && chs[(*h)[0]].end <= x {
			heap.Pop(h)
		}
		if h.Len() == 0 {
			continue
		}
		c := chs[(*h)[0]]
		e := extent{off: x, end: bounds[k+1], file: c.file}
		if c.file >= 0 {
			e.foff = c.foff + (x - c.off)
		}
		out = appendExtent(out, e)
	}
	return out
}

// appendExtent appends e, merging it into the last extent when it
// continues it (adjacent, same source, contiguous bytes).
func appendExtent(out []extent, e extent) []extent {
	if n := len(out); n > 0 {
		l := &out[n-1]
		if l.end == e.off && l.file == e.file && (e.file < 0 || l.foff+(l.end-l.off) == e.foff) {
			l.end = e.end
			return out
		}
	}
	return append(out, e)
}

// latest is a max-heap of change indexes: the latest change on top.
type latest []int

func (h latest) Len() int           { return len(h) }
func (h latest) Less(i, j int) bool { return h[i] > h[j] }
func (h latest) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *latest) Push(x any)        { *h = append(*h, x.(int)) }
func (h *latest) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// indexedDisk reads one disk at a point: the index, else the base image.
type indexedDisk struct {
	size  int64
	index []extent
	base  io.ReaderAt
	files []io.ReaderAt
}

// ReadAt implements io.ReaderAt over the disk's size.
func (d *indexedDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errNegativeOffset
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > d.size-off {
		p = p[:d.size-off]
	}
	i := sort.Search(len(d.index), func(i int) bool { return d.index[i].end > off })
	for n := 0; n < len(p); {
		pos := off + int64(n)
		lim := int64(len(p) - n)
		var err error
		switch {
		case i < len(d.index) && d.index[i].off <= pos:
			e := d.index[i]
			m := min(lim, e.end-pos)
			err = d.readExtent(p[n:n+int(m)], e, pos)
			n += int(m)
			i++
		default:
			m := lim
			if i < len(d.index) {
				m = min(m, d.index[i].off-pos)
			}
			err = readFull(d.base, p[n:n+int(m)], pos)
			n += int(m)
		}
		if err != nil {
			return n, err
		}
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

func (d *indexedDisk) readExtent(p []byte, e extent, pos int64) error {
	if e.file < 0 {
		clear(p)
		return nil
	}
	n, err := d.files[e.file].ReadAt(p, e.foff+(pos-e.off))
	if err == io.EOF && n < len(p) {
		return fmt.Errorf("%w: stored segment ends inside a record", ErrDamaged)
	} else if n == len(p) {
		return nil
	}
	return err
}

// readFull fills p from r at off; bytes past r's end read as zeros (a base
// image is never shorter than its disk, but a read must not fail on it).
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		return nil
	}
	return err
}
