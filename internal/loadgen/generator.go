package loadgen

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Disk is where the generator writes. nbd.Client satisfies it. WriteAt must
// be safe for concurrent use when Options.Concurrency > 1.
type Disk interface {
	WriteAt(p []byte, off int64) (int, error)
	Size() int64
}

// Distribution says where on a disk writes land.
type Distribution string

// Offset distributions.
const (
	// Uniform spreads writes evenly over the disk.
	Uniform Distribution = "uniform"
	// HotSpot sends HotProbability of the writes into one region of
	// HotFraction of the disk (placed by the seed), the rest anywhere, so
	// that writes overwrite each other often.
	HotSpot Distribution = "hotspot"
)

// Options configure a Generator. The zero value of a field means its
// default (see withDefaults).
type Options struct {
	Seed      uint64 // plans the writes; equal seeds and disk sizes plan equal writes
	RunID     uint64 // stamped into every block; default: derived from Seed
	BlockSize int    // power of two ≥ 512; default 4096

	MinBlocks, MaxBlocks int // blocks per write, inclusive; default 1..16

	Distribution   Distribution // default Uniform
	HotFraction    float64      // HotSpot: share of the disk that is hot; default 0.05
	HotProbability float64      // HotSpot: share of writes that go there; default 0.9

	// Concurrency is the number of writes in flight. 1 (the default) issues
	// writes strictly one after another, so that seq order is completion
	// order and the log is Sequential.
	Concurrency int
}

func (o Options) withDefaults() Options {
	if o.RunID == 0 {
		o.RunID = o.Seed*0x9e3779b97f4a7c15 + 0x5bd1e995
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.MinBlocks == 0 {
		o.MinBlocks = 1
	}
	if o.MaxBlocks == 0 {
		o.MaxBlocks = max(16, o.MinBlocks)
	}
	if o.Distribution == "" {
		o.Distribution = Uniform
	}
	if o.HotFraction == 0 {
		o.HotFraction = 0.05
	}
	if o.HotProbability == 0 {
		o.HotProbability = 0.9
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	return o
}

// Validate reports the first setting out of range, with the allowed values.
func (o Options) Validate() error {
	switch {
	case o.BlockSize < MinBlockSize || o.BlockSize&(o.BlockSize-1) != 0:
		return fmt.Errorf("block size %d: allowed: a power of two ≥ %d", o.BlockSize, MinBlockSize)
	case o.MinBlocks < 1 || o.MaxBlocks < o.MinBlocks:
		return fmt.Errorf("blocks per write %d..%d: allowed: 1 ≤ min ≤ max", o.MinBlocks, o.MaxBlocks)
	case o.Distribution != Uniform && o.Distribution != HotSpot:
		return fmt.Errorf("distribution %q: allowed: %q, %q", o.Distribution, Uniform, HotSpot)
	case o.HotFraction <= 0 || o.HotFraction > 1:
		return fmt.Errorf("hot fraction %v: allowed: 0 < f ≤ 1", o.HotFraction)
	case o.HotProbability < 0 || o.HotProbability > 1:
		return fmt.Errorf("hot probability %v: allowed: 0 ≤ p ≤ 1", o.HotProbability)
	case o.Concurrency < 1:
		return fmt.Errorf("concurrency %d: allowed: ≥ 1", o.Concurrency)
	}
	return nil
}

// Generator issues writes of self-describing blocks to a machine's disks
// and logs them. Run may be called again to continue the same run; calls
// do not overlap (a second call waits for the first).
type Generator struct {
	disks []Disk
	o     Options

	mu      sync.Mutex // held by Run; guards everything below
	rng     *rand.Rand
	hot     []int64 // per disk: first block of the hot region
	pending *Write  // planned but not handed out when a Run was cancelled
	log     Log
	clock   atomic.Uint64
}

// NewGenerator returns a generator writing to disks. Every disk must hold
// at least one block.
func NewGenerator(disks []Disk, o Options) (*Generator, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	if len(disks) == 0 {
		return nil, fmt.Errorf("load generator: no disks")
	}
	g := &Generator{
		disks: disks,
		o:     o,
		rng:   rand.New(rand.NewPCG(o.Seed, o.Seed^0xda3e39cb94b95bdb)),
		log:   Log{RunID: o.RunID, BlockSize: o.BlockSize},
	}
	bs := int64(o.BlockSize)
	for i, d := range disks {
		size := d.Size() / bs * bs
		if size == 0 {
			return nil, fmt.Errorf("load generator: disk %d holds %d bytes, less than one %d-byte block", i, d.Size(), bs)
		}
		g.log.DiskSizes = append(g.log.DiskSizes, size)
		g.hot = append(g.hot, g.rng.Int64N(size/bs))
	}
	return g, nil
}

// Log returns a copy of the log of the writes issued so far.
func (g *Generator) Log() *Log {
	g.mu.Lock()
	defer g.mu.Unlock()
	l := g.log
	l.DiskSizes = append([]int64(nil), l.DiskSizes...)
	l.Writes = append([]Write(nil), l.Writes...)
	return &l
}

// plan draws the next write's disk, offset and size.
func (g *Generator) plan() Write {
	d := g.rng.IntN(len(g.disks))
	nblocks := g.log.DiskSizes[d] / int64(g.o.BlockSize)
	n := int64(g.o.MinBlocks + g.rng.IntN(g.o.MaxBlocks-g.o.MinBlocks+1))
	n = min(n, nblocks)
	lo, span := int64(0), nblocks
	if g.o.Distribution == HotSpot && g.rng.Float64() < g.o.HotProbability {
		span = max(int64(float64(nblocks)*g.o.HotFraction), n)
		lo = min(g.hot[d], nblocks-span)
	}
	b := lo + g.rng.Int64N(span-n+1)
	return Write{Disk: d, Offset: b * int64(g.o.BlockSize), Blocks: int(n)}
}

// Run issues n more writes and returns when all of them have completed. On
// a write error it stops issuing, waits for the writes in flight and returns
// the first error; the failed write is in the log with Failed set. With
// Concurrency 1 it is the last write of the log; with more, writes already
// handed to other workers still run. On cancellation it stops issuing and
// returns ctx.Err(); every write in the log was issued, and the next Run
// continues the same plan.
func (g *Generator) Run(ctx context.Context, n int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	work := make(chan *Write) // unbuffered: a write received is a write issued
	var (
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range g.o.Concurrency {
		wg.Go(func() {
			buf := make([]byte, g.o.MaxBlocks*g.o.BlockSize)
			for w := range work {
				if err := g.issue(w, buf); err != nil {
					// This worker takes no more work, so that with
					// Concurrency 1 no write follows a failed one.
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}

	// Reserve room so that the pointers handed to workers stay valid.
	g.log.Writes = append(make([]Write, 0, len(g.log.Writes)+n), g.log.Writes...)
	for range n {
		w := g.nextPlan()
		w.Seq = uint64(len(g.log.Writes) + 1)
		g.log.Writes = append(g.log.Writes, w)
		if ctx.Err() == nil {
			select {
			case work <- &g.log.Writes[len(g.log.Writes)-1]:
				continue
			case <-ctx.Done():
			}
		}
		// Not handed out: keep the plan for the next Run.
		g.log.Writes = g.log.Writes[:len(g.log.Writes)-1]
		w.Seq = 0
		g.pending = &w
		break
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func (g *Generator) nextPlan() Write {
	if p := g.pending; p != nil {
		g.pending = nil
		return *p
	}
	return g.plan()
}

// issue writes w's blocks and records its ticks and outcome in w, a log
// entry no other goroutine touches meanwhile.
func (g *Generator) issue(w *Write, buf []byte) error {
	bs := g.o.BlockSize
	p := buf[:w.Blocks*bs]
	encodeWrite(p, g.o.RunID, bs, *w)
	w.Issued = g.clock.Add(1)
	n, err := g.disks[w.Disk].WriteAt(p, w.Offset)
	w.Completed = g.clock.Add(1)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.Failed = true
		return fmt.Errorf("load generator: write %d (disk %d, %d blocks at %d): %w", w.Seq, w.Disk, w.Blocks, w.Offset, err)
	}
	return nil
}
