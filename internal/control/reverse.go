package control

import (
	"fmt"
	"time"
)

// Reverse is a machine's protection from the secondary site back to the
// primary (re-protect, docs/control-plane.md), and then its failback.
//
// The machine runs at the secondary site from its failover export. The
// master target that failed it over acts as its agent there: it captures
// the replica machine's writes to the export and ships them to a process
// server, which forwards them to a master target at the primary site.
// That one receives them in place, into the old primary's disk files
// (Seed), so that a failback leaves the original agent's disks holding
// the final state. Machine.Agent, Process and Target keep naming the
// original direction: failback returns to it.
type Reverse struct {
	ID string `json:"id"`
	// Agent is the master target that failed the machine over (the
	// machine's Target): it ships the replica machine's writes.
	Agent string `json:"agent"`
	// Process is the process server it ships to; Target the master
	// target at the primary site that receives.
	Process string `json:"process"`
	Target  string `json:"target"`
	// Seed are the old primary's disk files, in disk order, as its agent
	// reported them: the receiving master target's replica is made over
	// them in place, so only blocks that differ are sent.
	Seed []string `json:"seed"`
	// Epoch is the machine's epoch the reverse journal starts at.
	Epoch uint64 `json:"epoch"`
	// Force: the operator accepted to discard Unreplicated bytes of
	// writes the old primary holds that never reached the secondary.
	Force        bool  `json:"force,omitempty"`
	Unreplicated int64 `json:"unreplicated,omitempty"`
	// Failback is set once a failback (a planned failover back to the
	// primary) starts.
	Failback    *Failback     `json:"failback,omitempty"`
	RequestedAt time.Time     `json:"requested_at"`
	Report      ReverseReport `json:"report"`
}

// ReverseReport is what the two master targets of a reverse direction
// report.
type ReverseReport struct {
	// Ready: the receiving master target made its replica over the seed
	// (Seeded: in place over the old primary's disks).
	Ready  bool `json:"ready,omitempty"`
	Seeded bool `json:"seeded,omitempty"`
	// Replication is the shipping master target's reverse agent's.
	Replication ReplicationReport `json:"replication"`
	// SentBytes and ResyncBytes are its bytes shipped and what its
	// comparison found to differ (the re-protect's wire cost).
	SentBytes   int64 `json:"sent_bytes,omitempty"`
	ResyncBytes int64 `json:"resync_bytes,omitempty"`
	// Released: the receiving master target let go of the old primary's
	// disks at the end of a failback (they hold the final state).
	Released bool   `json:"released,omitempty"`
	Error    string `json:"error,omitempty"`
	// Drain is the shipping master target's drain of a failback.
	Drain *DrainReport `json:"drain,omitempty"`
}

// Failback is a planned failover from the secondary back to the primary:
// the shipping master target stops the replica machine, refuses writes
// and drains to a final bookmark (Drain); then the epoch is raised, the
// receiving master target releases the old primary's disks, and the
// original agent continues on them at the new epoch, compares them with
// the original replica and starts the source machine again.
type Failback struct {
	ID          string       `json:"id"`
	Epoch       uint64       `json:"epoch,omitempty"` // raised after the drain
	Drain       *DrainReport `json:"drain,omitempty"`
	RequestedAt time.Time    `json:"requested_at"`
}

// Validate checks a reverse report's sizes.
func (r ReverseReport) Validate() error {
	if len(r.Error) > 4096 || len(r.Replication.LastError) > 4096 || len(r.Replication.State) > 64 {
		return fmt.Errorf("%w: reverse report too large (errors of 4096 bytes)", ErrInvalidTestFailover)
	}
	return nil
}

// ReverseServing is m's reverse direction while it carries the machine's
// data to the primary site: from the re-protection until a failback
// raises the epoch. Nil otherwise.
func (m Machine) ReverseServing() *Reverse {
	r := m.Reverse
	if r == nil || (r.Failback != nil && r.Failback.Epoch > 0) {
		return nil
	}
	return r
}

// Replicating says which servers replicate m now and what its agent
// last reported: the reverse direction's (the master target acting as
// the agent) while it serves, else the machine's own.
func (m Machine) Replicating() (agent, process, target string, rep ReplicationReport) {
	if r := m.ReverseServing(); r != nil {
		return r.Agent, r.Process, r.Target, r.Report.Replication
	}
	return m.Agent, m.Process, m.Target, m.Replication
}
