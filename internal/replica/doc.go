// Package replica is the master target's replica store of one protected
// machine: the replica disks at the apply frontier, and the history needed
// to present every retained recovery point (DESIGN §5). It is a redo
// journal over a base image:
//
//	 base images            stored segments (the log)             current images
//	┌───────────┐   ┌──────┬──────┬──────┬──────┬──────┐       ┌───────────┐
//	│ state at  │ + │ 0007 │ 0008 │ 0009 │ 0010 │ 0011 │   =   │ state at  │
//	│ the base  │   └──────┴──┬───┴──────┴───┬──┴──────┘       │ the front │
//	└───────────┘      point 4┘      point 5─┘                 └───────────┘
//
// The state at a point is the base images plus the stored records after
// the base up to the point's bookmark, in log order. Current is the base
// plus every stored record; Apply keeps it up to date so the latest state
// costs nothing to present. Prune rolls the base forward to the oldest
// retained point and deletes the segments behind it.
//
// docs/format/replica.md describes the directory, state.json, the order of
// durable steps and the invariants.
//
// Glossary:
//
//   - Segment: the verbatim bytes of one sealed journal segment
//     (docs/format/journal.md), validated again on arrival.
//   - Log: the stored segments in the order they were applied, numbered by
//     a local log index that only grows. Journal sequence numbers cannot
//     order it: a Rebase may make them start again.
//   - Applied position: the journal.Pos after the last applied record. The
//     next segment must continue from it (or overlap it), else Apply
//     returns a *journal.PosMismatchError.
//   - Frontier: the place in the log after the last stored record; the
//     current images hold the state there.
//   - Base: the place in the log the base images are at: before every
//     segment when created, later the oldest retained point.
//   - Bookmark / recovery point: a bookmark record marks a consistent state
//     of all disks; each applied bookmark becomes a Point with a local ID
//     that is never reused. ID 0 names the latest state.
//   - Rebase: the agent declares that its next segment continues from a
//     given position, not from the applied one (initial replication, or a
//     resynchronisation after a gap or a fork). The replica is not
//     Consistent from then, and from any resync record (journal.FlagResync),
//     until the next bookmark: the agent never bookmarks while it
//     resynchronises.
//   - Epoch: the machine's replication epoch. Segments and rebases of an
//     older epoch are refused (ErrFenced).
//   - View: read-only disks at a point. A view of a stored point reads an
//     in-memory extent index of the records between the base and the point
//     (last writer wins), else the base images; it pins the point against
//     Prune. The latest view reads the current images live.
//   - Lazy base, seeded: a base made by BeginCopy (base_gen ≥ 1) holds only
//     its seeded blocks (a bitmap per disk, one bit per 4 KiB block); an
//     unseeded block has not been written since, so current holds its
//     content at the base. Before a record is applied to current, the
//     unseeded blocks it writes are copied into the base and marked; Seed
//     copies the others in the background, chunk by chunk.
//   - Copy: initial replication's path that writes each byte once. With no
//     recovery point, BeginCopy drops the log and makes the base lazy;
//     WriteCopy and ZeroCopy write current directly (no segment); EndCopy
//     makes it durable. Apply refuses segments meanwhile (ErrCopying).
//   - In place: a replica made by CreateInPlace, whose current images are
//     symbolic links to existing files outside the directory (the old
//     primary machine's disks, for re-protection), with a lazy base from
//     the start so that nothing is copied. No step ever removes, renames,
//     truncates or recreates a current image; removing the directory
//     removes the links, not the files.
//   - Generation: a counter in memory that changes whenever current may
//     have changed, for caches of what is computed from current.
//   - Roll: applying the stored records from the base up to the new base
//     onto the base images, recorded in state.json before it starts so that
//     a crash in the middle is finished by Open.
//
// Crash safety: every change is made durable in an order such that a crash
// at any instruction leaves either the old state or a state Open can
// finish; applying a run of records again in order is idempotent, which
// is what Open's redo and a repeated roll rely on. A failure after a
// durable step has begun marks the Replica broken (ErrBroken) until it is
// opened again.
package replica
