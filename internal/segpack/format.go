package segpack

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/standby-dr/standby/internal/journal"
)

// Format constants. docs/format/segpack.md is the byte-level description;
// keep the two in step.
const (
	// Version is the packed format version this package writes.
	Version = 1
	// MinVersion and MaxVersion are the window of versions it reads.
	MinVersion = 1
	MaxVersion = 1

	// HeaderSize is the size of the fixed header of a packed segment.
	HeaderSize = 64

	// MaxSize bounds the verbatim length of one segment. A journal segment
	// is 16 MiB by default and a record at most 64 MiB, so this is far
	// above anything an agent writes; it exists so that a damaged length
	// cannot make Unpack allocate without bound.
	MaxSize = 1 << 30

	// MinBlockSize and MaxBlockSize bound Options.BlockSize.
	MinBlockSize = 512
	MaxBlockSize = 1 << 20
	// MaxWindow bounds Options.Window.
	MaxWindow = 1 << 30

	// DefaultBlockSize and DefaultWindow are what a zero Options gets.
	DefaultBlockSize = 4096
	DefaultWindow    = 32 << 20

	// zstdWindow is the largest zstd window a packer uses and an unpacker
	// accepts.
	zstdWindow = 8 << 20
)

// Header flags.
const (
	// FlagZstd marks a body that is a zstd frame of the op stream rather
	// than the op stream itself.
	FlagZstd uint16 = 1 << 0

	knownFlags = FlagZstd
)

// Op codes of the op stream.
const (
	opLiteral = 0x01 // n: the next n bytes of the op stream, verbatim
	opZero    = 0x02 // n: n zero bytes
	opBlock   = 0x03 // k: the next k×block_size bytes, each block entering the window
	opRef     = 0x04 // d, k: k blocks from the window, starting d blocks back
)

var (
	magic      = [8]byte{'S', 'T', 'B', 'Y', 'P', 'A', 'C', 'K'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// minSize is the smallest sealed segment: a header and a trailer.
const minSize = journal.HeaderSize + journal.TrailerSize

// MaxOpsLen bounds the op stream of a segment of size verbatim bytes. A
// packer's op stream never exceeds it (docs/format/segpack.md shows why),
// and an unpacker rejects a header that claims more, so the op buffer it
// allocates is bounded by the declared (and capped) verbatim length.
func MaxOpsLen(size uint64) uint64 { return size + size/32 + 64 }

// Window is the state of a stream's dedup window: its geometry and how many
// blocks have entered it since the stream started (or was Reset). Both ends
// of a stream evolve it the same way; a packed segment records the state it
// was packed against and Unpack refuses it unless its own state is equal.
type Window struct {
	BlockSize uint32 `json:"block_size"`
	Blocks    uint32 `json:"blocks"` // capacity in blocks; 0 when dedup is disabled
	Seq       uint64 `json:"seq"`    // blocks that have entered the window so far
}

func (w Window) String() string {
	if w.Blocks == 0 {
		return fmt.Sprintf("block size %d, dedup off", w.BlockSize)
	}
	return fmt.Sprintf("block size %d, %d blocks, seq %d", w.BlockSize, w.Blocks, w.Seq)
}

// Header is the fixed start of a packed segment.
type Header struct {
	Version uint16
	Flags   uint16
	Window  Window // the dedup window before this segment
	Size    uint64 // verbatim length of the segment
	OpsLen  uint64 // length of the op stream
	BodyLen uint64 // bytes after the header: the op stream, or its zstd frame
	CRC     uint32 // CRC-32C of the verbatim segment
}

// Validate checks the header's fields against each other and the limits.
func (h *Header) Validate() error {
	if h.Version < MinVersion || h.Version > MaxVersion {
		return fmt.Errorf("%w: %d (this build reads %d..%d)", ErrBadVersion, h.Version, MinVersion, MaxVersion)
	}
	if h.Flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, h.Flags)
	}
	if bs := h.Window.BlockSize; bs < MinBlockSize || bs > MaxBlockSize {
		return fmt.Errorf("%w: block size %d outside %d..%d", ErrCorrupt, bs, MinBlockSize, MaxBlockSize)
	}
	if uint64(h.Window.Blocks)*uint64(h.Window.BlockSize) > MaxWindow {
		return fmt.Errorf("%w: window of %d blocks of %d bytes is over %d bytes", ErrCorrupt, h.Window.Blocks, h.Window.BlockSize, MaxWindow)
	}
	if h.Window.Blocks == 0 && h.Window.Seq != 0 {
		return fmt.Errorf("%w: window seq %d with dedup off", ErrCorrupt, h.Window.Seq)
	}
	if h.Size < minSize || h.Size > MaxSize {
		return fmt.Errorf("%w: segment size %d outside %d..%d", ErrCorrupt, h.Size, minSize, MaxSize)
	}
	if h.OpsLen == 0 || h.OpsLen > MaxOpsLen(h.Size) {
		return fmt.Errorf("%w: op stream of %d bytes for a segment of %d", ErrCorrupt, h.OpsLen, h.Size)
	}
	if h.Flags&FlagZstd == 0 && h.BodyLen != h.OpsLen {
		return fmt.Errorf("%w: uncompressed body of %d bytes with an op stream of %d", ErrCorrupt, h.BodyLen, h.OpsLen)
	}
	if h.Flags&FlagZstd != 0 && (h.BodyLen == 0 || h.BodyLen >= h.OpsLen) {
		return fmt.Errorf("%w: compressed body of %d bytes with an op stream of %d", ErrCorrupt, h.BodyLen, h.OpsLen)
	}
	return nil
}

// putHeader encodes h into b[:HeaderSize].
func putHeader(b []byte, h *Header) {
	_ = b[HeaderSize-1]
	copy(b[0:8], magic[:])
	binary.LittleEndian.PutUint16(b[8:], h.Version)
	binary.LittleEndian.PutUint16(b[10:], h.Flags)
	binary.LittleEndian.PutUint32(b[12:], HeaderSize)
	binary.LittleEndian.PutUint32(b[16:], h.Window.BlockSize)
	binary.LittleEndian.PutUint32(b[20:], h.Window.Blocks)
	binary.LittleEndian.PutUint64(b[24:], h.Window.Seq)
	binary.LittleEndian.PutUint64(b[32:], h.Size)
	binary.LittleEndian.PutUint64(b[40:], h.OpsLen)
	binary.LittleEndian.PutUint64(b[48:], h.BodyLen)
	binary.LittleEndian.PutUint32(b[56:], h.CRC)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
}

// ParseHeader decodes and validates the header at the start of a packed
// segment. It checks, in order: length, magic, version, header CRC, header
// size, then Validate.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: header is %d bytes, want %d", ErrTruncated, len(b), HeaderSize)
	}
	if [8]byte(b[0:8]) != magic {
		return h, fmt.Errorf("%w: %q", ErrBadMagic, b[0:8])
	}
	// The version comes before the CRC: another version may lay out the
	// rest of the header differently.
	if v := binary.LittleEndian.Uint16(b[8:]); v < MinVersion || v > MaxVersion {
		return h, fmt.Errorf("%w: %d (this build reads %d..%d)", ErrBadVersion, v, MinVersion, MaxVersion)
	}
	if got, want := binary.LittleEndian.Uint32(b[60:]), crc32.Checksum(b[:60], castagnoli); got != want {
		return h, fmt.Errorf("%w: header crc %08x, computed %08x", ErrChecksum, got, want)
	}
	if n := binary.LittleEndian.Uint32(b[12:]); n != HeaderSize {
		return h, fmt.Errorf("%w: header size %d, want %d", ErrCorrupt, n, HeaderSize)
	}
	h.Version = binary.LittleEndian.Uint16(b[8:])
	h.Flags = binary.LittleEndian.Uint16(b[10:])
	h.Window.BlockSize = binary.LittleEndian.Uint32(b[16:])
	h.Window.Blocks = binary.LittleEndian.Uint32(b[20:])
	h.Window.Seq = binary.LittleEndian.Uint64(b[24:])
	h.Size = binary.LittleEndian.Uint64(b[32:])
	h.OpsLen = binary.LittleEndian.Uint64(b[40:])
	h.BodyLen = binary.LittleEndian.Uint64(b[48:])
	h.CRC = binary.LittleEndian.Uint32(b[56:])
	return h, h.Validate()
}
