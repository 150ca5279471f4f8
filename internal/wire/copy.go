package wire

import (
	"encoding/binary"
	"fmt"
)

// A Copy frame carries one run of a disk's blocks during a copy (see
// Rebase.Copy): a 24-byte header, then the data.
//
//	offset  size  field
//	0       1     flags: CopyZero (the run reads as zeros; no data follows),
//	              CopyZstd (the data is one zstd frame of Length bytes)
//	1       3     reserved, zero
//	4       4     disk index, big endian
//	8       8     byte offset in the disk
//	16      8     length of the run in bytes
//	24      ...   data: Length bytes, or the zstd frame; nothing with CopyZero
const CopyHeaderSize = 24

// Copy frame flags.
const (
	CopyZero uint8 = 1 << 0
	CopyZstd uint8 = 1 << 1
)

// MaxCopyRun bounds the bytes of disk one Copy frame with data describes.
const MaxCopyRun = 16 << 20

// CopyFrameData is the most data an agent puts in one Copy frame, what
// the servers size their receive buffers for.
const CopyFrameData = 4 << 20

// CopyHeader describes a Copy frame.
type CopyHeader struct {
	Flags  uint8
	Disk   uint32
	Offset uint64
	Length uint64
}

// Header returns h's 24 header bytes (for Conn.SendParts with the data).
func (h CopyHeader) Header() []byte { return AppendCopy(make([]byte, 0, CopyHeaderSize), h, nil) }

// AppendCopy appends a Copy frame's payload, h then data, to dst.
func AppendCopy(dst []byte, h CopyHeader, data []byte) []byte {
	var b [CopyHeaderSize]byte
	b[0] = h.Flags
	binary.BigEndian.PutUint32(b[4:], h.Disk)
	binary.BigEndian.PutUint64(b[8:], h.Offset)
	binary.BigEndian.PutUint64(b[16:], h.Length)
	dst = append(dst, b[:]...)
	return append(dst, data...)
}

// ParseCopy splits a Copy frame's payload into its header and data and
// checks what can be checked without the disk's size: the flags, the
// reserved bytes, a run's length, and that plain data is Length bytes.
func ParseCopy(p []byte) (CopyHeader, []byte, error) {
	if len(p) < CopyHeaderSize {
		return CopyHeader{}, nil, fmt.Errorf("%w: copy frame of %d bytes, the header alone is %d", ErrProtocol, len(p), CopyHeaderSize)
	}
	h := CopyHeader{Flags: p[0], Disk: binary.BigEndian.Uint32(p[4:]), Offset: binary.BigEndian.Uint64(p[8:]), Length: binary.BigEndian.Uint64(p[16:])}
	data := p[CopyHeaderSize:]
	switch {
	case p[1] != 0 || p[2] != 0 || p[3] != 0:
		return h, nil, fmt.Errorf("%w: copy frame with reserved bytes set", ErrProtocol)
	case h.Flags&^(CopyZero|CopyZstd) != 0, h.Flags == CopyZero|CopyZstd:
		return h, nil, fmt.Errorf("%w: copy frame flags %#x", ErrProtocol, h.Flags)
	case h.Length == 0 || h.Offset+h.Length < h.Offset:
		return h, nil, fmt.Errorf("%w: copy run of %d bytes at %d", ErrProtocol, h.Length, h.Offset)
	case h.Flags&CopyZero != 0 && len(data) != 0:
		return h, nil, fmt.Errorf("%w: zero copy run with %d bytes of data", ErrProtocol, len(data))
	case h.Flags&CopyZero == 0 && h.Length > MaxCopyRun:
		return h, nil, fmt.Errorf("%w: copy run of %d bytes, at most %d", ErrProtocol, h.Length, MaxCopyRun)
	case h.Flags == 0 && uint64(len(data)) != h.Length:
		return h, nil, fmt.Errorf("%w: copy run of %d bytes with %d bytes of data", ErrProtocol, h.Length, len(data))
	}
	return h, data, nil
}
