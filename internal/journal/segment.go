package journal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Reader decodes one segment record by record, checking every record's CRC,
// the contiguity of sequence numbers, the chain, and the trailer.
type Reader struct {
	r       *bufio.Reader
	hdr     Header
	pos     Pos
	count   uint64
	payload uint64
	offset  int64 // bytes consumed through the last valid record
	trailer *Trailer
	padding int64
	err     error
	buf     [RecordHeaderSize]byte
}

// NewReader reads and validates the segment header from r.
func NewReader(r io.Reader) (*Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 256<<10)
	}
	var b [HeaderSize]byte
	if _, err := io.ReadFull(br, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: segment header", ErrTruncated)
		}
		return nil, fmt.Errorf("read segment header: %w", err)
	}
	h, err := ParseHeader(b[:])
	if err != nil {
		return nil, err
	}
	return &Reader{r: br, hdr: h, pos: h.Prev(), offset: HeaderSize}, nil
}

// Header is the segment's header.
func (r *Reader) Header() Header { return r.hdr }

// Pos is the position after the last record read.
func (r *Reader) Pos() Pos { return r.pos }

// Offset is the number of bytes of the segment consumed through the last
// valid record (the header included). A writer that recovers an unsealed
// segment truncates it here.
func (r *Reader) Offset() int64 { return r.offset }

// Count is the number of records read.
func (r *Reader) Count() uint64 { return r.count }

// Trailer returns the trailer once Next has returned io.EOF.
func (r *Reader) Trailer() (Trailer, bool) {
	if r.trailer == nil {
		return Trailer{}, false
	}
	return *r.trailer, true
}

// Next decodes the next record into rec, reusing rec.Data's storage. It
// returns io.EOF after a valid trailer, ErrNotSealed when the segment ends
// cleanly after a record but has no trailer (an active segment: the file
// ends, or an all-zero record header starts its preallocated space), and an
// error wrapping ErrCorrupt for anything else; once it has returned an
// error it returns the same one.
func (r *Reader) Next(rec *Record) error {
	if r.err != nil {
		return r.err
	}
	r.err = r.next(rec)
	return r.err
}

func (r *Reader) next(rec *Record) error {
	first, err := r.r.Peek(1)
	if errors.Is(err, io.EOF) {
		return ErrNotSealed
	} else if err != nil {
		return fmt.Errorf("read record at %d: %w", r.offset, err)
	}
	if first[0] == trailerMagic[0] {
		return r.readTrailer()
	}
	if first[0] == 0 {
		// Kind 0 is never written: this is preallocated space after the
		// last record of an active segment.
		if hdr, err := r.r.Peek(RecordHeaderSize); err == nil && isZero(hdr) || errors.Is(err, io.EOF) && isZero(hdr) {
			return ErrNotSealed
		}
	}
	if _, err := io.ReadFull(r.r, r.buf[:]); err != nil {
		return r.short(err, "record header")
	}
	n := parseRecordHeader(r.buf[:], rec)
	if n > MaxPayload {
		return fmt.Errorf("%w: record at offset %d claims %d payload bytes", ErrCorrupt, r.offset, n)
	}
	if err := r.readPayload(rec, int(n)); err != nil {
		return r.short(err, "record payload")
	}
	stored := binary.LittleEndian.Uint32(r.buf[44:])
	if binary.LittleEndian.Uint32(r.buf[40:]) != 0 {
		return fmt.Errorf("%w: record at offset %d: reserved bytes are not zero", ErrCorrupt, r.offset)
	}
	crc := PutRecordHeader(r.buf[:], rec) // re-encoding also proves the fields round-trip
	if crc != stored {
		return fmt.Errorf("%w: record at offset %d (seq %d): stored %08x, computed %08x", ErrChecksum, r.offset, rec.Seq, stored, crc)
	}
	if err := rec.Validate(); err != nil {
		if !errors.Is(err, ErrCorrupt) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return fmt.Errorf("record at offset %d: %w", r.offset, err)
	}
	if rec.Seq != r.pos.Seq+1 {
		return fmt.Errorf("%w: record at offset %d has seq %d, want %d", ErrCorrupt, r.offset, rec.Seq, r.pos.Seq+1)
	}
	r.pos = r.pos.Next(crc)
	r.count++
	r.payload += uint64(n)
	r.offset += int64(RecordHeaderSize) + int64(n)
	return nil
}

// readPayload reads n bytes into rec.Data. It grows the buffer as bytes
// arrive rather than trusting the length field, so a corrupt length cannot
// make it allocate 64 MiB for a short input.
func (r *Reader) readPayload(rec *Record, n int) error {
	const step = 1 << 20
	rec.Data = rec.Data[:0]
	for len(rec.Data) < n {
		m := min(n-len(rec.Data), step)
		if cap(rec.Data) < len(rec.Data)+m {
			rec.Data = append(rec.Data, make([]byte, m)...)
		} else {
			rec.Data = rec.Data[:len(rec.Data)+m]
		}
		if _, err := io.ReadFull(r.r, rec.Data[len(rec.Data)-m:]); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reader) short(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s at offset %d", ErrTruncated, what, r.offset)
	}
	return fmt.Errorf("read %s at offset %d: %w", what, r.offset, err)
}

func (r *Reader) readTrailer() error {
	var b [TrailerSize]byte
	if _, err := io.ReadFull(r.r, b[:]); err != nil {
		return r.short(err, "trailer")
	}
	t, err := parseTrailer(b[:])
	if err != nil {
		return fmt.Errorf("trailer at offset %d: %w", r.offset, err)
	}
	if t.LastSeq != r.pos.Seq || t.Chain != r.pos.Chain || t.Count != r.count || t.Payload != r.payload {
		return fmt.Errorf("%w: trailer says last seq %d chain %016x count %d payload %d; records give %s count %d payload %d",
			ErrCorrupt, t.LastSeq, t.Chain, t.Count, t.Payload, r.pos, r.count, r.payload)
	}
	// A writer that preallocates may be stopped between writing the
	// trailer and cutting the file: only zeros may follow.
	var rest [64 << 10]byte
	for {
		n, err := r.r.Read(rest[:])
		if !isZero(rest[:n]) {
			return fmt.Errorf("%w: bytes after the trailer at offset %d", ErrCorrupt, r.offset+TrailerSize)
		}
		r.padding += int64(n)
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("read after trailer: %w", err)
		}
	}
	r.trailer = &t
	return io.EOF
}

// Padding is the number of zero bytes found after the trailer: the
// preallocated tail of a segment whose writer stopped before cutting it.
func (r *Reader) Padding() int64 { return r.padding }

// Writer encodes one segment to an io.Writer. It assigns sequence numbers.
type Writer struct {
	w       io.Writer
	hdr     Header
	pos     Pos
	count   uint64
	payload uint64
	buf     []byte
	sealed  bool
}

// NewWriter writes h to w and returns a Writer for the segment's records.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if h.Version == 0 {
		h.Version = Version
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	if _, err := w.Write(AppendHeader(nil, &h)); err != nil {
		return nil, fmt.Errorf("write segment header: %w", err)
	}
	return &Writer{w: w, hdr: h, pos: h.Prev()}, nil
}

// Pos is the position after the last record appended.
func (w *Writer) Pos() Pos { return w.pos }

// Append sets rec.Seq to the next sequence number, validates and writes it.
func (w *Writer) Append(rec *Record) error {
	if w.sealed {
		return errors.New("journal: append to a sealed segment")
	}
	rec.Seq = w.pos.Seq + 1
	if err := rec.Validate(); err != nil {
		return err
	}
	var crc uint32
	w.buf, crc = AppendRecord(w.buf[:0], rec)
	if _, err := w.w.Write(w.buf); err != nil {
		return fmt.Errorf("write record %d: %w", rec.Seq, err)
	}
	w.pos = w.pos.Next(crc)
	w.count++
	w.payload += uint64(len(rec.Data))
	return nil
}

// Seal writes the trailer, once. sealedAt is unix nanoseconds.
func (w *Writer) Seal(sealedAt int64) (Trailer, error) {
	if w.sealed {
		return Trailer{}, errors.New("journal: segment already sealed")
	}
	t := Trailer{LastSeq: w.pos.Seq, Count: w.count, Chain: w.pos.Chain, Payload: w.payload, Sealed: sealedAt}
	if _, err := w.w.Write(AppendTrailer(nil, &t)); err != nil {
		return t, fmt.Errorf("write trailer: %w", err)
	}
	w.sealed = true
	return t, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
