package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/crc64"
)

// Format constants. docs/format/journal.md is the byte-level description;
// keep the two in step.
const (
	// Version is the segment format version this package writes.
	Version = 1
	// MinVersion and MaxVersion are the window of versions it reads.
	MinVersion = 1
	MaxVersion = 1

	HeaderSize       = 128
	RecordHeaderSize = 48
	TrailerSize      = 64

	// MaxPayload bounds one record's payload (write data or bookmark label).
	MaxPayload = 64 << 20
	// MaxLabel bounds a bookmark's label.
	MaxLabel = 4096
)

var (
	headerMagic  = [8]byte{'S', 'T', 'B', 'Y', 'J', 'S', 'E', 'G'}
	trailerMagic = [8]byte{'S', 'T', 'B', 'Y', 'J', 'E', 'N', 'D'}

	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	ecma       = crc64.MakeTable(crc64.ECMA)
)

// Kind is what a record does.
type Kind uint8

const (
	KindWrite    Kind = 1 // Data is written at Offset of Disk
	KindZero     Kind = 2 // [Offset, Offset+Length) of Disk reads as zeros
	KindTrim     Kind = 3 // [Offset, Offset+Length) of Disk is discarded; reads as zeros
	KindBookmark Kind = 4 // a recovery point; Data is its label
)

func (k Kind) String() string {
	switch k {
	case KindWrite:
		return "write"
	case KindZero:
		return "zero"
	case KindTrim:
		return "trim"
	case KindBookmark:
		return "bookmark"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Record flags. Their meaning depends on the kind.
const (
	// FlagAppConsistent marks a bookmark taken after a successful quiesce.
	FlagAppConsistent uint8 = 1 << 0
	// FlagResync marks a write (or, for an all-zero extent, a zero record)
	// that carries a resynchronised extent's content rather than a captured
	// change: the journal is not a consistent prefix until the resync
	// completes.
	FlagResync uint8 = 1 << 1
	// FlagNoHole marks a zero record whose range must stay allocated.
	FlagNoHole uint8 = 1 << 2

	knownFlags = FlagAppConsistent | FlagResync | FlagNoHole
)

// Header is the fixed start of a segment.
type Header struct {
	Version   uint16
	MachineID [16]byte
	Epoch     uint64
	FirstSeq  uint64 // sequence number of the first record
	PrevChain uint64 // chain value after record FirstSeq-1
	Created   int64  // unix nanoseconds
}

// Prev is the position the segment continues from.
func (h *Header) Prev() Pos { return Pos{Seq: h.FirstSeq - 1, Chain: h.PrevChain} }

// Validate checks the header's fields.
func (h *Header) Validate() error {
	if h.Version < MinVersion || h.Version > MaxVersion {
		return fmt.Errorf("%w: %d (this build reads %d..%d)", ErrBadVersion, h.Version, MinVersion, MaxVersion)
	}
	if h.FirstSeq == 0 {
		return fmt.Errorf("%w: first sequence number is 0", ErrCorrupt)
	}
	if h.Epoch == 0 {
		return fmt.Errorf("%w: epoch is 0", ErrCorrupt)
	}
	if h.FirstSeq == 1 && h.PrevChain != 0 {
		return fmt.Errorf("%w: first segment with non-zero previous chain", ErrCorrupt)
	}
	return nil
}

// Continues returns nil if the segment continues exactly from p, and a
// *PosMismatchError otherwise.
func (h *Header) Continues(p Pos) error {
	if got := h.Prev(); got != p {
		return &PosMismatchError{Want: p, Got: got}
	}
	return nil
}

// AppendHeader appends the encoded header to b.
func AppendHeader(b []byte, h *Header) []byte {
	var buf [HeaderSize]byte
	copy(buf[0:8], headerMagic[:])
	binary.LittleEndian.PutUint16(buf[8:], h.Version)
	binary.LittleEndian.PutUint16(buf[10:], 0)
	binary.LittleEndian.PutUint32(buf[12:], HeaderSize)
	copy(buf[16:32], h.MachineID[:])
	binary.LittleEndian.PutUint64(buf[32:], h.Epoch)
	binary.LittleEndian.PutUint64(buf[40:], h.FirstSeq)
	binary.LittleEndian.PutUint64(buf[48:], h.PrevChain)
	binary.LittleEndian.PutUint64(buf[56:], uint64(h.Created))
	binary.LittleEndian.PutUint32(buf[124:], crc32.Checksum(buf[:124], castagnoli))
	return append(b, buf[:]...)
}

// ParseHeader decodes and validates a segment header.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, fmt.Errorf("%w: header is %d bytes, want %d", ErrTruncated, len(b), HeaderSize)
	}
	if [8]byte(b[0:8]) != headerMagic {
		return h, fmt.Errorf("%w: segment header %q", ErrBadMagic, b[0:8])
	}
	// The version comes before everything else: another version may lay
	// out the rest of the header differently.
	if v := binary.LittleEndian.Uint16(b[8:]); v < MinVersion || v > MaxVersion {
		return h, fmt.Errorf("%w: %d (this build reads %d..%d)", ErrBadVersion, v, MinVersion, MaxVersion)
	}
	if got, want := binary.LittleEndian.Uint32(b[124:]), crc32.Checksum(b[:124], castagnoli); got != want {
		return h, fmt.Errorf("%w: segment header crc %08x, computed %08x", ErrChecksum, got, want)
	}
	if n := binary.LittleEndian.Uint32(b[12:]); n != HeaderSize {
		return h, fmt.Errorf("%w: header size %d, want %d", ErrCorrupt, n, HeaderSize)
	}
	if f := binary.LittleEndian.Uint16(b[10:]); f != 0 {
		return h, fmt.Errorf("%w: unknown header flags %#x", ErrCorrupt, f)
	}
	for _, c := range b[64:124] {
		if c != 0 {
			return h, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
		}
	}
	h.Version = binary.LittleEndian.Uint16(b[8:])
	copy(h.MachineID[:], b[16:32])
	h.Epoch = binary.LittleEndian.Uint64(b[32:])
	h.FirstSeq = binary.LittleEndian.Uint64(b[40:])
	h.PrevChain = binary.LittleEndian.Uint64(b[48:])
	h.Created = int64(binary.LittleEndian.Uint64(b[56:]))
	return h, h.Validate()
}

// Record is one entry of a segment.
type Record struct {
	Kind   Kind
	Flags  uint8
	Disk   uint16
	Seq    uint64
	Offset uint64
	Length uint64 // bytes of the disk the record covers; len(Data) for writes, 0 for bookmarks
	Time   int64  // unix nanoseconds when the agent accepted it
	Data   []byte // write data, or a bookmark's label
}

// End is the first byte after the range the record covers.
func (r *Record) End() uint64 { return r.Offset + r.Length }

// Validate checks the record's fields against its kind.
func (r *Record) Validate() error {
	if r.Flags&^knownFlags != 0 {
		return fmt.Errorf("%w: record %d: unknown flags %#x", ErrCorrupt, r.Seq, r.Flags)
	}
	if r.Seq == 0 {
		return fmt.Errorf("%w: record with sequence number 0", ErrCorrupt)
	}
	switch r.Kind {
	case KindWrite:
		if r.Length != uint64(len(r.Data)) || len(r.Data) == 0 {
			return fmt.Errorf("%w: write %d: length %d with %d data bytes", ErrCorrupt, r.Seq, r.Length, len(r.Data))
		}
		if len(r.Data) > MaxPayload {
			return fmt.Errorf("%w: write %d of %d bytes", ErrRecordLimit, r.Seq, len(r.Data))
		}
	case KindZero, KindTrim:
		if len(r.Data) != 0 || r.Length == 0 {
			return fmt.Errorf("%w: %s %d: length %d with %d data bytes", ErrCorrupt, r.Kind, r.Seq, r.Length, len(r.Data))
		}
	case KindBookmark:
		if r.Offset != 0 || r.Length != 0 || r.Disk != 0 {
			return fmt.Errorf("%w: bookmark %d covers a range", ErrCorrupt, r.Seq)
		}
		if len(r.Data) > MaxLabel {
			return fmt.Errorf("%w: bookmark %d label of %d bytes", ErrRecordLimit, r.Seq, len(r.Data))
		}
	default:
		return fmt.Errorf("%w: record %d: unknown kind %d", ErrCorrupt, r.Seq, r.Kind)
	}
	if r.Offset+r.Length < r.Offset {
		return fmt.Errorf("%w: record %d: range overflows", ErrCorrupt, r.Seq)
	}
	return nil
}

// PutRecordHeader encodes r's header into dst[:RecordHeaderSize] and returns
// the record's CRC, which covers r.Data and then the header. It lets a
// writer send the header and the data with one vectored write, without
// copying the data.
func PutRecordHeader(dst []byte, r *Record) uint32 {
	return PutRecordHeaderCRC(dst, r, PayloadCRC(r.Data))
}

// PayloadCRC is the CRC-32C of a record's payload: the first part of the
// record CRC, which a writer may compute before it takes a lock.
func PayloadCRC(data []byte) uint32 { return crc32.Checksum(data, castagnoli) }

// PutRecordHeaderCRC is PutRecordHeader with the payload's CRC given.
func PutRecordHeaderCRC(dst []byte, r *Record, payloadCRC uint32) uint32 {
	_ = dst[RecordHeaderSize-1]
	dst[0] = byte(r.Kind)
	dst[1] = r.Flags
	binary.LittleEndian.PutUint16(dst[2:], r.Disk)
	binary.LittleEndian.PutUint32(dst[4:], uint32(len(r.Data)))
	binary.LittleEndian.PutUint64(dst[8:], r.Seq)
	binary.LittleEndian.PutUint64(dst[16:], r.Offset)
	binary.LittleEndian.PutUint64(dst[24:], r.Length)
	binary.LittleEndian.PutUint64(dst[32:], uint64(r.Time))
	binary.LittleEndian.PutUint32(dst[40:], 0)
	crc := crc32.Update(payloadCRC, castagnoli, dst[:44])
	binary.LittleEndian.PutUint32(dst[44:], crc)
	return crc
}

// AppendRecord appends the encoded record to b and returns the record's CRC.
func AppendRecord(b []byte, r *Record) ([]byte, uint32) {
	var hdr [RecordHeaderSize]byte
	crc := PutRecordHeader(hdr[:], r)
	b = append(b, hdr[:]...)
	return append(b, r.Data...), crc
}

// EncodedSize is the number of bytes r takes in a segment.
func EncodedSize(r *Record) int { return RecordHeaderSize + len(r.Data) }

// parseRecordHeader decodes the fixed part of a record; the payload length
// is returned so the caller can read it.
func parseRecordHeader(b []byte, r *Record) (payload uint32) {
	r.Kind = Kind(b[0])
	r.Flags = b[1]
	r.Disk = binary.LittleEndian.Uint16(b[2:])
	payload = binary.LittleEndian.Uint32(b[4:])
	r.Seq = binary.LittleEndian.Uint64(b[8:])
	r.Offset = binary.LittleEndian.Uint64(b[16:])
	r.Length = binary.LittleEndian.Uint64(b[24:])
	r.Time = int64(binary.LittleEndian.Uint64(b[32:]))
	return payload
}

// Trailer seals a segment.
type Trailer struct {
	LastSeq uint64 // FirstSeq-1 for a segment without records
	Count   uint64 // records in the segment
	Chain   uint64 // chain value after the last record: the segment checksum
	Payload uint64 // sum of the records' payload bytes
	Sealed  int64  // unix nanoseconds
}

// Pos is the position after the segment's last record.
func (t *Trailer) Pos() Pos { return Pos{Seq: t.LastSeq, Chain: t.Chain} }

// AppendTrailer appends the encoded trailer to b.
func AppendTrailer(b []byte, t *Trailer) []byte {
	var buf [TrailerSize]byte
	copy(buf[0:8], trailerMagic[:])
	binary.LittleEndian.PutUint64(buf[8:], t.LastSeq)
	binary.LittleEndian.PutUint64(buf[16:], t.Count)
	binary.LittleEndian.PutUint64(buf[24:], t.Chain)
	binary.LittleEndian.PutUint64(buf[32:], uint64(t.Sealed))
	binary.LittleEndian.PutUint64(buf[40:], t.Payload)
	binary.LittleEndian.PutUint32(buf[60:], crc32.Checksum(buf[:60], castagnoli))
	return append(b, buf[:]...)
}

func parseTrailer(b []byte) (Trailer, error) {
	var t Trailer
	if [8]byte(b[0:8]) != trailerMagic {
		return t, fmt.Errorf("%w: trailer %q", ErrBadMagic, b[0:8])
	}
	if got, want := binary.LittleEndian.Uint32(b[60:]), crc32.Checksum(b[:60], castagnoli); got != want {
		return t, fmt.Errorf("%w: trailer crc %08x, computed %08x", ErrChecksum, got, want)
	}
	for _, c := range b[48:60] {
		if c != 0 {
			return t, fmt.Errorf("%w: reserved trailer bytes are not zero", ErrCorrupt)
		}
	}
	t.LastSeq = binary.LittleEndian.Uint64(b[8:])
	t.Count = binary.LittleEndian.Uint64(b[16:])
	t.Chain = binary.LittleEndian.Uint64(b[24:])
	t.Sealed = int64(binary.LittleEndian.Uint64(b[32:]))
	t.Payload = binary.LittleEndian.Uint64(b[40:])
	return t, nil
}

// Pos is a position in a machine's journal: the sequence number of the last
// record and the chain value after it. The zero Pos is the start.
type Pos struct {
	Seq   uint64 `json:"seq"`
	Chain uint64 `json:"chain"`
}

// Next is the position after a record with sequence Seq+1 and the given CRC.
func (p Pos) Next(crc uint32) Pos {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], crc)
	return Pos{Seq: p.Seq + 1, Chain: crc64.Update(p.Chain, ecma, b[:])}
}

func (p Pos) String() string { return fmt.Sprintf("seq %d chain %016x", p.Seq, p.Chain) }
