package loadgen

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
)

// Block format constants; doc.go documents the layout byte by byte.
const (
	Magic            = "STBYLGEN"
	Version          = 1
	HeaderSize       = 64
	MinBlockSize     = 512
	DefaultBlockSize = 4096

	checksumOffset = 60
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is what a block says about itself.
type Header struct {
	BlockSize int    // bytes in the block
	RunID     uint64 // the generator run that wrote it
	Seq       uint64 // the write's machine-wide sequence number, from 1
	Offset    int64  // byte offset of the block on its disk
	Disk      int    // disk index
	Index     int    // block index within the write, from 0
	Count     int    // blocks in the write
}

// Validate reports whether h can be encoded.
func (h Header) Validate() error {
	switch {
	case h.BlockSize < MinBlockSize || h.BlockSize&(h.BlockSize-1) != 0:
		return fmt.Errorf("block size %d: want a power of two ≥ %d", h.BlockSize, MinBlockSize)
	case h.Seq == 0:
		return fmt.Errorf("seq 0: sequence numbers start at 1")
	case h.Offset < 0 || h.Offset%int64(h.BlockSize) != 0:
		return fmt.Errorf("offset %d: want a non-negative multiple of %d", h.Offset, h.BlockSize)
	case h.Disk < 0 || h.Disk > 1<<31:
		return fmt.Errorf("disk %d out of range", h.Disk)
	case h.Count < 1 || h.Count > 1<<31 || h.Index < 0 || h.Index >= h.Count:
		return fmt.Errorf("block %d of %d: want 0 ≤ index < count", h.Index, h.Count)
	}
	return nil
}

// Encode fills b, which must be h.BlockSize long, with the block h describes.
// It panics on an invalid header or a wrong length: callers build headers
// themselves.
func Encode(b []byte, h Header) {
	if err := h.Validate(); err != nil {
		panic("loadgen: encode: " + err.Error())
	}
	if len(b) != h.BlockSize {
		panic(fmt.Sprintf("loadgen: encode: buffer of %d bytes for block size %d", len(b), h.BlockSize))
	}
	copy(b[0:8], Magic)
	binary.BigEndian.PutUint16(b[8:], Version)
	binary.BigEndian.PutUint16(b[10:], HeaderSize)
	binary.BigEndian.PutUint32(b[12:], uint32(h.BlockSize))
	binary.BigEndian.PutUint64(b[16:], h.RunID)
	binary.BigEndian.PutUint64(b[24:], h.Seq)
	binary.BigEndian.PutUint64(b[32:], uint64(h.Offset))
	binary.BigEndian.PutUint32(b[40:], uint32(h.Disk))
	binary.BigEndian.PutUint32(b[44:], uint32(h.Index))
	binary.BigEndian.PutUint32(b[48:], uint32(h.Count))
	clear(b[52:HeaderSize])
	fill(b)
	binary.BigEndian.PutUint32(b[checksumOffset:], checksum(b))
}

// fill writes the filler derived from the header's bytes 16..48.
func fill(b []byte) {
	var seed [32]byte
	copy(seed[:], b[16:48])
	rand.NewChaCha8(seed).Read(b[HeaderSize:])
}

// checksum is the CRC-32C of b with the checksum field read as zero.
func checksum(b []byte) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, b[:checksumOffset])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, b[checksumOffset+4:])
}

// DecodeBlock returns the header of block b. It returns ErrNotBlock when b
// does not start with the magic, and ErrVersion, ErrBlockSize, ErrChecksum,
// ErrHeader or ErrFiller (wrapped, with the header read so far) when it does but is
// not an intact block of len(b) bytes. scratch, when len(b) long, avoids an
// allocation.
func DecodeBlock(b, scratch []byte) (Header, error) {
	if len(b) < HeaderSize || string(b[0:8]) != Magic {
		return Header{}, ErrNotBlock
	}
	h := Header{
		BlockSize: int(binary.BigEndian.Uint32(b[12:])),
		RunID:     binary.BigEndian.Uint64(b[16:]),
		Seq:       binary.BigEndian.Uint64(b[24:]),
		Offset:    int64(binary.BigEndian.Uint64(b[32:])),
		Disk:      int(binary.BigEndian.Uint32(b[40:])),
		Index:     int(binary.BigEndian.Uint32(b[44:])),
		Count:     int(binary.BigEndian.Uint32(b[48:])),
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != Version || binary.BigEndian.Uint16(b[10:]) != HeaderSize {
		return h, fmt.Errorf("version %d: %w", v, ErrVersion)
	}
	if h.BlockSize != len(b) {
		return h, fmt.Errorf("header says %d bytes, block has %d: %w", h.BlockSize, len(b), ErrBlockSize)
	}
	if got, want := checksum(b), binary.BigEndian.Uint32(b[checksumOffset:]); got != want {
		return h, fmt.Errorf("crc32c %08x, header says %08x: %w", got, want, ErrChecksum)
	}
	if err := h.Validate(); err != nil {
		return h, fmt.Errorf("%v: %w", err, ErrHeader)
	}
	if len(scratch) != len(b) {
		scratch = make([]byte, len(b))
	}
	Encode(scratch, h)
	if !bytes.Equal(scratch, b) {
		return h, ErrFiller
	}
	return h, nil
}
