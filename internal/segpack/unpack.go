package segpack

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// Unpacker restores the segments of one stream, the receiving end. It is
// not safe for concurrent use.
type Unpacker struct {
	win unpackWindow
	dec *zstd.Decoder
	ops []byte // the decompressed op stream, reused
}

// NewUnpacker returns an Unpacker for a new stream. o must have the
// BlockSize and Window of the Packer at the other end; its Level is not
// used (a packed segment says whether it is compressed).
func NewUnpacker(o Options) (*Unpacker, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(zstdWindow),
		zstd.WithDecoderMaxMemory(MaxOpsLen(MaxSize)),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, fmt.Errorf("segpack: zstd decoder: %w", err)
	}
	return &Unpacker{win: unpackWindow{bs: o.BlockSize, n: uint64(o.blocks())}, dec: dec}, nil
}

// Window is the state of the Unpacker's dedup window: what the next packed
// segment must have been packed against.
func (u *Unpacker) Window() Window { return u.win.state() }

// Reset forgets the dedup window, for a new connection.
func (u *Unpacker) Reset() { u.win.reset() }

// Unpack appends the verbatim segment that packed holds to dst and returns
// the extended slice. Packed segments must be unpacked in the order they
// were packed, each once.
//
// Unpack checks the header, that the segment was packed against the window
// the Unpacker holds (else a *WindowMismatchError), every op against the
// declared length and the window (else an error wrapping ErrCorrupt), and
// the CRC-32C of the result (else ErrChecksum). It allocates at most the
// declared verbatim length (capped at MaxSize) for dst, and MaxOpsLen of it
// for a compressed op stream. On error it returns dst unchanged and leaves
// the window as it was.
func (u *Unpacker) Unpack(dst, packed []byte) ([]byte, error) {
	h, err := ParseHeader(packed)
	if err != nil {
		return dst, err
	}
	if body := uint64(len(packed) - HeaderSize); body < h.BodyLen {
		return dst, fmt.Errorf("%w: body is %d bytes, header says %d", ErrTruncated, body, h.BodyLen)
	} else if body > h.BodyLen {
		return dst, fmt.Errorf("%w: %d bytes after the body", ErrCorrupt, body-h.BodyLen)
	}
	if h.Window != u.win.state() {
		return dst, &WindowMismatchError{Want: u.win.state(), Got: h.Window}
	}
	ops := packed[HeaderSize:]
	if h.Flags&FlagZstd != 0 {
		if ops, err = u.decompress(ops, h.OpsLen); err != nil {
			return dst, err
		}
	}
	n0 := len(dst)
	out, err := u.apply(slices.Grow(dst, int(h.Size)), ops, h.Size)
	if err != nil {
		u.win.pending = u.win.pending[:0]
		return dst, err
	}
	if got := crc32.Checksum(out[n0:], castagnoli); got != h.CRC {
		u.win.pending = u.win.pending[:0]
		return dst, fmt.Errorf("%w: segment crc %08x, header says %08x", ErrChecksum, got, h.CRC)
	}
	u.win.commit(out[n0:])
	return out, nil
}

// decompress decodes a zstd body into u.ops, which it never lets grow past
// opsLen.
func (u *Unpacker) decompress(body []byte, opsLen uint64) ([]byte, error) {
	var fh zstd.Header
	if err := fh.Decode(body); err != nil {
		return nil, fmt.Errorf("%w: zstd frame header: %v", ErrCorrupt, err)
	}
	// A zstd frame of fewer than 256 bytes need not say its size; a larger
	// one from a Packer always does, so that the decoder never has to grow
	// its output past ops_len to find out it is too long.
	if fh.HasFCS && fh.FrameContentSize != opsLen || !fh.HasFCS && opsLen >= 256 {
		return nil, fmt.Errorf("%w: zstd frame of %d bytes (stated: %v), header says %d", ErrCorrupt, fh.FrameContentSize, fh.HasFCS, opsLen)
	}
	if uint64(cap(u.ops)) < opsLen {
		u.ops = make([]byte, 0, opsLen)
	}
	ops, err := u.dec.DecodeAll(body, u.ops[:0:opsLen])
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
	}
	if uint64(len(ops)) != opsLen {
		return nil, fmt.Errorf("%w: zstd body gives %d bytes, header says %d", ErrCorrupt, len(ops), opsLen)
	}
	if cap(u.ops) > 4*DefaultWindow {
		defer func() { u.ops = nil }() // do not keep a buffer for the largest segment ever seen
	}
	return ops, nil
}

// apply runs the op stream, appending size bytes to dst, whose capacity is
// enough. New blocks are recorded in u.win.pending, not yet in the window.
func (u *Unpacker) apply(dst, ops []byte, size uint64) ([]byte, error) {
	n0 := len(dst)
	bs := uint64(u.win.bs)
	at := 0 // offset in ops, for messages
	for len(ops) > 0 {
		left := size - uint64(len(dst)-n0)
		op := ops[0]
		if op < opLiteral || op > opRef {
			return dst, fmt.Errorf("%w: unknown op %#x at op offset %d", ErrCorrupt, op, at)
		}
		args, n, err := uvarints(ops[1:], op)
		if err != nil {
			return dst, fmt.Errorf("%w: op %#x at %d: %v", ErrCorrupt, op, at, err)
		}
		rest := ops[1+n:]
		var inline uint64
		switch op {
		case opLiteral:
			inline = args[0]
			if inline == 0 || inline > uint64(len(rest)) || inline > left {
				return dst, fmt.Errorf("%w: literal of %d bytes at op offset %d (%d in the op stream, %d left of the segment)", ErrCorrupt, inline, at, len(rest), left)
			}
			dst = append(dst, rest[:inline]...)
		case opZero:
			if args[0] == 0 || args[0] > left {
				return dst, fmt.Errorf("%w: %d zero bytes at op offset %d (%d left of the segment)", ErrCorrupt, args[0], at, left)
			}
			dst = dst[:len(dst)+int(args[0])]
			clear(dst[len(dst)-int(args[0]):])
		case opBlock:
			k := args[0]
			if u.win.n == 0 || k == 0 || k > left/bs || k > uint64(len(rest))/bs {
				return dst, fmt.Errorf("%w: %d new blocks at op offset %d (window of %d blocks, %d left of the segment)", ErrCorrupt, k, at, u.win.n, left)
			}
			inline = k * bs
			for i := uint64(0); i < k; i++ {
				u.win.pending = append(u.win.pending, len(dst)-n0)
				dst = append(dst, rest[i*bs:(i+1)*bs]...)
			}
		case opRef:
			d, k := args[0], args[1]
			seq := u.win.seq + uint64(len(u.win.pending))
			if k == 0 || k > left/bs {
				return dst, fmt.Errorf("%w: reference to %d blocks at op offset %d (%d left of the segment)", ErrCorrupt, k, at, left)
			}
			if d < k || d > seq || d > u.win.n {
				return dst, fmt.Errorf("%w: %d blocks from %d back at op offset %d; the window holds %d of %d blocks, seq %d",
					ErrBadRef, k, d, at, min(seq, u.win.n), u.win.n, seq)
			}
			for i := uint64(0); i < k; i++ {
				dst = append(dst, u.win.block(dst[n0:], seq-d+i)...)
			}
		}
		ops = rest[inline:]
		at += 1 + n + int(inline)
	}
	if got := uint64(len(dst) - n0); got != size {
		return dst, fmt.Errorf("%w: op stream gives %d bytes, header says %d", ErrCorrupt, got, size)
	}
	return dst, nil
}

// uvarints decodes the arguments of op: two for a reference, one otherwise.
func uvarints(b []byte, op byte) (args [2]uint64, n int, err error) {
	count := 1
	if op == opRef {
		count = 2
	}
	for i := range count {
		v, m := binary.Uvarint(b[n:])
		if m <= 0 {
			return args, 0, fmt.Errorf("bad or missing argument %d", i+1)
		}
		args[i] = v
		n += m
	}
	return args, n, nil
}
