// Package capture is Standby's write capture: it sits between an NBD export
// and the disk that backs it, and journals every write before the write
// reaches the disk.
//
// A Machine owns the disks of one protected machine and one journal for all
// of them, so that every disk shares one write order. Its state directory:
//
//	state.json       machine id, epoch, clean-shutdown mark, boot id
//	journal/*.seg    journal segments (internal/journal format), named by first sequence number
//	dirty.bitmap     persistent dirty bitmap: chunks written while the journal could not hold them
//	activity.log     activity log: extents that may hold writes not yet durable
//
// Invariants (DESIGN §2):
//   - A write's journal record is in the kernel (page cache) before the write
//     is issued to the disk, so an agent crash never leaves a write on disk
//     that the journal lacks. Appends happen under one lock, into a
//     preallocated, memory-mapped segment (a copy, no system call); the disk
//     operation runs after the lock is released, in parallel with others,
//     but waits for earlier in-flight operations that overlap it, so the
//     disk sees overlapping writes in journal order and replaying the
//     journal onto the starting image reproduces the disk.
//   - FLUSH and FUA make the journal and the disk durable before the reply.
//     Concurrent flushes share one round of fsyncs (group commit).
//   - Before the first write into a cold extent, the extent is recorded in
//     the activity log and the log is made durable. After a power loss the
//     extents in the activity log are marked dirty: they bound what must be
//     resynchronised.
//   - The journal is bounded. A write that does not fit marks its chunks in
//     the dirty bitmap instead; once space is released, the dirty chunks'
//     current content is appended to the journal as resync records. The
//     machine is then "resyncing" (no bookmarks) until the bitmap is empty.
//
// Recovery after an unclean stop (no clean-shutdown mark) truncates a torn
// journal tail and re-applies the retained journal to the disks (redo), so
// a write that was journaled but not yet on disk when the agent died is not
// lost either. After a new boot (power loss) it also marks the activity
// log's extents dirty.
package capture
