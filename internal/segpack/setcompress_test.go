package segpack

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// A Packer switched between zstd and plain op streams segment by segment
// (the process server's adaptive compression) stays in step with its
// Unpacker, and only the compressed ones carry FlagZstd.
func TestSetCompressAlternates(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var s stream
	p, u := mustPacker(t, Options{}), mustUnpacker(t, Options{})
	for i := range 8 {
		data := text(r, 64<<10)
		seg := s.mustSegment(t, write(uint64(i)<<16, data), write(1<<20, data)) // the second write dedups
		on := i%2 == 0
		p.SetCompress(on)
		packed, st, err := p.Pack(nil, seg)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ParseHeader(packed)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Flags&FlagZstd != 0; got != on {
			t.Errorf("segment %d: compressed %v, want %v", i, got, on)
		}
		if st.DedupBytes == 0 {
			t.Errorf("segment %d: the repeated block was not deduplicated", i)
		}
		got, err := u.Unpack(nil, packed)
		if err != nil || !bytes.Equal(got, seg) {
			t.Fatalf("segment %d: unpack: %v, equal %v", i, err, bytes.Equal(got, seg))
		}
	}
}
