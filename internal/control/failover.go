package control

import (
	"fmt"
	"maps"
	"regexp"
	"time"
)

// Failover is the failover of a machine, planned or unplanned: what the
// operator asked for and what its agent (the drain of a planned one) and
// its master target report back. It stays on the
// machine after the failover, as its record: Machine.State says where the
// failover is (failover-started, failed-over, failover-committed, ...).
type Failover struct {
	// ID is new for each failover (each retry to another point too); the
	// master target's reports name it.
	ID string `json:"id"`
	// Point selects the recovery point, as a test failover's does.
	Point string `json:"point"`
	// Epoch is the machine's epoch this failover fenced to.
	Epoch uint64 `json:"epoch"`
	// Replica is the replica machine; Name defaults to the machine's name.
	Replica ReplicaSpec `json:"replica"`
	// Network are the driver's network settings of the replica machine
	// (qemu: mode, bridge, ...; exec: STANDBY_NET_<KEY>). Unlike a test
	// failover's, the network is not isolated: the replica takes over.
	Network map[string]string `json:"network,omitempty"`
	// Commit is set when the operator committed the failover: the master
	// target releases every other point.
	Commit bool `json:"commit,omitempty"`
	// Planned: the source machine is stopped and the journal drained to a
	// final bookmark first (state failover-draining); Point is then that
	// bookmark's point, and Epoch is raised only after the drain.
	Planned bool `json:"planned,omitempty"`
	// Drain is the agent's report of a planned failover's drain.
	Drain       *DrainReport   `json:"drain,omitempty"`
	RequestedAt time.Time      `json:"requested_at"`
	Report      FailoverReport `json:"report"`
}

// DrainReport is an agent's report of a planned failover's drain: the
// source machine stopped through its driver, writes refused from then on,
// a final bookmark, and every segment up to it applied at the master
// target. Zero data loss: every write the agent acknowledged before the
// stop is in the final bookmark's recovery point.
type DrainReport struct {
	ID string `json:"id"` // the failover's
	// SourceStopped: the agent's machine driver stopped the source
	// machine (SourceState is what the driver said). Without a driver the
	// agent only refuses writes, and SourceState says so.
	SourceStopped bool   `json:"source_stopped,omitempty"`
	SourceState   string `json:"source_state,omitempty"`
	// WritesRefused: the agent refuses every write (NBD EPERM) from now
	// until the failover is over.
	WritesRefused bool `json:"writes_refused,omitempty"`
	// Done: the final bookmark (journal sequence BookmarkSeq, Label) is
	// applied at the master target.
	Done        bool      `json:"done,omitempty"`
	BookmarkSeq uint64    `json:"bookmark_seq,omitempty"`
	Label       string    `json:"label,omitempty"`
	Error       string    `json:"error,omitempty"`
	ReportedAt  time.Time `json:"reported_at,omitzero"`
}

// DrainLabel is the label of a planned failover's final bookmark.
func DrainLabel(failoverID string) string { return "planned-failover-" + failoverID }

// Validate checks a drain report's sizes.
func (r DrainReport) Validate() error {
	if r.ID == "" || len(r.ID) > 64 || len(r.SourceState) > 1024 || len(r.Label) > 128 || len(r.Error) > 4096 {
		return fmt.Errorf("%w: drain report: a failover id of 1-64 bytes, a source state of 1024, a label of 128, an error of 4096", ErrInvalidTestFailover)
	}
	return nil
}

// FailoverPhase is where a master target is with a failover.
type FailoverPhase string

// Failover phases, as the master target reports them.
const (
	FailoverPhaseStarting  FailoverPhase = "starting"  // fencing, exporting, starting the machine
	FailoverPhaseRunning   FailoverPhase = "running"   // fenced, exported, the replica machine started
	FailoverPhaseFailed    FailoverPhase = "failed"    // it could not be done: Error says why
	FailoverPhaseCommitted FailoverPhase = "committed" // the point is final; the rest of the history released
)

// FailoverReport is a master target's report of a failover.
type FailoverReport struct {
	Phase FailoverPhase `json:"phase,omitempty"`
	// Fenced is the replica's epoch once raised to the failover's.
	Fenced    uint64    `json:"fenced,omitempty"`
	PointID   uint64    `json:"point_id,omitempty"`
	PointTime time.Time `json:"point_time,omitempty"`
	Export    string    `json:"export,omitempty"`
	Disks     []string  `json:"disks,omitempty"`
	// Machine is the replica machine's driver handle, MachineState its
	// run state.
	Machine      string `json:"machine,omitempty"`
	MachineState string `json:"machine_state,omitempty"`
	// Hydration is the copy of the export to standalone images.
	Hydration Hydration `json:"hydration"`
	// Released is how many points the commit removed.
	Released   int       `json:"released,omitempty"`
	Error      string    `json:"error,omitempty"`
	ReportedAt time.Time `json:"reported_at,omitempty"`
}

// Hydration is the progress of copying a failed-over machine's disks to
// standalone image files at the master target.
type Hydration struct {
	Done   int64    `json:"done"`             // bytes read so far
	Total  int64    `json:"total"`            // the disks' size
	Images []string `json:"images,omitempty"` // the image files, in disk order
	// Complete: every image holds the export's content as of
	// CompletedAt (docs/exports.md says what that means while the
	// replica machine writes).
	Complete    bool      `json:"complete,omitempty"`
	CompletedAt time.Time `json:"completed_at,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// FailoverStates are the protection states in which a machine is failed
// over or on its way: protection stops (the agent and the process server
// no longer serve it) and the master target keeps its Failover.
var FailoverStates = []MachineState{StateFailoverStarted, StateFailoverFailed, StateFailedOver, StateFailoverCommitted}

// InFailover says whether s is one of FailoverStates.
func (s MachineState) InFailover() bool {
	for _, x := range FailoverStates {
		if s == x {
			return true
		}
	}
	return false
}

var netKeyRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,31}$`)

// ValidateNetwork checks a failover's network settings (keys become
// environment names for the exec driver).
func ValidateNetwork(n map[string]string) error {
	if len(n) > 32 {
		return fmt.Errorf("%w: network: %d settings, at most 32", ErrInvalidTestFailover, len(n))
	}
	for k, v := range maps.All(n) {
		if !netKeyRE.MatchString(k) || len(v) > 256 {
			return fmt.Errorf("%w: network setting %q: a key of 1-32 of A-Z a-z 0-9 _ starting with a letter, a value of at most 256 bytes", ErrInvalidTestFailover, k)
		}
	}
	return nil
}

var failoverPhases = []FailoverPhase{FailoverPhaseStarting, FailoverPhaseRunning, FailoverPhaseFailed, FailoverPhaseCommitted}

// Validate checks a report's phase and sizes.
func (r FailoverReport) Validate() error {
	ok := false
	for _, p := range failoverPhases {
		ok = ok || r.Phase == p
	}
	if !ok {
		return fmt.Errorf("%w: phase %q: allowed: starting, running, failed, committed", ErrInvalidTestFailover, r.Phase)
	}
	h := r.Hydration
	if h.Done < 0 || h.Total < 0 || h.Done > h.Total {
		return fmt.Errorf("%w: hydration %d of %d bytes", ErrInvalidTestFailover, h.Done, h.Total)
	}
	if len(r.Disks) > 64 || len(h.Images) > 64 || len(r.Error) > 4096 || len(h.Error) > 4096 || len(r.Export) > 64 || len(r.Machine) > 256 {
		return fmt.Errorf("%w: report too large (at most 64 disks and images, errors of 4096 bytes, an export name of 64, a handle of 256)", ErrInvalidTestFailover)
	}
	return nil
}
