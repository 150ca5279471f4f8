// Package journal is the byte format of Standby's change journal: the
// segment, the one unit of data that an agent writes, a process server caches
// and forwards, and a master target applies and retains.
//
// The package does no I/O of its own beyond the io.Reader and io.Writer it is
// handed: it encodes, decodes and validates bytes. docs/format/journal.md
// describes the format byte by byte.
//
// Glossary:
//
//   - Segment: a header, an ordered run of records, and (once sealed) a
//     trailer. A segment belongs to one machine and one replication epoch.
//   - Record: one change to one disk of the machine (a write, a zeroed range,
//     a trimmed range) or a bookmark. Every record has a sequence number; the
//     sequence numbers of a machine are contiguous across all its disks, so all
//     disks share one write order.
//   - Bookmark: a record that marks a recovery point, crash-consistent or
//     app-consistent.
//   - Chain: a 64-bit running checksum over the CRCs of every record in order.
//     A segment's header carries the chain value before its first record, so
//     an applier can tell a gap or a fork from a continuation.
//   - Pos: a position in a machine's journal, the pair (sequence, chain) after
//     a record. Two journals that agree on a Pos agree on every record before
//     it.
package journal
