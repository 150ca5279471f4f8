//go:build !linux

package nbd

import "errors"

// Outside Linux the FileBackend uses its portable fallbacks: fsync for
// durability, written zeros for Zero, no-op Trim, and "all data" extents.

var errUnsupported = errors.New("not supported on this platform")

func (b *FileBackend) sync() error                       { return b.f.Sync() }
func (b *FileBackend) punchHole(off, length int64) error { return errUnsupported }
func (b *FileBackend) zeroRange(off, length int64) error { return errUnsupported }
func (b *FileBackend) seekData(off int64) (int64, error) { return 0, errUnsupported }
func (b *FileBackend) seekHole(off int64) (int64, error) { return 0, errUnsupported }
func unsupported(err error) (bool, bool) {
	u := errors.Is(err, errUnsupported)
	return u, u
}
