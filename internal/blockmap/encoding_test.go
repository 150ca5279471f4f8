package blockmap

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"reflect"
	"testing"
)

func sampleMap() *Map {
	m := &Map{BlockSize: testBS, Size: 3*testBS + 1, Hashes: make([]Hash, 4)}
	m.Hashes[1] = Hash{0xaa, 1}
	m.Hashes[3] = Hash{0xbb, 2}
	return m
}

func sampleAnswer(tb testing.TB) *Nodes {
	tr := mustTree(tb, sampleMap(), 2, 0)
	ans, err := tr.Answer(&Nodes{Params: tr.Params(), Level: 0, Runs: []Run{{0, 2}, {3, 1}}})
	if err != nil {
		tb.Fatal(err)
	}
	return ans
}

func TestEncodingRoundTrip(t *testing.T) {
	m := sampleMap()
	b, err := AppendMap([]byte("prefix"), m)
	if err != nil {
		t.Fatal(err)
	}
	if want := HeaderSize + 4*HashSize + TrailerSize; len(b)-6 != want {
		t.Errorf("encoded map: %d bytes, want %d", len(b)-6, want)
	}
	got, err := DecodeMap(b[6:])
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Errorf("DecodeMap = %+v, %v; want %+v", got, err, m)
	}
	for _, n := range []*Nodes{sampleAnswer(t), {Params: Params{testBS, 2, 3*testBS + 1}, Level: 1, Runs: []Run{{0, 2}}}} {
		b, err := AppendNodes(nil, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeNodes(b)
		if err != nil || !reflect.DeepEqual(got, n) {
			t.Errorf("DecodeNodes = %+v, %v; want %+v", got, err, n)
		}
	}
	if _, err := DecodeNodes(b[6:]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DecodeNodes of a map: err = %v, want ErrCorrupt", err)
	}
	if _, err := AppendMap(nil, &Map{BlockSize: 3}); !errors.Is(err, ErrParams) {
		t.Errorf("AppendMap of an invalid map: err = %v, want ErrParams", err)
	}
}

// TestEncodingCorruption: every flipped bit and every truncation is
// detected.
func TestEncodingCorruption(t *testing.T) {
	mb, _ := AppendMap(nil, sampleMap())
	nb, _ := AppendNodes(nil, sampleAnswer(t))
	for name, dec := range map[string]func([]byte) error{
		"map":   func(b []byte) error { _, err := DecodeMap(b); return err },
		"nodes": func(b []byte) error { _, err := DecodeNodes(b); return err },
	} {
		good := mb
		if name == "nodes" {
			good = nb
		}
		for i := range len(good) * 8 {
			b := bytes.Clone(good)
			b[i/8] ^= 1 << (i % 8)
			if err := dec(b); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: bit %d flipped: err = %v, want ErrCorrupt", name, i, err)
			}
		}
		for n := range len(good) {
			if err := dec(good[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: truncated to %d: err = %v, want ErrCorrupt", name, n, err)
			}
		}
	}
	// A future version with a valid CRC is refused as a version, not as
	// corruption.
	b := bytes.Clone(mb)
	binary.LittleEndian.PutUint16(b[4:], MaxVersion+1)
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	if _, err := DecodeMap(b); !errors.Is(err, ErrBadVersion) {
		t.Errorf("version %d: err = %v, want ErrBadVersion", MaxVersion+1, err)
	}
}

// TestDecodeAllocation: a header that announces more than the input holds
// is refused before anything is allocated for it.
func TestDecodeAllocation(t *testing.T) {
	for _, kind := range []byte{kindMap, kindRequest, kindAnswer} {
		b := appendHeader(nil, header{kind: kind, blockSize: testBS, fanout: 2, size: 1 << 62, count: 1 << 40})
		b = appendTrailer(b, 0)
		allocs := testing.AllocsPerRun(10, func() {
			if kind == kindMap {
				DecodeMap(b)
			} else {
				DecodeNodes(b)
			}
		})
		if allocs > 4 { // the error values only
			t.Errorf("kind %d: %.0f allocations for a lying header", kind, allocs)
		}
	}
}

// FuzzDecodeMap: DecodeMap never panics, and what it accepts is valid and
// encodes back to the same bytes.
func FuzzDecodeMap(f *testing.F) {
	b, _ := AppendMap(nil, sampleMap())
	f.Add(b)
	e, _ := AppendMap(nil, &Map{BlockSize: testBS})
	f.Add(e)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMap(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid map: %v", err)
		}
		if again, _ := AppendMap(nil, m); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// FuzzDecodeNodes: as FuzzDecodeMap, for requests and answers.
func FuzzDecodeNodes(f *testing.F) {
	b, _ := AppendNodes(nil, sampleAnswer(f))
	f.Add(b)
	r, _ := AppendNodes(nil, &Nodes{Params: Params{testBS, 64, 1 << 40}, Level: 2, Runs: []Run{{0, 3}, {7, 1}}})
	f.Add(r)
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := DecodeNodes(b)
		if err != nil {
			return
		}
		if err := n.Validate(); err != nil {
			t.Fatalf("decoded invalid nodes: %v", err)
		}
		if again, _ := AppendNodes(nil, n); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// BenchmarkHash measures Hasher throughput (MB/s) from memory, for data
// blocks and for zero blocks, with one worker and with one per CPU.
func BenchmarkHash(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < size; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	for _, bc := range []struct {
		name    string
		disk    []byte
		workers int
	}{
		{"data/workers=1", data, 1},
		{"data/workers=cpu", data, 0},
		{"zero/workers=1", make([]byte, size), 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			h := Hasher{Workers: bc.workers}
			for b.Loop() {
				if _, err := h.Hash(context.Background(), bytes.NewReader(bc.disk), size, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
