package replica

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// TestIndex compares the extent index with painting every change onto a
// byte slice in order.
func TestIndex(t *testing.T) {
	tests := []struct {
		name    string
		size    int64
		changes int
		maxLen  int64
	}{
		{"empty", 4096, 0, 1},
		{"one", 4096, 1, 4096},
		{"sparse", 1 << 20, 20, 4096},
		{"dense overlapping", 8192, 500, 700},
		{"whole-disk writes", 1000, 50, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(uint64(tt.changes), 5))
			base := randBytes(rnd, tt.size)
			want := bytes.Clone(base)
			var files []io.ReaderAt
			var chs []change
			for i := range tt.changes {
				n := 1 + rnd.Int64N(tt.maxLen)
				off := rnd.Int64N(tt.size - n + 1)
				c := change{off: off, end: off + n, file: -1}
				if i%4 != 0 {
					data := randBytes(rnd, n)
					pad := rnd.Int64N(100)
					c.file, c.foff = len(files), pad
					files = append(files, bytes.NewReader(append(make([]byte, pad), data...)))
					copy(want[off:], data)
				} else {
					clear(want[off : off+n])
				}
				chs = append(chs, c)
			}
			idx := buildIndex(chs)
			mustBeSorted(t, idx)
			d := &indexedDisk{size: tt.size, index: idx, base: bytes.NewReader(base), files: files}
			mustEqualDisks(t, "whole disk", [][]byte{readDisk(t, d, tt.size)}, [][]byte{want})
			for range 200 {
				off := rnd.Int64N(tt.size + 10)
				p := make([]byte, rnd.Int64N(3000))
				n, err := d.ReadAt(p, off)
				wantN := max(0, min(int64(len(p)), tt.size-off))
				if int64(n) != wantN || (int64(n) < int64(len(p))) != (err == io.EOF) || err != nil && err != io.EOF {
					t.Fatalf("read %d at %d: %d, %v; want %d bytes", len(p), off, n, err, wantN)
				}
				if n > 0 && !bytes.Equal(p[:n], want[off:off+int64(n)]) {
					t.Fatalf("read %d at %d: bytes differ", len(p), off)
				}
			}
		})
	}
}

func mustBeSorted(t *testing.T, idx []extent) {
	t.Helper()
	for i, e := range idx {
		if e.off >= e.end || i > 0 && idx[i-1].end > e.off {
			t.Fatalf("extent %d %+v out of order: %s", i, e, fmt.Sprint(idx))
		}
	}
}

func randBytes(rnd *rand.Rand, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}
