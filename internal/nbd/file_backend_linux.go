package nbd

import (
	"errors"
	"runtime"
	"syscall"
)

// Linux fallocate(2) modes (linux/falloc.h) and lseek(2) whences
// (linux/fs.h); the syscall package does not name them.
const (
	fallocKeepSize  = 0x01 // FALLOC_FL_KEEP_SIZE
	fallocPunchHole = 0x02 // FALLOC_FL_PUNCH_HOLE
	fallocZeroRange = 0x10 // FALLOC_FL_ZERO_RANGE
	seekData        = 3    // SEEK_DATA
	seekHole        = 4    // SEEK_HOLE
)

func (b *FileBackend) sync() error {
	err := ignoringEINTR(func() error { return syscall.Fdatasync(b.fd) })
	runtime.KeepAlive(b.f)
	return err
}

func (b *FileBackend) punchHole(off, length int64) error {
	err := ignoringEINTR(func() error {
		return syscall.Fallocate(b.fd, fallocPunchHole|fallocKeepSize, off, length)
	})
	runtime.KeepAlive(b.f)
	return err
}

func (b *FileBackend) zeroRange(off, length int64) error {
	err := ignoringEINTR(func() error {
		return syscall.Fallocate(b.fd, fallocZeroRange|fallocKeepSize, off, length)
	})
	runtime.KeepAlive(b.f)
	return err
}

// seekData returns the next data offset at or after off, or -1 when only a
// hole follows (ENXIO).
func (b *FileBackend) seekData(off int64) (int64, error) {
	return b.seek(off, seekData)
}

// seekHole returns the next hole at or after off (the end of the file is one).
func (b *FileBackend) seekHole(off int64) (int64, error) {
	return b.seek(off, seekHole)
}

func (b *FileBackend) seek(off int64, whence int) (int64, error) {
	// lseek moves the shared file offset, which nothing here uses: all I/O is positional.
	pos, err := syscall.Seek(b.fd, off, whence)
	runtime.KeepAlive(b.f)
	if errors.Is(err, syscall.ENXIO) {
		return -1, nil
	}
	return pos, err
}

// unsupported reports whether err means the file system or device cannot
// do the operation (so a fallback should), and whether that holds for every
// range: EINVAL may only mean this range is misaligned for a block device.
func unsupported(err error) (unsup, forGood bool) {
	switch {
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.ENODEV):
		return true, true
	case errors.Is(err, syscall.EINVAL):
		return true, false
	}
	return false, false
}

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
