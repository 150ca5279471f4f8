package replica

import "errors"

// Sentinel errors; test with errors.Is. Permanent unless said otherwise:
// retrying the same call with the same arguments gives the same error.
var (
	// ErrExists is returned by Create when the directory already holds a
	// replica (or anything else).
	ErrExists = errors.New("replica: already exists")
	// ErrNoReplica is returned by Open when the directory holds no replica
	// (no state.json).
	ErrNoReplica = errors.New("replica: no replica in directory")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("replica: closed")
	// ErrFenced is returned by Apply and Rebase for an epoch lower than the
	// replica's: the sender was failed over and must stop (DESIGN §4).
	ErrFenced = errors.New("replica: segment from an older epoch (fenced)")
	// ErrMachineID is returned for a machine id that is not a 128-bit hex
	// id, or a segment of another machine.
	ErrMachineID = errors.New("replica: wrong machine")
	// ErrDiskRange is returned by Apply for a record that names a disk the
	// machine does not have or a range past the end of its disk. The
	// segment is valid as bytes but does not fit this replica.
	ErrDiskRange = errors.New("replica: record outside the machine's disks")
	// ErrNotFound is returned for a recovery point id the replica does not
	// hold (never created, or pruned).
	ErrNotFound = errors.New("replica: no such recovery point")
	// ErrNotConsistent is returned by OpenPoint(0) while the frontier is
	// not a consistent state (after a Rebase, or while resync records
	// arrive, until the next bookmark): choose a recovery point instead.
	ErrNotConsistent = errors.New("replica: latest state is not consistent (resynchronising)")
	// ErrBroken is wrapped by every mutating method after a failure left
	// work half done in this process (a segment stored but not applied,
	// an image fsync that failed). Nothing acknowledged is lost: Close
	// and Open the replica again, and Open finishes or undoes that work.
	ErrBroken = errors.New("replica: needs repair (close and open it again)")
	// ErrDamaged is wrapped by Open when a file the state refers to is
	// missing or does not match, or state.json does not parse.
	ErrDamaged = errors.New("replica: damaged")
	// ErrLocked is returned by Open when another process (or another
	// Replica in this process) has the directory open.
	ErrLocked = errors.New("replica: directory in use")
	// ErrHasPoints is returned by BeginCopy for a replica that holds
	// recovery points: a copy writes current without keeping what it
	// overwrites, which only a replica without points may do. Resynchronise
	// with Rebase and segments instead.
	ErrHasPoints = errors.New("replica: has recovery points (a copy is only for a replica without any; rebase instead)")
	// ErrCopying is returned by Apply, ApplyBatch and Seed while a copy is
	// under way (BeginCopy without EndCopy): end the copy first, or start
	// again with Rebase or BeginCopy.
	ErrCopying = errors.New("replica: a copy is under way (EndCopy it, or start again with Rebase or BeginCopy)")
	// ErrNotCopying is returned by WriteCopy, ZeroCopy and EndCopy when no
	// copy is under way (no BeginCopy, or it ended, or a Rebase came after
	// it).
	ErrNotCopying = errors.New("replica: no copy under way (BeginCopy first)")

	errNegativeOffset = errors.New("replica: negative offset")
)
