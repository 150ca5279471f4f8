package control

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// TestFailover is one test failover of a machine: what the operator asked
// for (point, replica machine) and what its master target reports back.
// It is kept on the machine after the cleanup, as the record of the last
// test; Machine.TestFailover says whether one exists now.
type TestFailover struct {
	// ID is new for each test failover; the master target's reports name
	// it, so a late report of an earlier test is not taken for this one.
	ID string `json:"id"`
	// Point selects the recovery point: latest, latest-app, a point id
	// or an RFC 3339 time (docs/exports.md).
	Point string `json:"point"`
	// Replica is the replica machine to start from the point.
	Replica ReplicaSpec `json:"replica"`
	// RequestedAt is when the test failover was asked for.
	RequestedAt time.Time `json:"requested_at"`
	// Report is what the master target did, as it last said.
	Report TestReport `json:"report"`
}

// ReplicaSpec is the replica machine of a test failover. Its network is
// always isolated: a test copy must never talk to production.
type ReplicaSpec struct {
	// Name is the replica machine's name; default "<machine>-test".
	Name string `json:"name,omitempty"`
	// CPUs default to 1, MemoryMiB to 512 (the driver's defaults).
	CPUs      int `json:"cpus,omitempty"`
	MemoryMiB int `json:"memory_mib,omitempty"`
}

// TestPhase is where a master target is with a test failover.
type TestPhase string

// Test failover phases, as the master target reports them.
const (
	TestPhaseStarting TestPhase = "starting" // exporting the point, starting the machine
	TestPhaseRunning  TestPhase = "running"  // the replica machine runs from the export
	TestPhaseFailed   TestPhase = "failed"   // it could not be done: Error says why
	TestPhaseRemoved  TestPhase = "removed"  // cleaned up: machine stopped, export and overlay gone
)

// TestReport is a master target's report of a test failover.
type TestReport struct {
	Phase TestPhase `json:"phase,omitempty"`
	// PointID and PointTime are the recovery point the selector chose.
	PointID   uint64    `json:"point_id,omitempty"`
	PointTime time.Time `json:"point_time,omitempty"`
	// Export is the name of the NBD export the replica machine runs from;
	// Disks its disks' NBD URIs, in boot order.
	Export string   `json:"export,omitempty"`
	Disks  []string `json:"disks,omitempty"`
	// Machine is the replica machine's driver handle, MachineState its
	// run state (running, stopped, unknown; empty: none).
	Machine      string    `json:"machine,omitempty"`
	MachineState string    `json:"machine_state,omitempty"`
	Error        string    `json:"error,omitempty"`
	ReportedAt   time.Time `json:"reported_at,omitempty"`
}

// ErrInvalidTestFailover is wrapped by the errors of ReplicaSpec.Validate
// and TestReport.Validate.
var ErrInvalidTestFailover = errors.New("invalid test failover")

var replicaNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ReplicaName is the replica machine's name for machine: Name, or
// "<machine>-test".
func (r ReplicaSpec) ReplicaName(machine string) string {
	if r.Name != "" {
		return r.Name
	}
	return machine + "-test"
}

// Validate reports every invalid field, with what is allowed.
func (r ReplicaSpec) Validate() error {
	var errs []error
	if r.Name != "" && !replicaNameRE.MatchString(r.Name) {
		errs = append(errs, fmt.Errorf("%w: machine.name %q: allowed: 1-63 of A-Z a-z 0-9 . _ -, starting with a letter or digit", ErrInvalidTestFailover, r.Name))
	}
	if r.CPUs < 0 || r.CPUs > 256 {
		errs = append(errs, fmt.Errorf("%w: machine.cpus %d: allowed: 0 (the driver's default) to 256", ErrInvalidTestFailover, r.CPUs))
	}
	if r.MemoryMiB != 0 && (r.MemoryMiB < 16 || r.MemoryMiB > 4<<20) {
		errs = append(errs, fmt.Errorf("%w: machine.memory_mib %d: allowed: 0 (the driver's default) or 16 to 4194304", ErrInvalidTestFailover, r.MemoryMiB))
	}
	return errors.Join(errs...)
}

// testPhases are the phases a report may carry.
var testPhases = []TestPhase{TestPhaseStarting, TestPhaseRunning, TestPhaseFailed, TestPhaseRemoved}

// Validate checks a report's phase and sizes.
func (r TestReport) Validate() error {
	ok := false
	for _, p := range testPhases {
		ok = ok || r.Phase == p
	}
	if !ok {
		return fmt.Errorf("%w: phase %q: allowed: starting, running, failed, removed", ErrInvalidTestFailover, r.Phase)
	}
	if len(r.Disks) > 64 || len(r.Error) > 4096 || len(r.Export) > 64 || len(r.Machine) > 256 {
		return fmt.Errorf("%w: report too large (at most 64 disks, an error of 4096 bytes, an export name of 64, a handle of 256)", ErrInvalidTestFailover)
	}
	return nil
}
