package journal

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

func testHeader(first uint64, prev uint64) Header {
	return Header{Version: Version, MachineID: [16]byte{1, 2, 3}, Epoch: 7, FirstSeq: first, PrevChain: prev, Created: 1700000000e9}
}

// mustSegment encodes recs into a sealed segment starting after prev.
func mustSegment(tb testing.TB, prev Pos, recs []Record) ([]byte, Trailer) {
	tb.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testHeader(prev.Seq+1, prev.Chain))
	if err != nil {
		tb.Fatal(err)
	}
	for i := range recs {
		if err := w.Append(&recs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	t, err := w.Seal(1700000001e9)
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes(), t
}

func sampleRecords(r *rand.Rand, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		switch r.IntN(4) {
		case 0, 1:
			data := make([]byte, 1+r.IntN(9000))
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			recs[i] = Record{Kind: KindWrite, Disk: uint16(r.IntN(3)), Offset: r.Uint64N(1 << 30), Length: uint64(len(data)), Data: data, Time: int64(i)}
		case 2:
			recs[i] = Record{Kind: KindZero, Flags: FlagNoHole, Disk: 1, Offset: 4096, Length: 8192}
		case 3:
			recs[i] = Record{Kind: KindBookmark, Flags: FlagAppConsistent, Data: []byte("app")}
		}
	}
	return recs
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	recs := sampleRecords(r, 200)
	seg, tr := mustSegment(t, Pos{}, recs)

	rd, err := NewReader(bytes.NewReader(seg))
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	for i := 0; ; i++ {
		err := rd.Next(&rec)
		if err == io.EOF {
			if i != len(recs) {
				t.Fatalf("got %d records, want %d", i, len(recs))
			}
			break
		}
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := recs[i]
		if rec.Seq != uint64(i+1) || rec.Kind != want.Kind || rec.Disk != want.Disk || rec.Offset != want.Offset ||
			rec.Length != want.Length || rec.Flags != want.Flags || !bytes.Equal(rec.Data, want.Data) {
			t.Fatalf("record %d: got %+v, want %+v", i, rec, want)
		}
	}
	got, ok := rd.Trailer()
	if !ok || got != tr {
		t.Fatalf("trailer: got %+v %v, want %+v", got, ok, tr)
	}
	if rd.Pos() != tr.Pos() {
		t.Fatalf("pos %s, trailer %s", rd.Pos(), tr.Pos())
	}

	// A second segment continues from the first.
	seg2, tr2 := mustSegment(t, tr.Pos(), sampleRecords(r, 10))
	h, err := ParseHeader(seg2)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Continues(tr.Pos()); err != nil {
		t.Fatalf("continuation rejected: %v", err)
	}
	if tr2.LastSeq != 210 {
		t.Fatalf("last seq %d, want 210", tr2.LastSeq)
	}
}

func TestContinuesTyped(t *testing.T) {
	tests := []struct {
		name      string
		have      Pos
		seg       Header
		gap, fork bool
	}{
		{"gap", Pos{Seq: 10, Chain: 5}, testHeader(12, 9), true, false},
		{"fork", Pos{Seq: 10, Chain: 5}, testHeader(11, 6), false, true},
		{"overlap", Pos{Seq: 10, Chain: 5}, testHeader(5, 6), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.seg.Continues(tt.have)
			var pm *PosMismatchError
			if !errors.As(err, &pm) {
				t.Fatalf("got %v, want *PosMismatchError", err)
			}
			if pm.Gap() != tt.gap || pm.Fork() != tt.fork {
				t.Fatalf("gap=%v fork=%v, want %v %v (%v)", pm.Gap(), pm.Fork(), tt.gap, tt.fork, err)
			}
			if pm.Want != tt.have || pm.Got != tt.seg.Prev() {
				t.Fatalf("evidence %+v", pm)
			}
		})
	}
}

func TestCorruptionDetected(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	seg, _ := mustSegment(t, Pos{}, sampleRecords(r, 20))
	// Flip one bit at a time across the whole segment: every flip must be
	// reported, never decoded as a valid segment.
	for off := 0; off < len(seg); off += 1 + r.IntN(37) {
		bad := bytes.Clone(seg)
		bad[off] ^= 1 << r.IntN(8)
		if err := readAll(bad); err == nil {
			t.Fatalf("bit flip at %d went unnoticed", off)
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBadVersion) && !errors.Is(err, ErrNotSealed) {
			t.Fatalf("bit flip at %d: error %v does not wrap ErrCorrupt", off, err)
		}
	}
}

func TestTruncationIsNotSealed(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	recs := sampleRecords(r, 5)
	seg, _ := mustSegment(t, Pos{}, recs)
	unsealed := seg[:len(seg)-TrailerSize]
	rd, err := NewReader(bytes.NewReader(unsealed))
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	n := 0
	for err = rd.Next(&rec); err == nil; err = rd.Next(&rec) {
		n++
	}
	if !errors.Is(err, ErrNotSealed) || n != 5 || rd.Offset() != int64(len(unsealed)) {
		t.Fatalf("got err=%v n=%d offset=%d", err, n, rd.Offset())
	}
	// A sealed segment whose preallocated tail was not cut yet.
	padded := append(bytes.Clone(seg), make([]byte, 100<<10)...)
	if err := readAll(padded); err != nil {
		t.Fatalf("zeros after the trailer: %v", err)
	}
	padded[len(padded)-1] = 1
	if err := readAll(padded); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("non-zero byte after the trailer: %v", err)
	}
	// An active segment in a preallocated file: zeros after the last record.
	prealloc := append(bytes.Clone(unsealed), make([]byte, 4096)...)
	rd, _ = NewReader(bytes.NewReader(prealloc))
	n = 0
	for err = rd.Next(&rec); err == nil; err = rd.Next(&rec) {
		n++
	}
	if !errors.Is(err, ErrNotSealed) || n != 5 || rd.Offset() != int64(len(unsealed)) {
		t.Fatalf("preallocated: got err=%v n=%d offset=%d", err, n, rd.Offset())
	}
	// Cut in the middle of the last record: 4 good records, then truncated,
	// and Offset points at the end of the fourth.
	cut := unsealed[:len(unsealed)-3]
	rd, _ = NewReader(bytes.NewReader(cut))
	n = 0
	for err = rd.Next(&rec); err == nil; err = rd.Next(&rec) {
		n++
	}
	if !errors.Is(err, ErrTruncated) || n != 4 || rd.Offset() != int64(len(unsealed)-EncodedSize(&recs[4])) {
		t.Fatalf("got err=%v n=%d offset=%d", err, n, rd.Offset())
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		rec  Record
		ok   bool
	}{
		{"write", Record{Kind: KindWrite, Seq: 1, Length: 3, Data: []byte("abc")}, true},
		{"write length mismatch", Record{Kind: KindWrite, Seq: 1, Length: 4, Data: []byte("abc")}, false},
		{"empty write", Record{Kind: KindWrite, Seq: 1}, false},
		{"zero", Record{Kind: KindZero, Seq: 1, Length: 512}, true},
		{"zero with data", Record{Kind: KindZero, Seq: 1, Length: 3, Data: []byte("abc")}, false},
		{"trim empty", Record{Kind: KindTrim, Seq: 1}, false},
		{"bookmark", Record{Kind: KindBookmark, Seq: 1, Data: []byte("x")}, true},
		{"bookmark with range", Record{Kind: KindBookmark, Seq: 1, Length: 1}, false},
		{"seq 0", Record{Kind: KindTrim, Length: 1}, false},
		{"unknown kind", Record{Kind: 9, Seq: 1}, false},
		{"unknown flag", Record{Kind: KindTrim, Seq: 1, Length: 1, Flags: 0x80}, false},
		{"overflow", Record{Kind: KindTrim, Seq: 1, Offset: ^uint64(0), Length: 2}, false},
	}
	for _, tt := range tests {
		if err := tt.rec.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	bad := testHeader(1, 5)
	if bad.Validate() == nil {
		t.Error("first segment with a previous chain validated")
	}
	bad = testHeader(1, 0)
	bad.Version = MaxVersion + 1
	if err := bad.Validate(); !errors.Is(err, ErrBadVersion) {
		t.Errorf("future version: %v", err)
	}
}

func readAll(seg []byte) error {
	rd, err := NewReader(bytes.NewReader(seg))
	if err != nil {
		return err
	}
	var rec Record
	for {
		if err := rd.Next(&rec); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func FuzzReader(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	seg, _ := mustSegment(f, Pos{}, sampleRecords(r, 4))
	f.Add(seg)
	f.Add(seg[:len(seg)-TrailerSize])
	f.Add(seg[:HeaderSize])
	f.Add([]byte("STBYJSEG"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		var rec Record
		var n uint64
		for {
			err := rd.Next(&rec)
			if err == io.EOF {
				tr, ok := rd.Trailer()
				if !ok || tr.Count != n || tr.Pos() != rd.Pos() {
					t.Fatalf("EOF with trailer %+v ok=%v after %d records", tr, ok, n)
				}
				return
			}
			if err != nil {
				if rd.Offset() > int64(len(b)) {
					t.Fatalf("offset %d past input %d", rd.Offset(), len(b))
				}
				return
			}
			if err := rec.Validate(); err != nil {
				t.Fatalf("decoded an invalid record: %v", err)
			}
			n++
		}
	})
}
