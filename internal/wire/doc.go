// Package wire is how Standby's roles talk to each other: a versioned
// handshake over mutual TLS, then length-prefixed frames. It carries
// journal segments verbatim from agent to process server, packed
// (internal/segpack) from process server to master target, and small
// control calls.
//
// Two kinds of connection, never mixed (STYLE habit 5: control and bulk
// data are separate paths):
//
//	data stream, one per machine, ordered:
//
//	  client (agent or process server)            server (process server or master target)
//	    Hello{stream:data} ───────────────────────▶
//	                       ◀─────────────────────── Welcome{version}
//	    Open{machine, epoch, disks} ──────────────▶
//	                       ◀─────────────────────── Opened{durable, applied, consistent}
//	    Segment / Packed (window of W unacked) ───▶ store durably (spool fsync / replica apply)
//	    Rebase{pos} (resync: next segment          │
//	      continues from pos, not from applied) ──▶│
//	                       ◀─────────────────────── Ack{durable, applied, applied_at, ...}
//	    Ping ─────────────────────────────────────▶ (clients, every 2 s; servers send Acks every second)
//	                       ◀─────────────────────── Error{code, transient} and close
//
//	control connection, request/response:
//
//	    Hello{stream:control} ────────────────────▶
//	                       ◀─────────────────────── Welcome
//	    Call{method, args} ───────────────────────▶
//	                       ◀─────────────────────── Reply{result} [+ Blob] or Error
//
// Glossary:
//   - Frame: an 8-byte header (type, flags, reserved, big-endian payload
//     length) and the payload. JSON payloads for messages, raw bytes for
//     segments and blobs.
//   - Durable position: the position after the last segment the server has
//     made durable (the process server's fsynced spool, or the master
//     target's replica). The agent may release its journal up to it.
//   - Applied position: the master target's apply frontier; the latest
//     recovery point. The achieved RPO is measured against it.
//   - Resumption: on every (re)connect Opened says where the server is; the
//     client sends from there. Retried segments are harmless: applying is
//     idempotent by sequence number.
//   - Backpressure: a server acknowledges a segment only once it is durable,
//     and a client keeps at most a window of unacknowledged segments, so a
//     full process-server cache or a slow master target slows the agent's
//     shipping, and the agent's bounded journal then degrades to its dirty
//     bitmap: a visible state, never silent loss.
//
// docs/protocol.md documents every frame.
package wire
