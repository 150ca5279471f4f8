package journal

import (
	"errors"
	"fmt"
)

// Sentinel errors. Decoding errors wrap ErrCorrupt so a caller can tell a
// damaged segment from an I/O failure with errors.Is.
var (
	ErrCorrupt     = errors.New("journal: corrupt")
	ErrBadMagic    = fmt.Errorf("%w: bad magic", ErrCorrupt)
	ErrBadVersion  = errors.New("journal: unsupported version")
	ErrChecksum    = fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	ErrTruncated   = fmt.Errorf("%w: truncated", ErrCorrupt)
	ErrNotSealed   = errors.New("journal: segment has no trailer")
	ErrRecordLimit = errors.New("journal: record too large")
)

// PosMismatchError reports that a segment or record does not continue from
// the position an applier holds: a gap (records are missing) or a fork (the
// same sequence number with a different history). It carries the evidence.
type PosMismatchError struct {
	Want Pos // the position the applier holds
	Got  Pos // the position the segment claims to continue from
}

func (e *PosMismatchError) Error() string {
	kind := "fork"
	if e.Got.Seq > e.Want.Seq {
		kind = "gap"
	} else if e.Got.Seq < e.Want.Seq {
		kind = "overlap"
	}
	return fmt.Sprintf("journal: position mismatch (%s): have %s, segment continues from %s", kind, e.Want, e.Got)
}

// Gap reports whether the mismatch is a gap: records between Want and Got
// are missing.
func (e *PosMismatchError) Gap() bool { return e.Got.Seq > e.Want.Seq }

// Fork reports whether the two histories diverged at the same sequence number.
func (e *PosMismatchError) Fork() bool { return e.Got.Seq == e.Want.Seq && e.Got.Chain != e.Want.Chain }
