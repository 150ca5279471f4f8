// Package spool is a durable on-disk queue of journal segments, one queue
// per machine, bounded by a quota. The process server puts every segment an
// agent ships into the spool before it acknowledges it (the agent may then
// drop its copy), a forwarder reads the spooled segments in order and sends
// them to the master target, and releases them once the target acknowledged
// them.
//
//	agent ──Put──▶ spool ──Next/ReadSegment──▶ forwarder ──▶ master target
//	                 ▲                                           │
//	                 └──────────────── Release ◀────── ack ──────┘
//
// Glossary:
//
//   - Segment: the verbatim bytes of one sealed journal segment
//     (docs/format/journal.md). The spool validates it whole (header, every
//     record's CRC, the chain, the trailer) and never rewrites it.
//   - Tail: the position after the last spooled segment of a machine, or the
//     released position when nothing is spooled. The next Put must continue
//     from it.
//   - Released: the position after the last segment the target
//     acknowledged. Released segments are deleted; the position is kept in a
//     small state file so that a retried segment is still recognised as a
//     duplicate and the next one must still continue from it.
//   - Epoch: the machine's replication epoch. The spool remembers the highest
//     epoch it has accepted and refuses older ones (ErrFenced).
//   - Quota: the bytes all spooled segments may take together. A Put that
//     would exceed it is refused with ErrFull before anything is written;
//     the caller slows the agent down. Nothing is ever dropped to make room.
//
// On disk:
//
//	<dir>/<machine-id>/<first seq, %020d>.seg   one sealed segment
//	<dir>/<machine-id>/state.json               released position and epoch
//	<dir>/<machine-id>/*.tmp                    unfinished writes, removed at Open
//
// A segment is written to a temporary file, fsynced, renamed into place and
// the directory fsynced before Put returns: a segment Put acknowledged
// survives a crash, and a crash never leaves a half-written .seg file.
// Release writes the state file first and then deletes the segments, so a
// crash between the two is finished at the next Open.
//
// A machine the spool has never seen (no segments, no state file) adopts the
// position of its first segment: the spool is a cache, and the master target
// holds the authoritative position. From then on continuity is strict.
//
// Error classes for callers: ErrFull is transient (retry after a Release);
// ErrFenced, a *journal.PosMismatchError and a segment that does not
// validate are permanent for that segment (the agent must resync or stop).
package spool
