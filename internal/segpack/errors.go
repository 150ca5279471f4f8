package segpack

import (
	"errors"
	"fmt"
)

// Sentinel errors. Test with errors.Is.
//
// How to treat them on the WAN leg:
//
//   - ErrCorrupt (and ErrBadMagic, ErrChecksum, ErrTruncated, ErrBadRef, which
//     wrap it) from Unpack: the packed bytes were damaged in flight, or the two
//     ends disagree about the stream. Transient: Unpack leaves the Unpacker as
//     it was, but the Packer has already moved its window past the segment, so
//     drop the connection, Reset both ends and send the segment again.
//   - *WindowMismatchError from Unpack: the two ends do not hold the same
//     dedup window (a segment lost or sent twice, one end not Reset, or
//     different Options). Transient in the same way: Reset both ends.
//   - ErrBadVersion from Unpack: the packer writes a version this build does
//     not read. Permanent until one side is upgraded.
//   - From Pack, an error wrapping journal.ErrCorrupt or journal.ErrNotSealed:
//     the segment itself is damaged or unsealed. Permanent for that segment;
//     the Packer's window is unchanged. ErrTooLarge is permanent too.
var (
	// ErrCorrupt is any structural damage in a packed segment.
	ErrCorrupt = errors.New("segpack: corrupt packed segment")
	// ErrBadMagic is a packed segment that does not start with STBYPACK.
	ErrBadMagic = fmt.Errorf("%w: bad magic", ErrCorrupt)
	// ErrChecksum is a header CRC or verbatim CRC that does not match.
	ErrChecksum = fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	// ErrTruncated is a packed segment shorter than its header says.
	ErrTruncated = fmt.Errorf("%w: truncated", ErrCorrupt)
	// ErrBadRef is a reference to a block the dedup window does not hold:
	// never sent, or already evicted.
	ErrBadRef = fmt.Errorf("%w: reference to a block not in the window", ErrCorrupt)
	// ErrBadVersion is a packed segment whose version is outside
	// MinVersion..MaxVersion. It does not wrap ErrCorrupt.
	ErrBadVersion = errors.New("segpack: unsupported version")
	// ErrTooLarge is a segment longer than MaxSize given to Pack.
	ErrTooLarge = errors.New("segpack: segment too large")
	// ErrOptions is an invalid Options value.
	ErrOptions = errors.New("segpack: invalid options")
)

// WindowMismatchError reports that a packed segment was made against a dedup
// window other than the one the Unpacker holds. It carries both states as
// evidence. It does not wrap ErrCorrupt: the bytes are sound, the stream is
// not.
type WindowMismatchError struct {
	Want Window // the Unpacker's window
	Got  Window // the window the segment was packed against
}

func (e *WindowMismatchError) Error() string {
	return fmt.Sprintf("segpack: dedup window mismatch: unpacker holds %s, segment was packed against %s "+
		"(a segment was lost, repeated or reordered, or one end was not reset: reset both ends of the stream)", e.Want, e.Got)
}
