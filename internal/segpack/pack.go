package segpack

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/standby-dr/standby/internal/journal"
)

// Stats describe what Pack did with one segment. In = ZeroBytes +
// DedupBytes + LiteralBytes.
type Stats struct {
	In           int64 `json:"in"`            // verbatim bytes of the segment
	Out          int64 `json:"out"`           // bytes of the packed segment, header included
	ZeroBytes    int64 `json:"zero_bytes"`    // bytes sent as zero ops: all-zero payload blocks and padding
	DedupBytes   int64 `json:"dedup_bytes"`   // bytes sent as references to the window
	LiteralBytes int64 `json:"literal_bytes"` // bytes carried in the op stream, before compression
}

// Packer packs the segments of one stream, the sending end. It is not safe
// for concurrent use.
type Packer struct {
	opt Options
	enc *zstd.Encoder // nil for LevelNone
	// plain skips zstd for the next segments (SetCompress): the link is
	// faster than the compressor.
	plain bool
	win   packWindow
	zero  []byte // one all-zero block

	// Reused across calls to Pack.
	rd    bytes.Reader
	br    *bufio.Reader
	rec   journal.Record
	spans []span
	ops   []byte
}

// span is a write record's payload: bytes [start, end) of the segment.
type span struct{ start, end int }

// NewPacker returns a Packer for a new stream.
func NewPacker(o Options) (*Packer, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	p := &Packer{
		opt:  o,
		win:  newPackWindow(o.BlockSize, o.blocks()),
		zero: make([]byte, o.BlockSize),
		br:   bufio.NewReaderSize(nil, 256<<10),
	}
	if o.Level != LevelNone {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(levels[o.Level].zstd),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(zstdWindow))
		if err != nil {
			return nil, fmt.Errorf("segpack: zstd encoder: %w", err)
		}
		p.enc = enc
	}
	return p, nil
}

// Window is the state of the Packer's dedup window: what the next packed
// segment will record in its header.
func (p *Packer) Window() Window { return p.win.state() }

// SetCompress turns zstd on or off for the following segments (a Packer
// made with LevelNone never compresses). The Unpacker needs no telling:
// each packed segment's header says whether its op stream is compressed.
func (p *Packer) SetCompress(on bool) { p.plain = !on }

// Reset forgets the dedup window, for a new connection. The Unpacker at
// the other end must be Reset too.
func (p *Packer) Reset() { p.win.reset() }

// Pack appends the packed form of seg, one whole sealed journal segment, to
// dst and returns the extended slice. seg is read in full with the journal
// package first (every CRC, the chain, the trailer); if it does not read,
// Pack returns dst unchanged and an error wrapping the journal error, and
// the window is unchanged. Otherwise the segment's new payload blocks enter
// the window, and the packed segment must reach the Unpacker: a Packer's
// output is a sequence, and each element depends on the ones before.
func (p *Packer) Pack(dst, seg []byte) ([]byte, Stats, error) {
	if len(seg) > MaxSize {
		return dst, Stats{}, fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, len(seg), MaxSize)
	}
	trailerEnd, err := p.parse(seg)
	if err != nil {
		return dst, Stats{}, fmt.Errorf("segpack: pack: %w", err)
	}
	h := Header{
		Version: Version,
		Window:  p.win.state(),
		Size:    uint64(len(seg)),
		CRC:     crc32.Checksum(seg, castagnoli),
	}
	st := Stats{In: int64(len(seg))}
	n0 := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	body := n0 + HeaderSize
	if p.enc == nil || p.plain {
		dst = p.emit(dst, seg, trailerEnd, &st)
		h.OpsLen = uint64(len(dst) - body)
	} else {
		p.ops = p.emit(p.ops[:0], seg, trailerEnd, &st)
		h.OpsLen = uint64(len(p.ops))
		dst = p.enc.EncodeAll(p.ops, dst)
		if len(dst)-body < len(p.ops) {
			h.Flags |= FlagZstd
		} else { // incompressible: send the op stream as it is
			dst = append(dst[:body], p.ops...)
		}
		if cap(p.ops) > 4*DefaultWindow {
			p.ops = nil // do not keep a buffer for the largest segment ever seen
		}
	}
	h.BodyLen = uint64(len(dst) - body)
	if h.OpsLen > MaxOpsLen(h.Size) {
		// Cannot happen (docs/format/segpack.md bounds the op stream). The
		// window has moved; reset it so the Unpacker reports a mismatch
		// rather than guessing.
		p.win.reset()
		return dst[:n0], Stats{}, fmt.Errorf("segpack: pack: op stream of %d bytes for a segment of %d (bug; window reset)", h.OpsLen, h.Size)
	}
	putHeader(dst[n0:], &h)
	st.Out = int64(len(dst) - n0)
	return dst, st, nil
}

// parse reads seg with the journal reader and records the write payloads
// in p.spans. It returns the offset just after the trailer; only zero
// padding may follow it.
func (p *Packer) parse(seg []byte) (int, error) {
	p.rd.Reset(seg)
	p.br.Reset(&p.rd)
	defer func() { p.rd.Reset(nil); p.br.Reset(nil) }() // do not keep seg
	r, err := journal.NewReader(p.br)
	if err != nil {
		return 0, err
	}
	p.spans = p.spans[:0]
	for {
		off := int(r.Offset())
		err := r.Next(&p.rec)
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return 0, err
		}
		if p.rec.Kind == journal.KindWrite {
			start := off + journal.RecordHeaderSize
			p.spans = append(p.spans, span{start, start + len(p.rec.Data)})
		}
	}
	if cap(p.rec.Data) > 4<<20 {
		p.rec.Data = nil
	}
	end := int(r.Offset()) + journal.TrailerSize
	if end+int(r.Padding()) != len(seg) {
		return 0, fmt.Errorf("%w: segment of %d bytes ends at %d with %d bytes of padding", journal.ErrCorrupt, len(seg), end, r.Padding())
	}
	return end, nil
}

// emit appends the op stream of seg to ops, making new blocks enter the
// window as it goes.
func (p *Packer) emit(ops, seg []byte, trailerEnd int, st *Stats) []byte {
	e := emitter{ops: ops, seg: seg, bs: p.opt.BlockSize, st: st}
	bs := p.opt.BlockSize
	dedup := p.win.n > 0
	pos := 0
	for _, s := range p.spans {
		e.literal(pos, s.start)
		off := s.start
		for ; off+bs <= s.end; off += bs {
			b := seg[off : off+bs]
			switch {
			case bytes.Equal(b, p.zero):
				e.zeros(bs)
			case !dedup:
				e.literal(off, off+bs)
			default:
				num, h, ok := p.win.find(b)
				if ok {
					e.ref(p.win.seq-num, p.win.seq)
					continue
				}
				e.block(off) // before insert: it may flush a reference relative to seq
				p.win.insert(h, b)
			}
		}
		pos = off // the tail shorter than a block goes with the next literal
	}
	e.literal(pos, trailerEnd)
	if pad := len(seg) - trailerEnd; pad > 0 {
		e.zeros(pad)
	}
	e.flush()
	return e.ops
}

// emitter appends ops, merging each op with the one before where it can:
// adjacent literals, runs of zeros, runs of new blocks, runs of references
// to consecutive blocks of the window.
type emitter struct {
	ops []byte
	seg []byte
	bs  int
	st  *Stats

	op         byte // the pending op; 0: none
	start, end int  // opLiteral, opBlock: the bytes of seg
	n          int  // opZero: bytes
	d, k       uint64
	refSeq     uint64 // opRef: window seq when the run started
}

func (e *emitter) literal(start, end int) {
	if start == end {
		return
	}
	if e.op != opLiteral || e.end != start {
		e.flush()
		e.op, e.start = opLiteral, start
	}
	e.end = end
}

func (e *emitter) zeros(n int) {
	if e.op != opZero {
		e.flush()
		e.op, e.n = opZero, 0
	}
	e.n += n
}

func (e *emitter) block(off int) {
	if e.op != opBlock || e.end != off {
		e.flush()
		e.op, e.start = opBlock, off
	}
	e.end = off + e.bs
}

// ref adds a reference to the block d blocks back from seq.
func (e *emitter) ref(d, seq uint64) {
	if e.op == opRef && e.refSeq == seq && d+e.k == e.d && e.k < e.d {
		e.k++
		return
	}
	e.flush()
	e.op, e.d, e.k, e.refSeq = opRef, d, 1, seq
}

func (e *emitter) flush() {
	switch e.op {
	case opLiteral:
		e.ops = append(e.ops, opLiteral)
		e.ops = binary.AppendUvarint(e.ops, uint64(e.end-e.start))
		e.ops = append(e.ops, e.seg[e.start:e.end]...)
		e.st.LiteralBytes += int64(e.end - e.start)
	case opZero:
		e.ops = append(e.ops, opZero)
		e.ops = binary.AppendUvarint(e.ops, uint64(e.n))
		e.st.ZeroBytes += int64(e.n)
	case opBlock:
		e.ops = append(e.ops, opBlock)
		e.ops = binary.AppendUvarint(e.ops, uint64((e.end-e.start)/e.bs))
		e.ops = append(e.ops, e.seg[e.start:e.end]...)
		e.st.LiteralBytes += int64(e.end - e.start)
	case opRef:
		e.ops = append(e.ops, opRef)
		e.ops = binary.AppendUvarint(e.ops, e.d)
		e.ops = binary.AppendUvarint(e.ops, e.k)
		e.st.DedupBytes += int64(e.k) * int64(e.bs)
	}
	e.op = 0
}
