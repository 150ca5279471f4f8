package spool

import "errors"

// Sentinel errors.
var (
	// ErrFull is returned by Put when the segment does not fit in the
	// quota. Nothing was written. It is transient: the caller slows the
	// agent down and retries after the forwarder released segments.
	ErrFull = errors.New("spool: quota exceeded")
	// ErrFenced is returned by Put for a segment whose epoch is lower than
	// the highest epoch the spool has accepted for the machine.
	ErrFenced = errors.New("spool: segment from an older epoch (fenced)")
	// ErrDamaged is wrapped by Open when a spooled file does not validate
	// or the spooled segments of a machine do not form one chain.
	ErrDamaged = errors.New("spool: damaged")
	// ErrMachineID is returned for a machine id that is not a 128-bit hex
	// id, or a segment whose header names another machine.
	ErrMachineID = errors.New("spool: bad machine id")
)
