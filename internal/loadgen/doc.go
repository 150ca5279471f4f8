// Package loadgen writes self-describing blocks to a machine's disks and
// checks disk images for write-order consistency, so that a replica can be
// proved to equal "the source after exactly the writes up to bookmark N"
// across all disks of the machine (DESIGN.md §4, §7).
//
// Glossary:
//
//   - Run: one Generator's life. Its run id is stamped into every block, so
//     blocks of other runs read as "foreign" content.
//   - Write: one WriteAt call of whole blocks on one disk. Its seq is the
//     generator's machine-wide sequence number, 1, 2, 3, ... in the order the
//     writes were planned and handed to a worker.
//   - Tick: a value of the generator's logical clock. A write takes one tick
//     just before WriteAt (Issued) and one just after it returns (Completed).
//   - Happens-before: write a happens before write b when a completed before
//     b was issued (a.Completed < b.Issued). The storage under test may apply
//     concurrent writes (neither happens before the other) in either order,
//     but never b without a.
//   - Log: every issued write, indexed by seq, with its ticks.
//   - Applied set: the writes a checked image contains. Check computes the
//     smallest one the image proves: the writes found in some block, plus
//     every write that happens before one of them.
//   - Cut: the highest seq C such that writes 1..C are all applied.
//
// # Block layout
//
// Every block is BlockSize bytes (a power of two, 512 or more; 4096 by
// default). Integers are big-endian.
//
//	offset size field
//	     0    8 magic "STBYLGEN"
//	     8    2 version (1)
//	    10    2 header size (64)
//	    12    4 block size in bytes
//	    16    8 run id
//	    24    8 seq: the write's machine-wide sequence number (from 1)
//	    32    8 byte offset of this block on its disk
//	    40    4 disk index (position in the generator's disk list)
//	    44    4 index of this block within its write (from 0)
//	    48    4 number of blocks in the write
//	    52    8 reserved, zero
//	    60    4 CRC-32C (Castagnoli) of the whole block, this field read as zero
//	    64    - filler: the ChaCha8 stream (math/rand/v2) seeded with bytes 16..48
//
// The filler is derived from the header alone, so a block can be
// regenerated from its header (Encode) and any change anywhere in it is
// found, by the checksum and again by comparing with the regenerated block.
//
// # Checking
//
// Check reads every block of every disk once, in order, and keeps per write
// only O(1) evidence, plus one "ordered before" fact per pair of concurrent
// writes that overlap on disk. The log is indexed by (disk, block) → writes
// touching it, in compressed form: 4 bytes per block of disk plus 8 bytes per
// block written. That is fine for test-size disks (≤ 1 GiB, up to a few
// million written blocks); it is not meant for production-size disks.
//
// Limits:
//   - A write is treated as atomic: a recovery point holds all of it or none
//     of it (the journal records a write whole). Writes larger than the NBD
//     server's maximum payload are split by nbd.Client into several requests
//     and could legitimately be torn; keep MaxBlocks*BlockSize below it.
//   - A write that failed (Write.Failed) is checked like any other; after a
//     failure, use the log only up to the writes that happened before it.
//   - Ticks are taken outside WriteAt, so two writes may be recorded as
//     concurrent although one finished first. The checker is then more
//     lenient than it could be, never wrong.
//   - Trim and write-zeroes are not generated.
package loadgen
