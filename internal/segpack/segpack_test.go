package segpack

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

// roundTripSegments is a stream that exercises every kind of record and
// payload: random, zero, repeated (within and across segments), unaligned
// tails, bookmarks, zero and trim records, empty segments and padding.
func roundTripSegments(t *testing.T) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	var s stream
	a, b := random(r, 4096), random(r, 4096)
	zero := make([]byte, 64<<10)
	segs := [][]byte{
		s.mustSegment(t),
		s.mustSegment(t, write(0, []byte{0xde, 0xad, 0xbe, 0xef}), bookmark("daily")),
		s.mustSegment(t, write(4096, random(r, 100000)), write(0, zero), zeroRec(0, 1<<20), trim(1<<20, 4096)),
		s.mustSegment(t, write(0, cat(a, b, a, zero[:4096], b)), bookmark("")),
		s.mustSegment(t, write(8192, cat(b, a)), write(0, cat(a, random(r, 777))), write(0, cat(zero[:4096], a, []byte{1}))),
		s.mustSegment(t, write(0, text(r, 300000)), trim(0, 512)),
		s.mustSegment(t, write(0, cat(random(r, 12288), random(r, 511))), write(1, random(r, 1)), write(2, zero[:4095])),
		s.mustSegment(t, zeroRec(0, 4096), zeroRec(4096, 4096), bookmark("b"), trim(0, 1)),
		s.mustSegment(t),
		s.mustSegment(t, write(0, cat(a, a, a, a, a, a, a, a))),
	}
	// A sealed segment whose writer stopped before cutting its
	// preallocated tail: zeros after the trailer.
	segs = append(segs, append(s.mustSegment(t, write(0, b)), make([]byte, 10000)...))
	// A large segment: 4 MiB of mixed blocks.
	var big [][]byte
	for i := range 1024 {
		switch i % 4 {
		case 0:
			big = append(big, random(r, 4096))
		case 1:
			big = append(big, zero[:4096])
		case 2:
			big = append(big, a)
		case 3:
			big = append(big, text(r, 4096))
		}
	}
	segs = append(segs, s.mustSegment(t, write(0, cat(big...))))
	return segs
}

func TestRoundTrip(t *testing.T) {
	segs := roundTripSegments(t)
	tests := []struct {
		name string
		opt  Options
	}{
		{"defaults", Options{}},
		{"no compression", Options{Level: LevelNone}},
		{"no dedup", Options{Window: -1}},
		{"no dedup no compression", Options{Window: -1, Level: LevelNone}},
		{"small blocks small window", Options{BlockSize: 512, Window: 4 * 512}},
		{"one block window", Options{BlockSize: 4096, Window: 4096}},
		{"unaligned window", Options{BlockSize: 1000, Window: 10999}},
		{"large blocks", Options{BlockSize: MaxBlockSize}},
		{"standard", Options{Level: LevelStandard}},
		{"best", Options{Level: LevelBest, BlockSize: 512}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, u := mustPacker(t, tt.opt), mustUnpacker(t, tt.opt)
			var in, out int64
			for _, seg := range segs {
				st := mustRoundTrip(t, p, u, seg)
				in, out = in+st.In, out+st.Out
			}
			t.Logf("%d bytes in, %d out, window %s", in, out, p.Window())
		})
	}
}

func TestStats(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	a, rnd := random(r, 4096), random(r, 1<<20)
	zero := make([]byte, 64<<10)
	tests := []struct {
		name string
		opt  Options
		segs func(s *stream) [][]byte // Stats are checked for the last one
		want func(in int64) Stats     // Out is checked as a bound: got.Out <= want.Out
	}{{
		name: "all-zero writes pack to tiny",
		segs: func(s *stream) [][]byte {
			recs := make([]journal.Record, 16)
			for i := range recs {
				recs[i] = write(uint64(i)<<16, zero)
			}
			return [][]byte{s.mustSegment(t, recs...)}
		},
		want: func(in int64) Stats {
			return Stats{In: in, Out: 512, ZeroBytes: 1 << 20, LiteralBytes: in - 1<<20}
		},
	}, {
		name: "repeated block across segments dedups",
		segs: func(s *stream) [][]byte {
			return [][]byte{s.mustSegment(t, write(0, a)), s.mustSegment(t, write(4096, a))}
		},
		want: func(in int64) Stats {
			return Stats{In: in, Out: in - 4096 + 64, DedupBytes: 4096, LiteralBytes: in - 4096}
		},
	}, {
		name: "repeated block within a segment dedups",
		segs: func(s *stream) [][]byte {
			return [][]byte{s.mustSegment(t, write(0, cat(a, a, a, a)))}
		},
		want: func(in int64) Stats {
			return Stats{In: in, Out: in - 3*4096 + 64, DedupBytes: 3 * 4096, LiteralBytes: in - 3*4096}
		},
	}, {
		name: "no dedup when disabled",
		opt:  Options{Window: -1, Level: LevelNone},
		segs: func(s *stream) [][]byte {
			return [][]byte{s.mustSegment(t, write(0, cat(a, a, zero[:4096])))}
		},
		want: func(in int64) Stats {
			return Stats{In: in, Out: in - 4096 + 64 + 16, ZeroBytes: 4096, LiteralBytes: in - 4096}
		},
	}, {
		name: "compressible data shrinks",
		segs: func(s *stream) [][]byte { return [][]byte{s.mustSegment(t, write(0, text(r, 1<<20)))} },
		want: func(in int64) Stats { return Stats{In: in, Out: in / 3, LiteralBytes: in} },
	}, {
		name: "random data costs little",
		segs: func(s *stream) [][]byte { return [][]byte{s.mustSegment(t, write(0, rnd))} },
		want: func(in int64) Stats { return Stats{In: in, Out: in + 64 + 16, LiteralBytes: in} },
	}, {
		name: "a tail shorter than a block is literal",
		opt:  Options{Level: LevelNone},
		segs: func(s *stream) [][]byte {
			return [][]byte{s.mustSegment(t, write(0, cat(zero[:4096], zero[:100])))}
		},
		want: func(in int64) Stats {
			return Stats{In: in, Out: in - 4096 + 64 + 16, ZeroBytes: 4096, LiteralBytes: in - 4096}
		},
	}, {
		name: "padding after the trailer is zeros",
		opt:  Options{Level: LevelNone},
		segs: func(s *stream) [][]byte {
			return [][]byte{append(s.mustSegment(t, bookmark("x")), zero[:1000]...)}
		},
		want: func(in int64) Stats {
			return Stats{In: in, Out: in - 1000 + 64 + 8, ZeroBytes: 1000, LiteralBytes: in - 1000}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, u := mustPacker(t, tt.opt), mustUnpacker(t, tt.opt)
			var s stream
			var got Stats
			for _, seg := range tt.segs(&s) {
				got = mustRoundTrip(t, p, u, seg)
			}
			want := tt.want(got.In)
			if got.Out > want.Out {
				t.Errorf("Out = %d bytes for %d in, want at most %d", got.Out, got.In, want.Out)
			}
			got.Out, want.Out = 0, 0
			if got != want {
				t.Errorf("stats\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestWindowEviction runs a long stream through a small window and checks
// every segment's dedup against a model of the rule in
// docs/format/segpack.md: the window is the last Blocks distinct non-zero
// blocks to enter, oldest out first, and references do not change it.
func TestWindowEviction(t *testing.T) {
	const bs, blocks = 512, 8
	opt := Options{BlockSize: bs, Window: blocks*bs + bs/2} // rounded down to 8 blocks
	r := rand.New(rand.NewPCG(5, 6))
	pool := make([][]byte, 14)
	for i := range pool {
		pool[i] = random(r, bs)
	}
	pool[0] = make([]byte, bs) // zero blocks never enter the window

	var model [][]byte // the window: oldest first
	modelDedup := func(payload []byte) (dedup int64) {
		for off := 0; off+bs <= len(payload); off += bs {
			b := payload[off : off+bs]
			switch i := indexOf(model, b); {
			case bytes.Equal(b, pool[0]):
			case i >= 0:
				dedup += bs
			default:
				model = append(model, b)
				if len(model) > blocks {
					model = model[1:]
				}
			}
		}
		return dedup
	}

	p, u := mustPacker(t, opt), mustUnpacker(t, opt)
	var s stream
	var hits, misses int64
	for i := range 300 {
		var recs []journal.Record
		var want int64
		for range 1 + r.IntN(3) {
			var parts [][]byte
			for range 1 + r.IntN(6) {
				parts = append(parts, pool[r.IntN(len(pool))])
			}
			if r.IntN(4) == 0 {
				parts = append(parts, random(r, r.IntN(bs))) // a tail
			}
			payload := cat(parts...)
			want += modelDedup(payload)
			recs = append(recs, write(uint64(i)*bs, payload))
		}
		st := mustRoundTrip(t, p, u, s.mustSegment(t, recs...))
		if st.DedupBytes != want {
			t.Fatalf("segment %d: DedupBytes = %d, the model says %d", i, st.DedupBytes, want)
		}
		hits += st.DedupBytes / bs
		misses += (st.LiteralBytes) / bs
	}
	if hits == 0 || p.Window().Seq <= blocks {
		t.Fatalf("the stream did not exercise the window: %d hits, window %s", hits, p.Window())
	}
	if c := cap(u.win.data); c > blocks*bs {
		t.Errorf("unpacker window holds %d bytes, want at most %d", c, blocks*bs)
	}
	if c := cap(p.win.data); c > blocks*bs {
		t.Errorf("packer window holds %d bytes, want at most %d", c, blocks*bs)
	}
	if len(p.win.index) > blocks {
		t.Errorf("packer index has %d entries, want at most %d", len(p.win.index), blocks)
	}
	t.Logf("%d block hits, window %s", hits, p.Window())
}

func indexOf(list [][]byte, b []byte) int {
	for i := range list {
		if bytes.Equal(list[i], b) {
			return i
		}
	}
	return -1
}

// TestSegmentLargerThanWindow has one segment insert more blocks than the
// window holds, so the unpacker must resolve references to blocks of the
// same segment and keep only the newest at the end.
func TestSegmentLargerThanWindow(t *testing.T) {
	opt := Options{BlockSize: 512, Window: 4 * 512, Level: LevelNone}
	r := rand.New(rand.NewPCG(7, 8))
	bl := make([][]byte, 10)
	for i := range bl {
		bl[i] = random(r, 512)
	}
	p, u := mustPacker(t, opt), mustUnpacker(t, opt)
	var s stream
	// 0..9 enter (seq 10, window 6..9); refs to 8 and 9 within the segment.
	st := mustRoundTrip(t, p, u, s.mustSegment(t, write(0, cat(bl[0], bl[1], bl[2], bl[3], bl[4], bl[5], bl[6], bl[7], bl[8], bl[9], bl[8], bl[9]))))
	if st.DedupBytes != 2*512 {
		t.Errorf("first segment dedup %d bytes, want %d", st.DedupBytes, 2*512)
	}
	// 6..9 are in the window; 5 was evicted and comes again, evicting 6.
	st = mustRoundTrip(t, p, u, s.mustSegment(t, write(0, cat(bl[9], bl[8], bl[7], bl[5], bl[6]))))
	if want := int64(3 * 512); st.DedupBytes != want {
		t.Errorf("second segment dedup %d bytes, want %d", st.DedupBytes, want)
	}
}

func TestReset(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	p, u := mustPacker(t, Options{}), mustUnpacker(t, Options{})
	var s stream
	a := random(r, 8192)
	mustRoundTrip(t, p, u, s.mustSegment(t, write(0, a)))

	// A new connection where only the receiving end forgot the window.
	u.Reset()
	packed, _ := mustPack(t, p, s.mustSegment(t, write(0, a)))
	_, err := u.Unpack(nil, packed)
	var wm *WindowMismatchError
	mustFail(t, err, &wm)
	if want := (Window{BlockSize: 4096, Blocks: 8192, Seq: 0}); wm.Want != want {
		t.Errorf("mismatch says the unpacker holds %s, want %s", wm.Want, want)
	}
	if want := (Window{BlockSize: 4096, Blocks: 8192, Seq: 2}); wm.Got != want {
		t.Errorf("mismatch says the segment needs %s, want %s", wm.Got, want)
	}
	if errors.Is(err, ErrCorrupt) {
		t.Errorf("a window mismatch wraps ErrCorrupt: %v", err)
	}

	// Both ends reset: the stream starts over and the block is sent again.
	p.Reset()
	st := mustRoundTrip(t, p, u, s.mustSegment(t, write(0, a)))
	if st.DedupBytes != 0 {
		t.Errorf("dedup of %d bytes right after a reset", st.DedupBytes)
	}
	st = mustRoundTrip(t, p, u, s.mustSegment(t, write(0, a)))
	if st.DedupBytes != 8192 {
		t.Errorf("dedup of %d bytes, want 8192", st.DedupBytes)
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		opt  Options
		want error
	}{
		{Options{}, nil},
		{Options{BlockSize: 512, Window: 512, Level: LevelBest}, nil},
		{Options{Window: -1, Level: LevelNone}, nil},
		{Options{BlockSize: 511}, ErrOptions},
		{Options{BlockSize: MaxBlockSize + 1}, ErrOptions},
		{Options{BlockSize: -1}, ErrOptions},
		{Options{Window: 4095}, ErrOptions},
		{Options{Window: MaxWindow + 1}, ErrOptions},
		{Options{Level: 5}, ErrOptions},
		{Options{Level: -2}, ErrOptions},
	}
	for _, tt := range tests {
		_, perr := NewPacker(tt.opt)
		_, uerr := NewUnpacker(tt.opt)
		for _, err := range []error{tt.opt.Validate(), perr, uerr} {
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Errorf("%+v: error %v, want %v", tt.opt, err, tt.want)
			}
		}
	}
	for _, name := range []string{"", "none", "fastest", "Standard", "better", "best"} {
		l, err := ParseLevel(name)
		if err != nil || (name != "" && !bytes.EqualFold([]byte(l.String()), []byte(name))) {
			t.Errorf("ParseLevel(%q) = %v, %v", name, l, err)
		}
	}
	if _, err := ParseLevel("fast"); !errors.Is(err, ErrOptions) {
		t.Errorf("ParseLevel(fast): %v", err)
	}
}

func TestHeaderValidate(t *testing.T) {
	good := Header{Version: 1, Window: Window{BlockSize: 4096, Blocks: 8192, Seq: 5}, Size: 1000, OpsLen: 900, BodyLen: 900}
	tests := []struct {
		name string
		edit func(h *Header)
		want error
	}{
		{"good", func(h *Header) {}, nil},
		{"compressed", func(h *Header) { h.Flags = FlagZstd; h.BodyLen = 100 }, nil},
		{"dedup off", func(h *Header) { h.Window.Blocks, h.Window.Seq = 0, 0 }, nil},
		{"version 0", func(h *Header) { h.Version = 0 }, ErrBadVersion},
		{"version 2", func(h *Header) { h.Version = 2 }, ErrBadVersion},
		{"unknown flag", func(h *Header) { h.Flags = 2 }, ErrCorrupt},
		{"small blocks", func(h *Header) { h.Window.BlockSize = 511 }, ErrCorrupt},
		{"large blocks", func(h *Header) { h.Window.BlockSize = MaxBlockSize + 1 }, ErrCorrupt},
		{"large window", func(h *Header) { h.Window.Blocks = MaxWindow/4096 + 1 }, ErrCorrupt},
		{"seq with dedup off", func(h *Header) { h.Window.Blocks = 0 }, ErrCorrupt},
		{"smaller than a segment", func(h *Header) { h.Size = minSize - 1 }, ErrCorrupt},
		{"over MaxSize", func(h *Header) { h.Size = MaxSize + 1 }, ErrCorrupt},
		{"no ops", func(h *Header) { h.OpsLen, h.BodyLen = 0, 0 }, ErrCorrupt},
		{"too many ops", func(h *Header) { h.OpsLen = MaxOpsLen(h.Size) + 1; h.BodyLen = h.OpsLen }, ErrCorrupt},
		{"body is not the ops", func(h *Header) { h.BodyLen = 899 }, ErrCorrupt},
		{"compressed body not smaller", func(h *Header) { h.Flags = FlagZstd }, ErrCorrupt},
		{"compressed body empty", func(h *Header) { h.Flags = FlagZstd; h.BodyLen = 0 }, ErrCorrupt},
	}
	for _, tt := range tests {
		h := good
		tt.edit(&h)
		if err := h.Validate(); !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
			t.Errorf("%s: Validate() = %v, want %v", tt.name, err, tt.want)
		}
		b := make([]byte, HeaderSize)
		putHeader(b, &h)
		got, err := ParseHeader(b)
		if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
			t.Errorf("%s: ParseHeader = %v, want %v", tt.name, err, tt.want)
		}
		if err == nil && got != h {
			t.Errorf("%s: ParseHeader = %+v, want %+v", tt.name, got, h)
		}
	}
}

// TestLargeSegment packs a segment whose op stream is over the 8 MiB zstd
// window, so the frame is not a single segment, and one of a record of
// journal.MaxPayload bytes.
func TestLargeSegment(t *testing.T) {
	if testing.Short() {
		t.Skip("large segments")
	}
	r := rand.New(rand.NewPCG(15, 16))
	var s stream
	segs := [][]byte{
		s.mustSegment(t, write(0, text(r, 20<<20)), write(0, random(r, 4<<20))),
		s.mustSegment(t, write(0, cat(make([]byte, journal.MaxPayload-1<<20), text(r, 1<<20)))),
	}
	for _, level := range []Level{LevelFastest, LevelNone} {
		p, u := mustPacker(t, Options{Level: level}), mustUnpacker(t, Options{Level: level})
		for _, seg := range segs {
			st := mustRoundTrip(t, p, u, seg)
			t.Logf("%s: %d bytes in, %d out", level, st.In, st.Out)
		}
	}
}
