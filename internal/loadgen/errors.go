package loadgen

import "errors"

// Sentinel errors of DecodeBlock. ErrNotBlock means the bytes are not a
// block of any generator; the others mean they claim to be one but are damaged.
var (
	ErrNotBlock  = errors.New("not a load generator block")
	ErrVersion   = errors.New("unsupported load generator block version")
	ErrBlockSize = errors.New("block size does not match")
	ErrChecksum  = errors.New("block checksum mismatch")
	ErrHeader    = errors.New("block header is invalid")
	ErrFiller    = errors.New("block filler does not match its header")
)
