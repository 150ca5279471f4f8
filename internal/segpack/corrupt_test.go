package segpack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

// corruptOpt is a small window, so that references and evictions are easy
// to reach.
var corruptOpt = Options{BlockSize: 512, Window: 4 * 512}

// corruptStream returns a primer (a packed segment that puts 6 blocks
// through the window, leaving 2..5 in it) and then a packed segment that
// references blocks 4 and 5 and adds zeros, literals and a new block, both
// as packed by a compressing and by a plain Packer.
func corruptStream(tb testing.TB) (primer []byte, next map[string][]byte) {
	r := rand.New(rand.NewPCG(11, 12))
	bl := make([][]byte, 7)
	for i := range bl {
		bl[i] = random(r, 512)
	}
	var s stream
	seg1 := s.mustSegment(tb, write(0, cat(bl[0], bl[1], bl[2], bl[3], bl[4], bl[5])), bookmark("one"))
	seg2 := s.mustSegment(tb, write(0, cat(bl[4], bl[5], make([]byte, 1024), text(r, 2000), bl[6])), trim(0, 512))
	next = map[string][]byte{}
	for _, level := range []Level{LevelNone, LevelFastest} { // the primer is compressed
		o := corruptOpt
		o.Level = level
		p := mustPacker(tb, o)
		primer, _ = mustPack(tb, p, seg1)
		name := "plain"
		if level != LevelNone {
			name = "zstd"
		}
		next[name], _ = mustPack(tb, p, seg2)
	}
	if h, _ := ParseHeader(primer); h.Flags&FlagZstd == 0 {
		tb.Fatal("the primer is not compressed")
	}
	if h, _ := ParseHeader(next["zstd"]); h.Flags&FlagZstd == 0 {
		tb.Fatal("the zstd example is not compressed")
	}
	return primer, next
}

func primedUnpacker(tb testing.TB, primer []byte) *Unpacker {
	tb.Helper()
	u := mustUnpacker(tb, corruptOpt)
	if _, err := u.Unpack(nil, primer); err != nil {
		tb.Fatal(err)
	}
	return u
}

// reheader decodes the header of packed, lets edit change it, and encodes
// it again with a valid header CRC.
func reheader(packed []byte, edit func(h *Header)) []byte {
	b := bytes.Clone(packed)
	h := Header{
		Version: binary.LittleEndian.Uint16(b[8:]),
		Flags:   binary.LittleEndian.Uint16(b[10:]),
		Window: Window{
			BlockSize: binary.LittleEndian.Uint32(b[16:]),
			Blocks:    binary.LittleEndian.Uint32(b[20:]),
			Seq:       binary.LittleEndian.Uint64(b[24:]),
		},
		Size:    binary.LittleEndian.Uint64(b[32:]),
		OpsLen:  binary.LittleEndian.Uint64(b[40:]),
		BodyLen: binary.LittleEndian.Uint64(b[48:]),
		CRC:     binary.LittleEndian.Uint32(b[56:]),
	}
	edit(&h)
	putHeader(b, &h)
	return b
}

// craft builds an uncompressed packed segment from an op stream, against
// window w, claiming verbatim as its result.
func craft(w Window, verbatim []byte, ops ...[]byte) []byte {
	body := bytes.Join(ops, nil)
	h := Header{Version: Version, Window: w, Size: uint64(len(verbatim)), OpsLen: uint64(len(body)), BodyLen: uint64(len(body)),
		CRC: crc32c(verbatim)}
	b := make([]byte, HeaderSize, HeaderSize+len(body))
	putHeader(b, &h)
	return append(b, body...)
}

func crc32c(b []byte) uint32 { return journal.PayloadCRC(b) } // the same CRC-32C

func op(code byte, args ...uint64) []byte {
	b := []byte{code}
	for _, a := range args {
		b = binary.AppendUvarint(b, a)
	}
	return b
}

func TestUnpackCorrupt(t *testing.T) {
	primer, next := corruptStream(t)
	blk := func(u *Unpacker, num uint64) []byte { return bytes.Clone(u.win.block(nil, num)) }
	primed := primedUnpacker(t, primer)
	w := primed.Window() // seq 6: blocks 2..5
	if w.Seq != 6 {
		t.Fatalf("primer leaves window %s, want seq 6", w)
	}
	zeros := make([]byte, 300)
	tests := []struct {
		name   string
		packed func(good []byte) []byte
		want   any // error for errors.Is, or **WindowMismatchError; nil: must succeed
	}{
		{"good", func(g []byte) []byte { return g }, nil},
		{"empty", func(g []byte) []byte { return nil }, ErrTruncated},
		{"truncated header", func(g []byte) []byte { return g[:HeaderSize-1] }, ErrTruncated},
		{"header only", func(g []byte) []byte { return g[:HeaderSize] }, ErrTruncated},
		{"truncated body", func(g []byte) []byte { return g[:len(g)-1] }, ErrTruncated},
		{"trailing byte", func(g []byte) []byte { return append(bytes.Clone(g), 0) }, ErrCorrupt},
		{"bad magic", func(g []byte) []byte { b := bytes.Clone(g); b[3] ^= 1; return b }, ErrBadMagic},
		{"header crc", func(g []byte) []byte { b := bytes.Clone(g); b[33] ^= 0x80; return b }, ErrChecksum},
		{"unknown version", func(g []byte) []byte { return reheader(g, func(h *Header) { h.Version = 2 }) }, ErrBadVersion},
		{"unknown flag", func(g []byte) []byte { return reheader(g, func(h *Header) { h.Flags |= 4 }) }, ErrCorrupt},
		{"wrong crc", func(g []byte) []byte { return reheader(g, func(h *Header) { h.CRC++ }) }, ErrChecksum},
		{"size over the cap", func(g []byte) []byte { return reheader(g, func(h *Header) { h.Size = MaxSize + 1 }) }, ErrCorrupt},
		{"size too small", func(g []byte) []byte { return reheader(g, func(h *Header) { h.Size-- }) }, ErrCorrupt},
		{"size too large", func(g []byte) []byte { return reheader(g, func(h *Header) { h.Size++ }) }, ErrCorrupt},
		{"ops over the bound", func(g []byte) []byte {
			return reheader(g, func(h *Header) { h.OpsLen = MaxOpsLen(h.Size) + 1 })
		}, ErrCorrupt},
		{"window ahead", func(g []byte) []byte { return reheader(g, func(h *Header) { h.Window.Seq++ }) }, new(*WindowMismatchError)},
		{"other block size", func(g []byte) []byte {
			return reheader(g, func(h *Header) { h.Window.BlockSize = 1024; h.Window.Blocks = 2 })
		}, new(*WindowMismatchError)},
		{"unknown op", func([]byte) []byte { return craft(w, zeros, op(opZero, 300), op(0x05)) }, ErrCorrupt},
		{"op zero", func([]byte) []byte { return craft(w, zeros, op(0), op(opZero, 300)) }, ErrCorrupt},
		{"missing argument", func([]byte) []byte { return craft(w, zeros, op(opZero, 300), op(opRef, 1)) }, ErrCorrupt},
		{"empty literal", func([]byte) []byte { return craft(w, zeros, op(opLiteral, 0), op(opZero, 300)) }, ErrCorrupt},
		{"literal past the ops", func([]byte) []byte { return craft(w, zeros, op(opZero, 299), op(opLiteral, 2), []byte{0}) }, ErrCorrupt},
		{"zeros past the size", func([]byte) []byte { return craft(w, zeros, op(opZero, 301)) }, ErrCorrupt},
		{"short of the size", func([]byte) []byte { return craft(w, zeros, op(opZero, 299)) }, ErrCorrupt},
		{"new block past the size", func([]byte) []byte {
			return craft(w, zeros, op(opZero, 100), op(opBlock, 1), make([]byte, 512))
		}, ErrCorrupt},
		{"reference crafted right", func([]byte) []byte {
			v := cat(blk(primed, 2), blk(primed, 5), zeros)
			return craft(w, v, op(opRef, 4, 1), op(opRef, 1, 1), op(opZero, 300))
		}, nil},
		{"reference to an evicted block", func([]byte) []byte {
			return craft(w, cat(zeros, make([]byte, 512)), op(opZero, 300), op(opRef, 5, 1))
		}, ErrBadRef},
		{"reference past the newest block", func([]byte) []byte {
			return craft(w, cat(zeros, make([]byte, 1024)), op(opZero, 300), op(opRef, 1, 2))
		}, ErrBadRef},
		{"reference to no block", func([]byte) []byte {
			return craft(w, cat(zeros, make([]byte, 512)), op(opZero, 300), op(opRef, 0, 0))
		}, ErrCorrupt},
		{"reference to a block evicted in this segment", func([]byte) []byte {
			nb := make([]byte, 512)
			return craft(w, cat(zeros, nb, nb), op(opZero, 300), op(opBlock, 1), nb, op(opRef, 5, 1))
		}, ErrBadRef},
		{"reference to a block of this segment", func([]byte) []byte {
			nb := bytes.Repeat([]byte{9}, 512)
			return craft(w, cat(zeros, nb, nb), op(opZero, 300), op(opBlock, 1), nb, op(opRef, 1, 1))
		}, nil},
	}
	for _, flavour := range []string{"zstd", "plain"} {
		for _, tt := range tests {
			t.Run(flavour+"/"+tt.name, func(t *testing.T) {
				u := primedUnpacker(t, primer)
				packed := tt.packed(next[flavour])
				got, err := u.Unpack([]byte("x"), packed)
				if tt.want == nil {
					if err != nil {
						t.Fatalf("unpack: %v", err)
					}
					return
				}
				mustFail(t, err, tt.want)
				if errors.Is(err, ErrBadVersion) && errors.Is(err, ErrCorrupt) {
					t.Errorf("ErrBadVersion wraps ErrCorrupt: %v", err)
				}
				if string(got) != "x" {
					t.Errorf("Unpack returned %d bytes with an error, want dst unchanged", len(got))
				}
				// A failed Unpack leaves the window as it was: the real
				// segment still unpacks.
				if u.Window() != w {
					t.Fatalf("window %s after a failed Unpack, want %s", u.Window(), w)
				}
				if _, err := u.Unpack(nil, next[flavour]); err != nil {
					t.Fatalf("unpack after a failed one: %v", err)
				}
			})
		}
	}
}

// TestUnpackFlips flips every byte of two packed segments, one at a time:
// each must fail without changing the window, or (in a zstd body, a bit
// the decoder does not use) give back exactly the right segment. Never a
// panic, never wrong bytes.
func TestUnpackFlips(t *testing.T) {
	primer, next := corruptStream(t)
	for flavour, good := range next {
		u := primedUnpacker(t, primer)
		w := u.Window()
		want, err := u.Unpack(nil, good)
		if err != nil {
			t.Fatal(err)
		}
		u = primedUnpacker(t, primer)
		var harmless int
		for i := range good {
			for _, x := range []byte{0x01, 0x80, 0xff} {
				b := bytes.Clone(good)
				b[i] ^= x
				got, err := u.Unpack(nil, b)
				if err == nil {
					if flavour != "zstd" || i < HeaderSize || !bytes.Equal(got, want) {
						t.Fatalf("%s: flipping byte %d with %#x went unnoticed", flavour, i, x)
					}
					harmless++
					u = primedUnpacker(t, primer)
					continue
				}
				if u.Window() != w {
					t.Fatalf("%s: window moved after a failed Unpack of a flip at %d", flavour, i)
				}
			}
		}
		for n := range len(good) {
			if _, err := u.Unpack(nil, good[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: truncated to %d bytes: %v", flavour, n, err)
			}
		}
		t.Logf("%s: %d of %d flips were harmless", flavour, harmless, 3*len(good))
	}
}

func TestPackRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	var s stream
	first := s.mustSegment(t, write(0, random(r, 8192)))
	seg := s.mustSegment(t, write(0, random(r, 8192)), bookmark("b"))
	tests := []struct {
		name string
		seg  []byte
		want error
	}{
		{"empty", nil, journal.ErrCorrupt},
		{"garbage", random(r, 1000), journal.ErrBadMagic},
		{"header only", seg[:journal.HeaderSize], journal.ErrNotSealed},
		{"no trailer", seg[:len(seg)-journal.TrailerSize], journal.ErrNotSealed},
		{"torn trailer", seg[:len(seg)-1], journal.ErrTruncated},
		{"torn record", seg[:journal.HeaderSize+100], journal.ErrTruncated},
		{"flipped payload", flip(seg, journal.HeaderSize+journal.RecordHeaderSize+5), journal.ErrChecksum},
		{"flipped trailer", flip(seg, len(seg)-10), journal.ErrChecksum},
		{"garbage after the trailer", append(bytes.Clone(seg), 0, 1), journal.ErrCorrupt},
	}
	p := mustPacker(t, Options{})
	mustPack(t, p, first)
	w := p.Window()
	for _, tt := range tests {
		got, _, err := p.Pack([]byte("x"), tt.seg)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Pack error %v, want %v", tt.name, err, tt.want)
		}
		if string(got) != "x" {
			t.Errorf("%s: Pack returned %d bytes with an error, want dst unchanged", tt.name, len(got))
		}
		if p.Window() != w {
			t.Fatalf("%s: window %s after a failed Pack, want %s", tt.name, p.Window(), w)
		}
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x40
	return b
}

// FuzzUnpack feeds arbitrary bytes to a primed Unpacker: it must never
// panic, must return either an error (with the window unchanged) or a
// result whose length and CRC match the header, and must not read a
// segment into more than the header's length.
func FuzzUnpack(f *testing.F) {
	primer, next := corruptStream(f)
	for _, good := range next {
		f.Add(good)
		f.Add(good[:len(good)/2])
		f.Add(good[:HeaderSize])
		f.Add(reheader(good, func(h *Header) { h.Window.Seq = 0 }))
	}
	f.Add(primer)
	f.Add([]byte("STBYPACK"))
	w := primedUnpacker(f, primer).Window()
	zeros := make([]byte, 300)
	f.Add(craft(w, zeros, op(opZero, 300)))
	f.Add(craft(w, zeros, op(opZero, 200), op(opLiteral, 100), zeros[:100]))
	f.Fuzz(func(t *testing.T, b []byte) {
		u := primedUnpacker(t, primer)
		got, err := u.Unpack(nil, b)
		if err != nil {
			if u.Window() != w {
				t.Fatalf("window %s after a failed Unpack, want %s", u.Window(), w)
			}
			return
		}
		h, herr := ParseHeader(b)
		if herr != nil {
			t.Fatalf("Unpack accepted a packed segment whose header does not parse: %v", herr)
		}
		if uint64(len(got)) != h.Size || crc32c(got) != h.CRC {
			t.Fatalf("Unpack gave %d bytes, header says %d", len(got), h.Size)
		}
		if u.Window().Seq < w.Seq || u.Window().Seq-w.Seq > h.Size/uint64(w.BlockSize) {
			t.Fatalf("window went from %s to %s", w, u.Window())
		}
	})
}

// FuzzUnpackOps reaches further than FuzzUnpack: it wraps the fuzzed body
// in a valid header, so every input gets to the zstd decoder or the op
// stream. Nothing can pass the final CRC by chance; what is checked is that
// nothing panics, allocates past the header's bounds, or moves the window.
func FuzzUnpackOps(f *testing.F) {
	primer, next := corruptStream(f)
	for _, good := range next {
		h, _ := ParseHeader(good)
		f.Add(good[HeaderSize:], uint32(h.Size), uint32(h.OpsLen), h.Flags&FlagZstd != 0)
	}
	f.Add(bytes.Join([][]byte{op(opZero, 100), op(opRef, 4, 2), op(opBlock, 1), make([]byte, 512)}, nil), uint32(100+3*512), uint32(0), false)
	pu := primedUnpacker(f, primer)
	w, primerOps := pu.Window(), cap(pu.ops)
	f.Fuzz(func(t *testing.T, body []byte, size, opsLen uint32, compressed bool) {
		h := Header{Version: Version, Window: w, Size: uint64(size), OpsLen: uint64(len(body)), BodyLen: uint64(len(body))}
		if compressed {
			h.Flags, h.OpsLen = FlagZstd, uint64(opsLen)
		}
		if h.Size > 1<<20 || h.Validate() != nil {
			return
		}
		b := make([]byte, HeaderSize, HeaderSize+len(body))
		putHeader(b, &h)
		b = append(b, body...)
		u := primedUnpacker(t, primer)
		got, err := u.Unpack(nil, b)
		if err == nil {
			if uint64(len(got)) != h.Size || crc32c(got) != h.CRC {
				t.Fatalf("Unpack gave %d bytes, header says %d", len(got), h.Size)
			}
			return
		}
		if u.Window() != w {
			t.Fatalf("window %s after a failed Unpack, want %s", u.Window(), w)
		}
		if cap(u.ops) > max(primerOps, int(h.OpsLen)) {
			t.Fatalf("op buffer of %d bytes for an op stream of %d", cap(u.ops), h.OpsLen)
		}
	})
}
