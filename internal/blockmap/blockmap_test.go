package blockmap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
)

const testBS = MinBlockSize

// mustHash hashes disk with the given holes, or fails the test.
func mustHash(tb testing.TB, h Hasher, disk []byte, holes []Extent) *Map {
	tb.Helper()
	m, err := h.Hash(context.Background(), bytes.NewReader(disk), int64(len(disk)), holes)
	if err != nil {
		tb.Fatalf("Hash: %v", err)
	}
	if err := m.Validate(); err != nil {
		tb.Fatalf("Hash returned an invalid map: %v", err)
	}
	return m
}

func TestHashBlock(t *testing.T) {
	full := bytes.Repeat([]byte{7}, testBS)
	short := full[:100]
	padded := append(slices.Clone(short), make([]byte, testBS-100)...)
	tests := []struct {
		name string
		b    []byte
		want Hash
	}{
		{"empty", nil, ZeroHash},
		{"zero block", make([]byte, testBS), ZeroHash},
		{"short zero block", make([]byte, 10), ZeroHash},
		{"full block is sha256sum", full, sha256.Sum256(full)},
		{"short block hashed padded", short, sha256.Sum256(padded)},
		{"zero but last byte", append(make([]byte, testBS-1), 1), sha256.Sum256(append(make([]byte, testBS-1), 1))},
	}
	for _, tt := range tests {
		if got := HashBlock(tt.b, testBS); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.name, got, tt.want)
		}
	}
	if !ZeroHash.IsZero() || sha256.Sum256(nil) == ZeroHash {
		t.Errorf("ZeroHash is not distinguishable")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		ok   bool
	}{
		{"default", Params{DefaultBlockSize, DefaultFanout, 1 << 40}, true},
		{"min", Params{MinBlockSize, MinFanout, 0}, true},
		{"max", Params{MaxBlockSize, MaxFanout, 1<<63 - 1}, true},
		{"block too small", Params{2048, 64, 0}, false},
		{"block too big", Params{8 << 20, 64, 0}, false},
		{"block not power of two", Params{65536 + 4096, 64, 0}, false},
		{"fanout 1", Params{testBS, 1, 0}, false},
		{"fanout too big", Params{testBS, 2048, 0}, false},
		{"negative size", Params{testBS, 64, -1}, false},
	}
	for _, tt := range tests {
		err := tt.p.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrParams)) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	if got := (Params{BlockSize: testBS, Size: 1<<63 - 1}).Blocks(); got != (1<<63-1)/testBS+1 {
		t.Errorf("Blocks near MaxInt64 = %d", got)
	}
	bad := &Map{BlockSize: testBS, Size: testBS + 1, Hashes: make([]Hash, 1)}
	if err := bad.Validate(); !errors.Is(err, ErrParams) {
		t.Errorf("map with too few hashes: Validate() = %v, want ErrParams", err)
	}
}

func TestDiff(t *testing.T) {
	h := func(b byte) Hash { return Hash{b} }
	z := ZeroHash
	mk := func(size int64, hs ...Hash) *Map { return &Map{BlockSize: testBS, Size: size, Hashes: hs} }
	const B = testBS
	tests := []struct {
		name string
		a, b *Map
		want []Range
	}{
		{"empty", mk(0), mk(0), nil},
		{"equal", mk(2*B, h(1), h(2)), mk(2*B, h(1), h(2)), nil},
		{"one block", mk(3*B, h(1), h(2), h(3)), mk(3*B, h(1), h(9), h(3)), []Range{{B, B}}},
		{"adjacent merge", mk(4*B, h(1), h(2), h(3), h(4)), mk(4*B, h(9), h(9), h(3), h(9)), []Range{{0, 2 * B}, {3 * B, B}}},
		{"short last block", mk(B+10, h(1), h(2)), mk(B+10, h(1), h(3)), []Range{{B, 10}}},
		{"longer with zero tail", mk(B, h(1)), mk(3*B, h(1), z, z), nil},
		{"longer with data tail", mk(B, h(1)), mk(3*B+5, h(1), z, h(2), h(3)), []Range{{2 * B, B + 5}}},
		{"shorter side first or second", mk(3*B, h(1), h(2), z), mk(B, h(1)), []Range{{B, B}}},
	}
	for _, tt := range tests {
		got, err := Diff(tt.a, tt.b)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("%s: Diff = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	_, err := Diff(mk(0), &Map{BlockSize: 2 * testBS})
	if !errors.Is(err, ErrMismatch) {
		t.Errorf("Diff of different block sizes: err = %v, want ErrMismatch", err)
	}
}

// randomDisk returns size bytes with random blocks, zero blocks and a
// random short tail.
func randomDisk(r *rand.Rand, size int) []byte {
	d := make([]byte, size)
	for off := 0; off < size; off += testBS {
		if r.IntN(4) != 0 { // a quarter of the blocks stay zero
			end := min(off+testBS, size)
			for i := off; i < end; i += 8 {
				d[i] = byte(r.Uint32())
			}
		}
	}
	return d
}

func TestHasherHolesEqualFullRead(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	disk := randomDisk(r, 100*testBS+123)
	var holes []Extent
	for range 20 { // zero random extents, and declare them holes
		off := r.Int64N(int64(len(disk)))
		n := r.Int64N(5 * testBS)
		clear(disk[off:min(off+n, int64(len(disk)))])
		holes = append(holes, Extent{off, n}) // may run past the end
	}
	holes = append(holes, Extent{-5, 10}, Extent{0, 0}, Extent{int64(len(disk)) - 50, 50}) // odd ones
	clear(disk[len(disk)-50:])
	clear(disk[:5])
	full := mustHash(t, Hasher{BlockSize: testBS, Workers: 1}, disk, nil)
	for _, w := range []int{1, 2, 7} {
		got := mustHash(t, Hasher{BlockSize: testBS, Workers: w}, disk, holes)
		if !slices.Equal(got.Hashes, full.Hashes) {
			t.Errorf("workers %d: map with holes differs from full read", w)
		}
	}
	// Holes are really not read: a reader that fails inside them still works.
	all := []Extent{{0, int64(len(disk))}}
	m, err := Hasher{BlockSize: testBS}.Hash(context.Background(), failReader{}, int64(len(disk)), all)
	if err != nil || slices.ContainsFunc(m.Hashes, func(h Hash) bool { return !h.IsZero() }) {
		t.Errorf("all holes: err %v", err)
	}
}

type failReader struct{}

func (failReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("read of a hole") }

func TestHasherErrors(t *testing.T) {
	disk := make([]byte, 10*testBS)
	_, err := Hasher{BlockSize: testBS}.Hash(context.Background(), bytes.NewReader(disk), int64(len(disk))+1, nil)
	if !errors.Is(err, ErrShortRead) {
		t.Errorf("disk shorter than size: err = %v, want ErrShortRead", err)
	}
	_, err = Hasher{BlockSize: testBS}.Hash(context.Background(), failReader{}, 10, nil)
	if err == nil || errors.Is(err, ErrShortRead) {
		t.Errorf("failing reader: err = %v, want its error", err)
	}
	_, err = Hasher{BlockSize: 1000}.Hash(context.Background(), failReader{}, 10, nil)
	if !errors.Is(err, ErrParams) {
		t.Errorf("bad block size: err = %v, want ErrParams", err)
	}
	m := mustHash(t, Hasher{}, nil, nil)
	if m.BlockSize != DefaultBlockSize || len(m.Hashes) != 0 {
		t.Errorf("empty disk: %+v", m)
	}
}

// blockingReader blocks every read until ctx is done, counting reads.
type blockingReader struct {
	ctx     context.Context
	started chan struct{}
}

func (b blockingReader) ReadAt(p []byte, off int64) (int, error) {
	select {
	case b.started <- struct{}{}:
	default:
	}
	<-b.ctx.Done()
	return len(p), nil
}

func TestHasherCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := blockingReader{ctx: ctx, started: make(chan struct{}, 1)}
	done := make(chan error)
	go func() {
		_, err := Hasher{BlockSize: testBS, Workers: 2}.Hash(ctx, r, 1<<30, nil)
		done <- err
	}()
	<-r.started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Hash: err = %v, want context.Canceled", err)
	}
	// Already cancelled: nothing is read.
	if _, err := (Hasher{}).Hash(ctx, failReader{}, 1<<20, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Hash with a done context: err = %v, want context.Canceled", err)
	}
}

var _ io.ReaderAt = blockingReader{}
