package wire

import (
	"encoding/json"

	"github.com/standby-dr/standby/internal/journal"
)

// Protocol versions this build speaks: a window, negotiated at connect.
const (
	MinVersion = 1
	MaxVersion = 1
)

// ProtocolName is the first field of every Hello; anything else is not
// a Standby peer.
const ProtocolName = "standby-wire"

// Stream kinds.
const (
	StreamData    = "data"
	StreamControl = "control"
)

// Hello opens every connection.
type Hello struct {
	Protocol   string `json:"protocol"` // ProtocolName
	MinVersion int    `json:"min_version"`
	MaxVersion int    `json:"max_version"`
	Role       string `json:"role"`   // agent, process, target, cli
	Stream     string `json:"stream"` // data or control
	Name       string `json:"name,omitempty"`
}

// Welcome accepts a Hello.
type Welcome struct {
	Version int    `json:"version"`
	Role    string `json:"role"`
	Name    string `json:"name,omitempty"`
}

// DiskInfo names one disk of a machine.
type DiskInfo struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Open starts a machine's data stream.
type Open struct {
	Machine string     `json:"machine"` // 32 hex digits: the capture machine id
	Name    string     `json:"name"`    // the operator's name for it
	Epoch   uint64     `json:"epoch"`
	Disks   []DiskInfo `json:"disks"`
}

// Opened answers Open with where the server is; the client ships from
// Durable on.
type Opened struct {
	Durable    journal.Pos `json:"durable"`
	Applied    journal.Pos `json:"applied"`
	Consistent bool        `json:"consistent"` // the replica presents a consistent state (no resync pending)
	Epoch      uint64      `json:"epoch"`
	Known      bool        `json:"known"` // the server had state for this machine before
}

// Rebase tells the server that the next segment continues from Pos, not
// from its position: the client is resynchronising (initial replication,
// or after a gap or fork) and will send every block that differs.
type Rebase struct {
	Pos   journal.Pos `json:"pos"`
	Epoch uint64      `json:"epoch"`
	// Copy asks to send the differing blocks as Copy frames, straight into
	// the replica's current images, instead of as journal records: only a
	// replica without recovery points can take them (the Ack's Copy says
	// whether it will). Segments follow the CopyEnd.
	Copy bool `json:"copy,omitempty"`
	// Tunnel, with Copy, asks to send the Copy frames through a copy
	// tunnel (TunnelMagic) rather than on this stream; the Ack's Tunnel
	// says whether the servers offer one.
	Tunnel bool `json:"tunnel,omitempty"`
}

// Tunnel is the offer of a copy tunnel, in the Ack of a Rebase that asked
// for one (docs/protocol.md §5.1). The master target issues the ticket;
// the process server adds how the agent checks the master target's
// certificate and how it compresses.
type Tunnel struct {
	Ticket string `json:"ticket"`
	// Streams is how many connections the ticket opens: each is its own
	// TLS session, so that their encryption runs in parallel.
	Streams int `json:"streams,omitempty"`
	// Target is the master target's server id, which its certificate
	// must carry (managed); ServerName is the name its certificate must
	// hold otherwise.
	Target     string `json:"target,omitempty"`
	ServerName string `json:"server_name,omitempty"`
	// Compression is how the agent compresses Copy frames: "off", "auto"
	// (when it measures that it pays) or a segpack level name.
	Compression string `json:"compression,omitempty"`
}

// CopyEnd ends a copy: Frames Copy frames carried Bytes bytes of disk
// (zero runs included), which the server checks against what it received.
type CopyEnd struct {
	Frames uint64 `json:"frames"`
	Bytes  uint64 `json:"bytes"`
}

// Ack reports progress. Servers send one once a segment (or a batch of
// them, at the master target) is durable, whenever the applied position
// moves, and at least every second.
type Ack struct {
	Durable journal.Pos `json:"durable"`
	Applied journal.Pos `json:"applied"`
	// AppliedAt is when the applied position was reached at the master
	// target (unix ns, target clock); AppliedRecordTime is the agent time of
	// the last applied record (unix ns, agent clock).
	AppliedAt         int64   `json:"applied_at,omitempty"`
	AppliedRecordTime int64   `json:"applied_record_time,omitempty"`
	Consistent        bool    `json:"consistent"`
	Rebased           bool    `json:"rebased,omitempty"` // the last Rebase is durable
	Copy              bool    `json:"copy,omitempty"`    // with Rebased: the replica takes Copy frames now
	Copied            bool    `json:"copied,omitempty"`  // the last CopyEnd is durable: the copied blocks are in the replica (on a tunnel: all its Copy frames are written)
	Tunnel            *Tunnel `json:"tunnel,omitempty"`  // with Copy: the copy tunnel the servers offer
	Points            int     `json:"points,omitempty"`  // recovery points retained at the target
	Epoch             uint64  `json:"epoch,omitempty"`
}

// Call is a control request.
type Call struct {
	Method string          `json:"method"`
	Args   json.RawMessage `json:"args,omitempty"` // the method's arguments
}

// Reply answers a Call. With Blob set, one Blob frame follows.
type Reply struct {
	Result json.RawMessage `json:"result,omitempty"` // the method's result
	Blob   bool            `json:"blob,omitempty"`
}

// Control methods.
const (
	// MethodTree answers one level of a comparison of a disk's hash tree
	// with the replica's at its apply frontier (docs/format/blockmap.md:
	// the request is a nodes message in TreeArgs, the answer a nodes
	// message in the Blob). Equal regions cost one hash each at the
	// highest level where they are equal.
	MethodTree = "tree"
	// MethodDrain waits until the process server has forwarded every
	// spooled segment of a machine and the master target applied them.
	MethodDrain = "drain"
	// MethodStatus returns the server's status as JSON.
	MethodStatus = "status"
)

// TreeArgs are the arguments of MethodTree.
type TreeArgs struct {
	Machine string `json:"machine"`
	Disk    int    `json:"disk"`
	// Request is a blockmap nodes request (blockmap.AppendNodes): the
	// tree's parameters, a level, and runs of at most MaxTreeNodes nodes.
	Request []byte `json:"request"`
}

// TreeResult describes a MethodTree answer.
type TreeResult struct {
	Applied journal.Pos `json:"applied"` // the replica's frontier the tree is of
}

// MaxTreeNodes bounds the nodes one tree request names (2 MiB of hashes).
const MaxTreeNodes = 1 << 16

// DrainArgs are the arguments of MethodDrain.
type DrainArgs struct {
	Machine string `json:"machine"`
}

// DrainResult is the result of MethodDrain.
type DrainResult struct {
	Applied journal.Pos `json:"applied"`
}

// CanonicalMachineID returns a machine id in its one accepted form: 32 hex
// digits, lowercase, dashed as a UUID. Only hex digits and dashes pass, so
// an id can never name a path outside a directory it is joined to.
func CanonicalMachineID(s string) (string, error) {
	id, err := journal.ParseMachineID(s)
	if err != nil {
		return "", err
	}
	return journal.FormatMachineID(id), nil
}
