// Package target is the master target role: it accepts machines' data
// streams from process servers, applies their segments to replica stores
// (internal/replica), keeps recovery points under the retention policy,
// answers block-map calls for resynchronisation, and exports metrics.
//
//	process server ──data stream (packed segments)──▶ Target ──Apply──▶ replica.Replica (one per machine)
//	               ◀── Ack{applied, applied_at} ─────┘
//	agent (via process server) ──control: blockmap──▶ Target ──BlockMap──▶ replica
//
// One data stream per machine at a time: a new stream for a machine takes
// over from the old one (a process server that reconnects after a
// half-dead connection), so two writers never interleave.
//
// On disk: <data dir>/machines/<machine id>/ is one replica
// (docs/format/replica.md); <id>/name holds the operator's name for it.
package target
