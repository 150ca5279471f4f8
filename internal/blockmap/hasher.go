package blockmap

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Extent is a byte range of a disk, [Off, Off+Len).
type Extent struct {
	Off int64
	Len int64
}

// Hasher hashes disks into Maps. The zero value hashes 64 KiB blocks with one
// goroutine per CPU.
type Hasher struct {
	// BlockSize is the block size of the maps; 0 means DefaultBlockSize.
	BlockSize int
	// Workers is the number of goroutines that read and hash; 0 means
	// runtime.GOMAXPROCS(0).
	Workers int
}

// readChunk is how many bytes a worker claims and reads at a time: big
// enough that small blocks do not cost one ReadAt each.
const readChunk = 1 << 20

// Hash reads the disk r of size bytes and returns its Map. Blocks wholly
// inside holes (extents the caller knows read as zeros: unallocated or
// trimmed; they may overlap, be unsorted and extend past size) are not read
// and get ZeroHash; the result is the same as reading them, if they do read as
// zeros. r is read concurrently by Workers goroutines (io.ReaderAt allows
// it), each holding one buffer of max(1 MiB, BlockSize).
//
// Hash returns an error wrapping ErrShortRead if r ends before size, the
// first error r returned, or ctx's error once ctx is done: on any error no
// Map is returned and every goroutine has stopped when Hash returns.
func (h Hasher) Hash(ctx context.Context, r io.ReaderAt, size int64, holes []Extent) (*Map, error) {
	bs := h.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if !validBlockSize(bs) {
		return nil, fmt.Errorf("hash disk: %w: block size %d is not a power of two in [%d, %d]", ErrParams, bs, MinBlockSize, MaxBlockSize)
	}
	if size < 0 {
		return nil, fmt.Errorf("hash disk: %w: negative size %d", ErrParams, size)
	}
	workers := h.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	m := &Map{BlockSize: bs, Size: size, Hashes: make([]Hash, blocks(size, bs))}
	j := &hashJob{
		r:     r,
		m:     m,
		holes: holeBlocks(holes, size, bs),
		batch: int64(max(1, readChunk/bs)),
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range min(int64(workers), max(1, (int64(len(m.Hashes))+j.batch-1)/j.batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := j.work(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, fmt.Errorf("hash disk: %w", err)
	}
	return m, nil
}

type hashJob struct {
	r     io.ReaderAt
	m     *Map
	holes []blockRun // sorted, disjoint runs of blocks wholly inside holes
	batch int64      // blocks per claim
	next  atomic.Int64
}

// blockRun is the blocks [first, end).
type blockRun struct{ first, end int64 }

// holeBlocks returns the sorted, disjoint runs of blocks that lie wholly
// inside holes. The short last block counts as covered when the holes
// reach the end of the disk, since bytes past the end read as zero.
func holeBlocks(holes []Extent, size int64, bs int) []blockRun {
	hs := make([]Extent, 0, len(holes))
	for _, e := range holes {
		off, end := max(e.Off, 0), min(e.Off+e.Len, size)
		if e.Len > 0 && off < end {
			hs = append(hs, Extent{off, end - off})
		}
	}
	slices.SortFunc(hs, func(a, b Extent) int { return cmp.Compare(a.Off, b.Off) })
	var merged []Extent
	for _, e := range hs {
		if n := len(merged); n > 0 && e.Off <= merged[n-1].Off+merged[n-1].Len {
			merged[n-1].Len = max(merged[n-1].Len, e.Off+e.Len-merged[n-1].Off)
			continue
		}
		merged = append(merged, e)
	}
	b := int64(bs)
	var runs []blockRun
	for _, e := range merged {
		first := (e.Off + b - 1) / b
		end := (e.Off + e.Len) / b
		if e.Off+e.Len == size {
			end = blocks(size, bs)
		}
		if first < end {
			runs = append(runs, blockRun{first, end})
		}
	}
	return runs
}

// isHole reports whether block i lies wholly inside holes.
func (j *hashJob) isHole(i int64) bool {
	k := sort.Search(len(j.holes), func(k int) bool { return j.holes[k].end > i })
	return k < len(j.holes) && j.holes[k].first <= i
}

// work claims batches of blocks until none is left or ctx is done.
func (j *hashJob) work(ctx context.Context) error {
	bs := int64(j.m.BlockSize)
	n := int64(len(j.m.Hashes))
	buf := make([]byte, j.batch*bs)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		first := j.next.Add(j.batch) - j.batch
		if first >= n {
			return nil
		}
		end := min(first+j.batch, n)
		// Read each run of non-hole blocks with one ReadAt.
		for i := first; i < end; {
			if j.isHole(i) {
				j.m.Hashes[i] = ZeroHash
				i++
				continue
			}
			k := i + 1
			for k < end && !j.isHole(k) {
				k++
			}
			if err := j.read(buf[:(k-i)*bs], i, k); err != nil {
				return err
			}
			i = k
		}
	}
}

// read reads blocks [first, end) into buf and hashes them.
func (j *hashJob) read(buf []byte, first, end int64) error {
	bs := int64(j.m.BlockSize)
	off := first * bs
	want := min(int64(len(buf)), j.m.Size-off)
	n, err := j.r.ReadAt(buf[:want], off)
	if int64(n) < want {
		if err == nil || errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: read %d bytes at %d, want %d", ErrShortRead, n, off, want)
		}
		return fmt.Errorf("read at %d: %w", off, err)
	}
	for i := first; i < end; i++ {
		o := (i - first) * bs
		j.m.Hashes[i] = HashBlock(buf[o:min(o+bs, want)], j.m.BlockSize)
	}
	return nil
}
