package blockmap

import (
	"errors"
	"fmt"
)

// Sentinel errors. Decoding errors wrap ErrCorrupt, so a caller can tell
// damaged bytes from a local failure with errors.Is. Every error from this
// package is permanent for its input: retrying with the same bytes or the
// same maps gives the same error. Only the I/O errors that Hasher.Hash passes
// through from its io.ReaderAt may be transient.
var (
	ErrCorrupt    = errors.New("blockmap: corrupt")
	ErrBadMagic   = fmt.Errorf("%w: bad magic", ErrCorrupt)
	ErrChecksum   = fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	ErrTruncated  = fmt.Errorf("%w: truncated", ErrCorrupt)
	ErrBadVersion = errors.New("blockmap: unsupported version")

	// ErrParams reports invalid parameters: a block size that is not a
	// power of two in [MinBlockSize, MaxBlockSize], a fan-out outside
	// [MinFanout, MaxFanout], a negative size.
	ErrParams = errors.New("blockmap: invalid parameters")

	// ErrMismatch reports that two sides cannot be compared: different
	// block sizes, fan-outs or sizes, or an answer that does not answer the
	// outstanding request.
	ErrMismatch = errors.New("blockmap: sides do not match")

	// ErrShortRead reports that the disk ended before the size the caller
	// gave to Hasher.Hash.
	ErrShortRead = errors.New("blockmap: disk shorter than its size")
)
