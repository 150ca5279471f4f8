package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// FileBackend serves a regular file or a block device. Reads and writes are
// pread/pwrite; FUA and Flush are fdatasync; Zero and Trim punch holes or
// zero ranges with fallocate where the file system allows, and fall back to
// writing zeros (Zero) or doing nothing (Trim, which is only a hint);
// Extents uses SEEK_DATA/SEEK_HOLE. On systems without those calls the
// fallbacks are used throughout.
//
// The caller owns the file: it must stay open while the backend is in use,
// and closing it is the caller's job.
type FileBackend struct {
	f    *os.File
	fd   int
	size int64

	noPunch     atomic.Bool // PUNCH_HOLE is not supported here
	noZeroRange atomic.Bool // ZERO_RANGE is not supported here
	noSeekData  atomic.Bool // SEEK_DATA/SEEK_HOLE are not supported here
}

var _ Backend = (*FileBackend)(nil)

// NewFileBackend serves f, whose size is taken now: a regular file's
// length, or a block device's capacity.
func NewFileBackend(f *os.File) (*FileBackend, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file backend: %w", err)
	}
	size := fi.Size()
	switch {
	case fi.Mode().IsRegular():
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		// A block device reports size 0 in stat; its end tells the capacity.
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, fmt.Errorf("file backend: size of %s: %w", f.Name(), err)
		}
	default:
		return nil, fmt.Errorf("file backend: %s is neither a regular file nor a block device", f.Name())
	}
	return &FileBackend{f: f, fd: int(f.Fd()), size: size}, nil
}

// Size is the size taken when the backend was made.
func (b *FileBackend) Size() int64 { return b.size }

// ReadAt fills p from off. Bytes past the file's current end (a file
// truncated under the backend) read as zeros.
func (b *FileBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	n, err := b.f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	return err
}

// WriteAt writes p at off; with fua it returns once the data is durable.
func (b *FileBackend) WriteAt(_ context.Context, p []byte, off int64, fua bool) error {
	if _, err := b.f.WriteAt(p, off); err != nil {
		return err
	}
	if fua {
		return b.sync()
	}
	return nil
}

// Flush makes every completed write durable (fdatasync).
func (b *FileBackend) Flush(context.Context) error {
	return b.sync()
}

// Zero makes the range read as zeros: a punched hole when mayTrim, else
// allocated zeros, else written zeros.
func (b *FileBackend) Zero(ctx context.Context, off, length int64, mayTrim, fua bool) error {
	done := false
	var err error
	if mayTrim {
		done, err = try(&b.noPunch, func() error { return b.punchHole(off, length) })
	}
	if !done && err == nil {
		done, err = try(&b.noZeroRange, func() error { return b.zeroRange(off, length) })
	}
	if !done && err == nil {
		err = b.writeZeros(ctx, off, length)
	}
	if err == nil && fua {
		err = b.sync()
	}
	return err
}

// Trim punches a hole; where that is unsupported it does nothing, as a trim
// is a hint (§Request types, NBD_CMD_TRIM).
func (b *FileBackend) Trim(_ context.Context, off, length int64, fua bool) error {
	_, err := try(&b.noPunch, func() error { return b.punchHole(off, length) })
	if err == nil && fua {
		err = b.sync()
	}
	return err
}

// try runs op unless *off says it is known to be unsupported. It reports
// whether op did the work; an error is a real failure. An op refused for
// good (not just for this range) sets *off.
func try(off *atomic.Bool, op func() error) (bool, error) {
	if off.Load() {
		return false, nil
	}
	err := op()
	if err == nil {
		return true, nil
	}
	unsup, forGood := unsupported(err)
	if !unsup {
		return false, err
	}
	if forGood {
		off.Store(true)
	}
	return false, nil
}

// maxExtents bounds one Extents answer; callers ask again for the rest.
const maxExtents = 1024

// Extents walks SEEK_DATA/SEEK_HOLE from off. Holes read as zeros, so they
// are reported Hole and Zero. Without SEEK_DATA the whole range is data.
func (b *FileBackend) Extents(_ context.Context, off, length int64) ([]Extent, error) {
	end := min(off+length, b.size)
	if length <= 0 || off >= end {
		return nil, fmt.Errorf("file backend: extents of %d+%d outside size %d", off, length, b.size)
	}
	if b.noSeekData.Load() {
		return []Extent{{Length: end - off}}, nil
	}
	var exts []Extent
	for off < end && len(exts) < maxExtents {
		data, err := b.seekData(off)
		if err != nil {
			if unsup, _ := unsupported(err); unsup && len(exts) == 0 {
				b.noSeekData.Store(true)
				return []Extent{{Length: end - off}}, nil
			}
			return nil, err
		}
		if data < 0 || data > end {
			data = end // no data after off: a hole to the end
		}
		if data > off {
			exts = append(exts, Extent{Length: data - off, Hole: true, Zero: true})
			off = data
			continue
		}
		hole, err := b.seekHole(off)
		if err != nil {
			return nil, err
		}
		if hole <= off || hole > end {
			hole = end
		}
		exts = append(exts, Extent{Length: hole - off})
		off = hole
	}
	return exts, nil
}

// writeZeros writes zeros in chunks; the fallback when fallocate cannot.
func (b *FileBackend) writeZeros(ctx context.Context, off, length int64) error {
	for length > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(length, int64(len(zeroChunk)))
		if _, err := b.f.WriteAt(zeroChunk[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

var zeroChunk = make([]byte, 1<<20)
