package segpack

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

// stream builds sealed segments of one machine, each continuing from the
// one before, with fixed times so that their bytes never change.
type stream struct {
	pos  journal.Pos
	time int64
}

func (s *stream) mustSegment(tb testing.TB, recs ...journal.Record) []byte {
	tb.Helper()
	var buf bytes.Buffer
	s.time += 1e9
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: [16]byte{7}, Epoch: 1, FirstSeq: s.pos.Seq + 1, PrevChain: s.pos.Chain, Created: s.time})
	if err != nil {
		tb.Fatal(err)
	}
	for i := range recs {
		recs[i].Time = s.time
		if err := w.Append(&recs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	t, err := w.Seal(s.time + 1)
	if err != nil {
		tb.Fatal(err)
	}
	s.pos = t.Pos()
	return buf.Bytes()
}

func write(off uint64, data []byte) journal.Record {
	return journal.Record{Kind: journal.KindWrite, Disk: 1, Offset: off, Length: uint64(len(data)), Data: data}
}

func zeroRec(off, n uint64) journal.Record {
	return journal.Record{Kind: journal.KindZero, Flags: journal.FlagNoHole, Offset: off, Length: n}
}

func trim(off, n uint64) journal.Record {
	return journal.Record{Kind: journal.KindTrim, Offset: off, Length: n}
}

func bookmark(label string) journal.Record {
	return journal.Record{Kind: journal.KindBookmark, Flags: journal.FlagAppConsistent, Data: []byte(label)}
}

func random(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// text is compressible, but has no two equal blocks.
func text(r *rand.Rand, n int) []byte {
	words := []string{"replica ", "segment ", "journal ", "bookmark ", "epoch ", "disk ", "machine ", "\n"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func mustPacker(tb testing.TB, o Options) *Packer {
	tb.Helper()
	p, err := NewPacker(o)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func mustUnpacker(tb testing.TB, o Options) *Unpacker {
	tb.Helper()
	u, err := NewUnpacker(o)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// mustPack packs seg and checks the Stats add up.
func mustPack(tb testing.TB, p *Packer, seg []byte) ([]byte, Stats) {
	tb.Helper()
	packed, st, err := p.Pack(nil, seg)
	if err != nil {
		tb.Fatal(err)
	}
	if st.In != int64(len(seg)) || st.Out != int64(len(packed)) || st.ZeroBytes+st.DedupBytes+st.LiteralBytes != st.In {
		tb.Fatalf("stats %+v do not add up for %d bytes in, %d out", st, len(seg), len(packed))
	}
	return packed, st
}

// mustRoundTrip packs seg, unpacks it and checks it comes back whole, and
// that both windows agree afterwards.
func mustRoundTrip(tb testing.TB, p *Packer, u *Unpacker, seg []byte) Stats {
	tb.Helper()
	packed, st := mustPack(tb, p, seg)
	prefix := []byte("prefix")
	got, err := u.Unpack(prefix, packed)
	if err != nil {
		tb.Fatalf("unpack: %v", err)
	}
	if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], seg) {
		tb.Fatalf("round trip of %d bytes gave %d different bytes", len(seg), len(got)-len(prefix))
	}
	if p.Window() != u.Window() {
		tb.Fatalf("windows differ after a segment: packer %s, unpacker %s", p.Window(), u.Window())
	}
	return st
}

// mustFail checks that err is, or wraps, want (an error value, or a pointer
// to an error type for errors.As).
func mustFail(tb testing.TB, err error, want any) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("no error, want %v", want)
	}
	switch w := want.(type) {
	case **WindowMismatchError:
		if !errors.As(err, w) {
			tb.Fatalf("error %v, want a *WindowMismatchError", err)
		}
	case error:
		if !errors.Is(err, w) {
			tb.Fatalf("error %v, want %v", err, w)
		}
	default:
		tb.Fatalf("mustFail: bad want %T", want)
	}
}
