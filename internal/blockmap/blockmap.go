package blockmap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
)

// Limits and defaults of the parameters.
const (
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 4 << 20
	DefaultBlockSize = 64 << 10

	MinFanout     = 2
	MaxFanout     = 1024
	DefaultFanout = 64
)

// HashSize is the size of a block or node hash in bytes.
const HashSize = sha256.Size

// Hash is the hash of a block or of a tree node.
type Hash [HashSize]byte

// ZeroHash is the hash of a block of only zero bytes (of any length), and of
// a tree node whose children are all ZeroHash. It is not SHA-256 of anything:
// it is a constant, so zero and hole blocks are recognisable without hashing.
var ZeroHash Hash

// IsZero reports whether h is ZeroHash: the block (or every block under the
// node) reads as zeros.
func (h Hash) IsZero() bool { return h == ZeroHash }

// String returns h in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// HashBlock returns the hash of one block: ZeroHash if b holds only zero
// bytes, else SHA-256 of b padded with zeros to blockSize bytes. len(b) must
// not exceed blockSize.
func HashBlock(b []byte, blockSize int) Hash {
	if AllZero(b) {
		return ZeroHash
	}
	if len(b) == blockSize {
		return sha256.Sum256(b)
	}
	d := sha256.New()
	d.Write(b)
	var zeros [4096]byte
	for pad := blockSize - len(b); pad > 0; {
		n := min(pad, len(zeros))
		d.Write(zeros[:n])
		pad -= n
	}
	var h Hash
	d.Sum(h[:0])
	return h
}

// AllZero reports whether b holds only zero bytes: the first byte is zero
// and every byte equals the one before it (memequal, without a zero buffer).
func AllZero(b []byte) bool {
	return len(b) == 0 || (b[0] == 0 && bytes.Equal(b[1:], b[:len(b)-1]))
}

// Params are what two sides must agree on to compare their trees.
type Params struct {
	BlockSize int   // bytes per block: a power of two in [MinBlockSize, MaxBlockSize]
	Fanout    int   // children per tree node, in [MinFanout, MaxFanout]; 0 for a Map
	Size      int64 // bytes of the disk (for a comparison: the union of both sides)
}

// Blocks returns the number of blocks of Size bytes: the last may be short.
func (p Params) Blocks() int64 { return blocks(p.Size, p.BlockSize) }

func blocks(size int64, blockSize int) int64 {
	n := size / int64(blockSize) // not (size+bs-1)/bs: that overflows near MaxInt64
	if size%int64(blockSize) != 0 {
		n++
	}
	return n
}

func validBlockSize(bs int) bool {
	return bs >= MinBlockSize && bs <= MaxBlockSize && bits.OnesCount(uint(bs)) == 1
}

// Validate checks the parameters of a tree; it returns an error wrapping
// ErrParams.
func (p Params) Validate() error {
	if !validBlockSize(p.BlockSize) {
		return fmt.Errorf("%w: block size %d is not a power of two in [%d, %d]", ErrParams, p.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if p.Fanout < MinFanout || p.Fanout > MaxFanout {
		return fmt.Errorf("%w: fan-out %d is not in [%d, %d]", ErrParams, p.Fanout, MinFanout, MaxFanout)
	}
	if p.Size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrParams, p.Size)
	}
	return nil
}

// Map is the block hashes of one disk. Hashes[i] is the hash of bytes
// [i·BlockSize, (i+1)·BlockSize) of the disk; len(Hashes) is
// ⌈Size/BlockSize⌉. A Map is not modified by this package once returned.
type Map struct {
	BlockSize int
	Size      int64
	Hashes    []Hash
}

// Validate checks that the block size is allowed, the size is not negative
// and there is exactly one hash per block.
func (m *Map) Validate() error {
	if !validBlockSize(m.BlockSize) {
		return fmt.Errorf("%w: block size %d is not a power of two in [%d, %d]", ErrParams, m.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if m.Size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrParams, m.Size)
	}
	if n := blocks(m.Size, m.BlockSize); int64(len(m.Hashes)) != n {
		return fmt.Errorf("%w: %d hashes for %d blocks", ErrParams, len(m.Hashes), n)
	}
	return nil
}

// Block returns the hash of block i, ZeroHash past the end of the map.
func (m *Map) Block(i int64) Hash {
	if i < int64(len(m.Hashes)) {
		return m.Hashes[i]
	}
	return ZeroHash
}

// Range is a byte range of a disk, [Off, Off+Len), made of whole blocks
// except that it ends at the end of the disk (the union of both sides).
type Range struct {
	Off int64
	Len int64
}

// End returns Off+Len.
func (r Range) End() int64 { return r.Off + r.Len }

func (r Range) String() string { return fmt.Sprintf("[%d, %d)", r.Off, r.End()) }

// rangeBuilder merges differing blocks, given in increasing order, into
// ranges of adjacent blocks.
type rangeBuilder struct {
	blockSize int64
	size      int64
	out       []Range
}

func (b *rangeBuilder) add(block int64) {
	off := block * b.blockSize
	end := min(off+b.blockSize, b.size)
	if n := len(b.out); n > 0 && b.out[n-1].End() == off {
		b.out[n-1].Len = end - b.out[n-1].Off
		return
	}
	b.out = append(b.out, Range{Off: off, Len: end - off})
}

// Diff returns the ranges of blocks that differ between a and b, in order,
// adjacent blocks merged, over the union of both sizes: past the end of the
// shorter map, a block differs unless it is zero on the longer side. Both
// maps must have the same block size (else an error wrapping ErrMismatch)
// and be valid. Diff never reports a block whose hashes are equal.
func Diff(a, b *Map) ([]Range, error) {
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("diff: %w", err)
	}
	if a.BlockSize != b.BlockSize {
		return nil, fmt.Errorf("diff: %w: block size %d and %d", ErrMismatch, a.BlockSize, b.BlockSize)
	}
	rb := rangeBuilder{blockSize: int64(a.BlockSize), size: max(a.Size, b.Size)}
	n := max(len(a.Hashes), len(b.Hashes))
	for i := range int64(n) {
		if a.Block(i) != b.Block(i) {
			rb.add(i)
		}
	}
	return rb.out, nil
}
