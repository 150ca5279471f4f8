// Package nbd implements the Network Block Device protocol: a server that
// exports Backends to QEMU, the Linux kernel client, libnbd tools and
// nbdfuse, and a small concurrent client for tests and load generators.
// The protocol is the one of doc/proto.md in github.com/NetworkBlockDevice/nbd;
// proto.go names its constants and cites its sections.
//
// Glossary:
//
//   - Handshake: the first phase of a connection. The server greets with
//     NBDMAGIC, IHAVEOPT and its handshake flags; the client answers with its
//     flags. Only the "fixed newstyle" handshake is spoken.
//   - Option haggling: the rest of the handshake. The client sends options
//     (STARTTLS, STRUCTURED_REPLY, SET_META_CONTEXT, INFO, ...) and the server
//     answers each with replies ending in ACK or an error, until NBD_OPT_GO
//     (or the old NBD_OPT_EXPORT_NAME) picks an export and ends haggling.
//     The server bounds haggling in time, option count and option size.
//   - Transmission: the second phase. The client sends requests (READ, WRITE,
//     FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, DISC) and the server replies,
//     possibly out of order, with many requests in flight at once.
//   - Cookie: the 64-bit value a client puts in each request and the server
//     copies into the reply, so that replies can be matched to requests
//     (older spec versions call it "handle").
//   - Structured reply: a reply made of chunks (data at an offset, a hole,
//     block status, or an error with a message), negotiated with
//     NBD_OPT_STRUCTURED_REPLY. Without it every reply is a "simple reply":
//     an error number, followed by the data for a successful READ.
//   - Metadata context: a kind of per-extent status a client can query with
//     BLOCK_STATUS after selecting it in haggling; the only one here is
//     base:allocation (is the range a hole, does it read as zeros).
//
// The server side, per connection after haggling:
//
//	client ──requests──▶ reader ──request──▶ worker ──▶ Backend
//	                       ▲                   │
//	                       └─── free list ◀────┤  (MaxInFlight requests)
//	client ◀──replies─── bufio.Writer ◀────────┘  (flushed when no reply waits)
//
// Unsupported on purpose: the oldstyle and non-fixed newstyle handshakes,
// extended headers (NBD_OPT_EXTENDED_HEADERS), NBD_CMD_CACHE, fast zero,
// resize, and metadata contexts other than base:allocation.
package nbd
