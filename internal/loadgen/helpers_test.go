package loadgen

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// memDisk is a []byte-backed Disk and io.ReaderAt. delay, when set, is
// slept before each write lands, so that concurrent writes overlap in time.
type memDisk struct {
	mu    sync.Mutex
	b     []byte
	delay time.Duration
}

func newMemDisk(size int) *memDisk { return &memDisk{b: make([]byte, size)} }

func (m *memDisk) Size() int64 { return int64(len(m.b)) }

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if m.delay > 0 {
		time.Sleep(m.delay)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.b[off:], p), nil
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}

func (m *memDisk) clone() *memDisk {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &memDisk{b: append([]byte(nil), m.b...)}
}

// mustGenerate runs n writes of a new generator over disks of the given
// sizes and returns the log and the disks.
func mustGenerate(tb testing.TB, o Options, n int, sizes ...int) (*Log, []*memDisk) {
	tb.Helper()
	disks := make([]*memDisk, len(sizes))
	ds := make([]Disk, len(sizes))
	for i, s := range sizes {
		disks[i] = newMemDisk(s)
		ds[i] = disks[i]
	}
	g, err := NewGenerator(ds, o)
	if err != nil {
		tb.Fatal(err)
	}
	if err := g.Run(context.Background(), n); err != nil {
		tb.Fatal(err)
	}
	return g.Log(), disks
}

// replay applies the writes seqs of l, in that order, to zeroed disks.
func replay(l *Log, seqs ...uint64) []*memDisk {
	disks := make([]*memDisk, len(l.DiskSizes))
	for i, s := range l.DiskSizes {
		disks[i] = newMemDisk(int(s))
	}
	for _, s := range seqs {
		w := l.Write(s)
		disks[w.Disk].WriteAt(l.Payload(s), w.Offset)
	}
	return disks
}

// applyBlock writes only block i of write seq.
func applyBlock(l *Log, disks []*memDisk, seq uint64, i int) {
	w := l.Write(seq)
	bs := l.BlockSize
	disks[w.Disk].WriteAt(l.Payload(seq)[i*bs:(i+1)*bs], w.Offset+int64(i*bs))
}

func prefix(n uint64) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = uint64(i + 1)
	}
	return s
}

func images(disks []*memDisk, initial Initial) Images {
	im := Images{Initial: initial}
	for _, d := range disks {
		im.Disks = append(im.Disks, d)
	}
	return im
}

// mustConsistent checks disks and fails tb unless they are consistent.
func mustConsistent(tb testing.TB, l *Log, disks []*memDisk) Result {
	tb.Helper()
	r, err := Check(l, images(disks, InitialZeros))
	if err != nil {
		tb.Fatalf("Check: %v", err)
	}
	return r
}

// mustCheck checks disks and fails tb unless they are consistent with cut.
func mustCheck(tb testing.TB, l *Log, disks []*memDisk, cut uint64) Result {
	tb.Helper()
	r := mustConsistent(tb, l, disks)
	if r.Cut != cut {
		tb.Fatalf("Check: cut %d, want %d (result %+v)", r.Cut, cut, r)
	}
	return r
}

// mustInconsistent fails tb unless err is an *InconsistencyError wanting
// want, finding got, with a reason containing reason.
func mustInconsistent(tb testing.TB, err error, want, got uint64, reason string) *InconsistencyError {
	tb.Helper()
	var ie *InconsistencyError
	if !errors.As(err, &ie) {
		tb.Fatalf("got error %v, want an *InconsistencyError", err)
	}
	if ie.Want != want || ie.Got != got || !strings.Contains(ie.Reason, reason) {
		tb.Fatalf("got %v\nwant: want %d, got %d, reason containing %q", ie, want, got, reason)
	}
	return ie
}

// visibleAt returns, per seq, whether the write is the last writer of some
// block in the state after writes 1..n.
func visibleAt(l *Log, n uint64) []bool {
	x, _ := newIndex(l)
	vis := make([]bool, len(l.Writes)+1)
	for d, size := range l.DiskSizes {
		for b := int64(0); b < size/int64(l.BlockSize); b++ {
			var last uint64
			for _, s := range x.writes(d, b) {
				if s <= n {
					last = s
				}
			}
			vis[last] = true
		}
	}
	return vis
}
