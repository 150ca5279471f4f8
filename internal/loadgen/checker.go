package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Initial says what the disks held before the run.
type Initial int

const (
	// InitialZeros: every block not written by the run reads as zeros.
	InitialZeros Initial = iota
	// InitialForeign: a block not written by the run may hold anything
	// except an intact or damaged block of this run.
	InitialForeign
)

func (i Initial) String() string {
	if i == InitialForeign {
		return "foreign"
	}
	return "zeros"
}

// Images are the disks to check, in the log's disk order.
type Images struct {
	Disks   []io.ReaderAt // each at least the log's DiskSizes long
	Initial Initial
}

// Result is what Check proved about consistent images.
type Result struct {
	// Cut is the highest seq C such that writes 1..C are all applied.
	Cut uint64
	// Max is the highest seq applied. Max == Cut for a sequential log;
	// with concurrent writes, writes between them may be missing.
	Max uint64
	// Applied is the number of writes applied.
	Applied int
}

// InconsistencyError says why images are not a consistent state: the block
// at (Disk, Offset) holds write Got but should hold write Want (0 stands
// for initial content in both).
type InconsistencyError struct {
	Disk   int
	Offset int64
	Want   uint64
	Got    uint64
	Reason string
}

func (e *InconsistencyError) Error() string {
	return fmt.Sprintf("disk %d block at %d: want %s, found %s: %s",
		e.Disk, e.Offset, writeName(e.Want), writeName(e.Got), e.Reason)
}

func writeName(seq uint64) string {
	if seq == 0 {
		return "initial content"
	}
	return fmt.Sprintf("write %d", seq)
}

// location names a block.
type location struct {
	disk int
	off  int64
}

func (l location) String() string { return fmt.Sprintf("disk %d block at %d", l.disk, l.off) }

// scanBlocks reads every block of every disk and calls visit with the block's
// location, the seqs of the log's writes touching it and the write found in
// it (0: initial content). It returns an *InconsistencyError for a block
// that is neither initial content nor an intact block of the log in its
// right place, and visit's first error.
func scanBlocks(l *Log, im Images, visit func(at location, touching []uint64, found uint64) error) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if len(im.Disks) != len(l.DiskSizes) {
		return fmt.Errorf("check: %d images for %d disks in the log", len(im.Disks), len(l.DiskSizes))
	}
	x, err := newIndex(l)
	if err != nil {
		return err
	}
	bs := l.BlockSize
	const chunkBlocks = 256
	buf := make([]byte, chunkBlocks*bs)
	scratch := make([]byte, bs)
	for d, size := range l.DiskSizes {
		for chunk := int64(0); chunk < size; chunk += int64(len(buf)) {
			p := buf[:min(int64(len(buf)), size-chunk)]
			if n, err := im.Disks[d].ReadAt(p, chunk); n < len(p) {
				return fmt.Errorf("check: read disk %d at %d: %w", d, chunk+int64(n), readErr(err))
			}
			for i := 0; i < len(p); i += bs {
				at := location{d, chunk + int64(i)}
				touching := x.writes(d, at.off/int64(bs))
				found, err := identify(l, im.Initial, at, p[i:i+bs], scratch)
				if err != nil {
					return err
				}
				if err := visit(at, touching, found); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// readErr explains a short read: io.ErrUnexpectedEOF when the image is
// shorter than the disk.
func readErr(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// identify returns the write whose block b is, or 0 for initial content.
func identify(l *Log, initial Initial, at location, b, scratch []byte) (uint64, error) {
	bad := func(got uint64, format string, a ...any) (uint64, error) {
		return 0, &InconsistencyError{Disk: at.disk, Offset: at.off, Got: got, Reason: fmt.Sprintf(format, a...)}
	}
	h, err := DecodeBlock(b, scratch)
	switch {
	case errors.Is(err, ErrNotBlock):
		if initial == InitialZeros && !allZero(b) {
			return bad(0, "block is neither zeros nor a block of this run")
		}
		return 0, nil
	case h.RunID != l.RunID:
		if initial == InitialZeros {
			return bad(0, "block of another run (id %#x), initial content should be zeros", h.RunID)
		}
		return 0, nil
	case err != nil:
		return bad(h.Seq, "corrupted block of this run: %v", err)
	case h.Disk != at.disk || h.Offset != at.off:
		return bad(h.Seq, "misplaced block: it was written to disk %d at %d", h.Disk, h.Offset)
	case h.Seq > uint64(len(l.Writes)):
		return bad(h.Seq, "write %d is not in the log (%d writes)", h.Seq, len(l.Writes))
	}
	w := l.Write(h.Seq)
	if i, ok := w.touches(at.disk, at.off, l.BlockSize); !ok || i != h.Index || w.Blocks != h.Count {
		return bad(h.Seq, "header says block %d of %d, log has write %d as %d blocks at disk %d offset %d",
			h.Index, h.Count, w.Seq, w.Blocks, w.Disk, w.Offset)
	}
	return h.Seq, nil
}

var zeros = make([]byte, 64<<10)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// CheckExact reports whether the images hold exactly the state after
// writes 1..n applied in seq order: every block holds the last write ≤ n
// touching it, or initial content. It is meant for sequential logs; with
// concurrent overlapping writes, seq order need not be the order applied.
func CheckExact(l *Log, im Images, n uint64) error {
	if n > uint64(len(l.Writes)) {
		return fmt.Errorf("check exact: prefix %d is longer than the log (%d writes)", n, len(l.Writes))
	}
	return scanBlocks(l, im, func(at location, touching []uint64, found uint64) error {
		var want uint64
		for _, s := range touching {
			if s <= n {
				want = s
			}
		}
		if found == want {
			return nil
		}
		reason := fmt.Sprintf("state after writes 1..%d", n)
		if found > n {
			reason += fmt.Sprintf(": write %d is later than the prefix", found)
		} else if want != 0 {
			reason += fmt.Sprintf(": write %d is missing", want)
		}
		return &InconsistencyError{Disk: at.disk, Offset: at.off, Want: want, Got: found, Reason: reason}
	})
}
