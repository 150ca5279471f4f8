// Package blockmap hashes the blocks of a disk and compares two sides of a
// replicated disk so that only differing blocks are sent: initial
// replication (send what the target lacks), resynchronisation after a
// journal overflow, an unclean stop or a fork, and re-protect (DESIGN §4).
//
// The package is pure: it imports only the standard library and does no I/O
// beyond the io.ReaderAt it is handed. docs/format/blockmap.md describes its
// wire encoding byte by byte.
//
// Glossary:
//
//   - Block: BlockSize bytes of a disk at a multiple of BlockSize. The block
//     size is fixed per map (default 64 KiB, a power of two from 4 KiB to
//     4 MiB). The last block of a disk may be short; bytes past the end of
//     a disk read as zero, for hashing and for comparison.
//   - Block hash: SHA-256 of the block's BlockSize bytes (a short last block
//     padded with zeros), so it equals `sha256sum` of the block — except
//     that a block of only zero bytes has the hash ZeroHash (32 zero bytes),
//     a constant that makes zero and hole blocks recognisable (IsZero)
//     without hashing them.
//   - Map: the block hashes of one disk, in block order, with the disk's
//     size and block size.
//   - Hole: an extent the caller knows reads as zeros (unallocated, trimmed).
//     A block wholly inside holes gets ZeroHash without being read.
//   - Tree: a Merkle tree over a map. Level 0 holds the block hashes; node j
//     of level k+1 hashes the Fanout nodes Fanout·j … Fanout·j+Fanout−1 of
//     level k; the top level has one node, the root. A node whose children
//     are all ZeroHash is ZeroHash (a zero region is recognisable at every
//     level); any other node is SHA-256(0x01 ‖ child hashes), children past
//     the end of the level counted as ZeroHash.
//   - Params: block size, fan-out and size: what both sides must agree on
//     before their trees can be compared node by node.
//   - Range: a run of differing blocks, as a byte range of the disk.
//   - Compare: the level-by-level comparison of a local tree with a remote
//     one that is only reachable through messages (Request, Tree.Answer,
//     Compare.Receive). Equal subtrees cost one node hash each.
//
// # Why full 32-byte hashes
//
// Block hashes are not truncated. The guest controls the contents of its
// disk, so a 128-bit hash would allow a deliberately built collision pair at
// about 2^64 work; a block that compares equal but is not equal is a silent,
// undetectable corruption of the replica, the worst outcome a DR product
// has. The cost of full hashes is small where it matters: a map of a 1 TiB
// disk at 64 KiB blocks is 512 MiB in memory (16 Mi blocks), but on the wire
// the tree comparison sends only the nodes on the paths to differing blocks,
// and a block hash is 1/2048 of the 64 KiB it stands for.
//
// # Disks of different sizes
//
// Two sides of different sizes are compared over the union of their sizes,
// and bytes past the end of the shorter side read as zero: a block past the
// end of the shorter side differs only if it is not zero on the longer side.
// Because a short last block is hashed padded with zeros, a map extended by
// zero blocks keeps its hashes, and both sides build their trees for the
// same union size (Params.Size) before comparing. After resynchronising, the
// caller sets the target's size to the source's: growing a disk adds zeros
// and shrinking it drops blocks, so the blocks that Diff reports past the
// end of the source need not be sent.
//
// # Level-by-level comparison
//
//	local (asks)                          remote (answers)
//	c := NewCompare(localTree)
//	req, ok := c.Next(max)   ── Request ──▶ ans, err := remoteTree.Answer(req)
//	c.Receive(ans)           ◀── Answer ───
//	… until Next reports ok == false; c.Ranges() are the differing blocks.
//
// A request names nodes of one level; the answer carries the remote's hashes
// of those nodes. Compare descends into the children of every node whose
// hash differs from its own and, at level 0, collects differing blocks into
// ranges. The number of node hashes exchanged is at most
// 1 + changed × Fanout × (levels − 1): equal regions cost nothing beyond
// the hash of the node that covers them.
package blockmap
