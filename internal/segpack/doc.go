// Package segpack packs sealed journal segments for the WAN leg, from the
// process server to the master target, and restores them byte for byte.
//
// A segment is the same bytes at every hop (docs/format/journal.md); this
// package only changes how they travel. The Packer reads a segment with the
// journal package, cuts each write payload into blocks, and turns it into an
// op stream: all-zero blocks become zero ops, blocks the stream has sent
// recently become references to a dedup window, everything else is carried
// as is; then zstd compresses the op stream. The Unpacker runs the op stream
// against its copy of the window and checks the CRC-32C of the result. Like
// internal/journal it does no I/O: bytes in, bytes out.
//
//	process server                                           master target
//	┌────────────────────────────┐   packed segments,   ┌────────────────────────────┐
//	│ segment ─▶ Packer.Pack ────┼─────── in order ────▶│ Unpacker.Unpack ─▶ segment │
//	│            window (W bytes)│                      │ window (W bytes)           │
//	└────────────────────────────┘                      └────────────────────────────┘
//	  both windows evolve the same way; each packed segment names the window
//	  state it was packed against, and Unpack refuses any other
//
// docs/format/segpack.md describes the packed format byte by byte and the
// rule both ends follow for the window.
//
// Glossary:
//
//   - Stream: the packed segments of one connection, in order. A Packer and
//     an Unpacker belong to one stream; both are Reset for a new connection.
//   - Block: BlockSize bytes of a write record's payload, counted from the
//     payload's start. Headers, trailers, bookmark labels and the tail of a
//     payload shorter than a block are never blocks.
//   - Op stream: the instructions that rebuild a segment: literal bytes,
//     zero bytes, new blocks (which enter the window), and references to
//     blocks in the window.
//   - Window: the last Window bytes' worth of distinct blocks to enter the
//     stream, oldest evicted first. Its state (Window) is its geometry and
//     Seq, the number of blocks that have entered it.
//   - Verbatim: the segment's own bytes, what Pack takes and Unpack returns.
package segpack
