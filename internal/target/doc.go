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
// Managed mode (control.go, with Options.Control): the listener presents
// the identity `standby target join` wrote and accepts only process
// servers' certificates the configuration server has not revoked; the
// target heartbeats its address and capacity, and reports each machine's
// recovery points (all of them, on change, at most once a second). The
// configuration server being away changes nothing on the data path.
//
// On disk: <data dir>/machines/<machine id>/ is one replica
// (docs/format/replica.md); <id>/name holds the operator's name for it.
package target
