package control

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The protection states of a machine. The caller persists the state as
// Machine.State and moves it only through Transition.
const (
	// StateUnprotected: not in a protection group; nothing replicates.
	StateUnprotected MachineState = "unprotected"
	// StateEnabling: protection was requested; waiting for the agent to
	// join the replication stream (or for the policy's InitialStart).
	StateEnabling MachineState = "enabling"
	// StateInitialReplication: the first full copy is under way; there is
	// no recovery point yet.
	StateInitialReplication MachineState = "initial-replication"
	// StateProtected: delta replication; recovery points are being made.
	StateProtected MachineState = "protected"
	// StateResynchronizing: the two sides are compared and differing
	// blocks sent (after a journal overflow, an unclean stop, a fork, a
	// pause or an outage). Retained points stay usable.
	StateResynchronizing MachineState = "resynchronizing"
	// StatePaused: an operator paused replication; the agent keeps
	// capturing writes but ships nothing.
	StatePaused MachineState = "paused"
	// StateCritical: the agent's heartbeat was lost; replication stopped.
	StateCritical MachineState = "critical"
	// StateDisabling: protection is being removed (replica and history
	// released at the master target).
	StateDisabling MachineState = "disabling"
	// StateFailoverDraining: a planned failover stopped the source machine
	// and drains its journal to the master target, ending with a final
	// bookmark; the epoch is not raised yet (the target must take the
	// drained segments). Replication goes on meanwhile; the agent refuses
	// writes.
	StateFailoverDraining MachineState = "failover-draining"
	// StateFailoverStarted: a planned or unplanned failover is running;
	// the epoch was incremented, so the source is fenced.
	StateFailoverStarted MachineState = "failover-started"
	// StateFailoverFailed: a failover did not complete. The operator
	// retries it (maybe with another point), gives up and resumes
	// protection in the original direction, or disables protection.
	StateFailoverFailed MachineState = "failover-failed"
	// StateFailedOver: the replica runs at the secondary site from the
	// chosen point; other points are kept until commit.
	StateFailedOver MachineState = "failed-over"
	// StateFailoverCommitted: the chosen point is final; other history
	// was released. The machine is not protected until re-protect.
	StateFailoverCommitted MachineState = "failover-committed"
	// StateReprotecting: replication in the reverse direction is being
	// set up (sending only what differs); it ends protected, with the
	// sites' roles swapped. Failback is a failover from there.
	StateReprotecting MachineState = "reprotecting"
)

// MachineStates lists every protection state, in life-cycle order, for
// validation messages and documentation.
var MachineStates = []MachineState{
	StateUnprotected, StateEnabling, StateInitialReplication, StateProtected,
	StateResynchronizing, StatePaused, StateCritical, StateDisabling,
	StateFailoverDraining, StateFailoverStarted, StateFailoverFailed, StateFailedOver,
	StateFailoverCommitted, StateReprotecting,
}

// Valid says whether s is one of MachineStates. The zero value is not
// valid: a stored machine always has a state.
func (s MachineState) Valid() bool { return slices.Contains(MachineStates, s) }

// Event is something that happened to a machine, reported by a component
// or an operator, that may move its protection state.
type Event string

// The events of the protection state machine.
const (
	EventEnable            Event = "enable"              // operator adds the machine to a group
	EventAgentJoinedStream Event = "agent-joined-stream" // the agent connected its replication stream
	EventInitialDone       Event = "initial-done"        // the first copy was applied; first point made
	EventResyncStarted     Event = "resync-started"      // the agent began a resynchronisation
	EventResyncDone        Event = "resync-done"         // the resynchronisation (or catch-up) ended
	EventPause             Event = "pause"               // operator pauses replication
	EventResume            Event = "resume"              // operator resumes it
	EventHeartbeatLost     Event = "heartbeat-lost"      // the agent missed its heartbeats
	EventHeartbeatBack     Event = "heartbeat-back"      // the agent is heard again
	EventDisable           Event = "disable"             // operator removes protection
	EventDisabled          Event = "disabled"            // removal finished
	EventFailover          Event = "failover"            // an unplanned failover starts (the epoch is raised)
	EventPlannedFailover   Event = "planned-failover"    // a planned failover stops the source and drains
	EventDrained           Event = "drained"             // the drain ended at a final bookmark: fence and fail over to it
	EventFailoverDone      Event = "failover-done"       // the replica machine runs
	EventFailoverFailed    Event = "failover-failed"     // the failover job failed
	EventCommit            Event = "commit"              // the chosen point is made final
	EventReprotect         Event = "reprotect"           // reverse replication starts
	EventReprotectDone     Event = "reprotect-done"      // reverse replication is in delta
	EventFailbackDone      Event = "failback-done"       // the original agent continues on the primary's disks
)

// Events of the test-failover flag (TestTransition); they never move the
// protection state.
const (
	EventTestFailover    Event = "test-failover"     // a test failover starts
	EventTestCleanup     Event = "test-cleanup"      // its cleanup starts
	EventTestCleanupDone Event = "test-cleanup-done" // its overlay and replica machine are gone
)

// AllEvents lists every event of the protection state machine (not the
// test-failover events), for validation messages and documentation.
var AllEvents = []Event{
	EventEnable, EventAgentJoinedStream, EventInitialDone, EventResyncStarted,
	EventResyncDone, EventPause, EventResume, EventHeartbeatLost,
	EventHeartbeatBack, EventDisable, EventDisabled, EventFailover,
	EventPlannedFailover, EventDrained, EventFailoverDone, EventFailoverFailed,
	EventCommit, EventReprotect, EventReprotectDone, EventFailbackDone,
}

// StateTransition is one row of the transition table: in state From,
// event Event moves the machine to To.
type StateTransition struct {
	From  MachineState
	Event Event
	To    MachineState
}

// transitions is the protection state machine; a (state, event) pair that
// is not here is refused. Every state can reach StateUnprotected (through
// disable), so no state is a dead end; the tests check that, and that
// every state is reachable from StateUnprotected.
//
// Two states deliberately do not remember where they came from, to keep
// the machine small: leaving StatePaused (resume) and StateCritical
// (heartbeat-back) always passes through StateResynchronizing, because
// after a pause or an outage the agent must catch up — from its journal,
// or by a resync of its dirty bitmap — and says so with resync-done (at
// once when there is nothing to send). A machine paused or lost during
// its initial replication continues its copy that way: the copy resumes
// from its bookmark and blocks the target has are not sent again.
//
// A paused machine does not take heartbeat-lost: pausing is the
// operator's decision and must survive an outage; the health assessment
// still reports the silent agent.
var transitions = []StateTransition{
	{StateUnprotected, EventEnable, StateEnabling},

	{StateEnabling, EventAgentJoinedStream, StateInitialReplication},
	{StateEnabling, EventDisable, StateDisabling},

	{StateInitialReplication, EventInitialDone, StateProtected},
	{StateInitialReplication, EventPause, StatePaused},
	{StateInitialReplication, EventHeartbeatLost, StateCritical},
	{StateInitialReplication, EventDisable, StateDisabling},

	{StateProtected, EventResyncStarted, StateResynchronizing},
	{StateProtected, EventPause, StatePaused},
	{StateProtected, EventHeartbeatLost, StateCritical},
	{StateProtected, EventFailover, StateFailoverStarted},
	// A planned failover needs the replica in delta, so that the drain
	// ends at a consistent final bookmark.
	{StateProtected, EventPlannedFailover, StateFailoverDraining},
	{StateProtected, EventDisable, StateDisabling},

	{StateResynchronizing, EventResyncDone, StateProtected},
	{StateResynchronizing, EventPause, StatePaused},
	{StateResynchronizing, EventHeartbeatLost, StateCritical},
	// Retained points from before the resync stay consistent.
	{StateResynchronizing, EventFailover, StateFailoverStarted},
	{StateResynchronizing, EventDisable, StateDisabling},

	{StatePaused, EventResume, StateResynchronizing},
	{StatePaused, EventFailover, StateFailoverStarted},
	{StatePaused, EventDisable, StateDisabling},

	{StateCritical, EventHeartbeatBack, StateResynchronizing},
	{StateCritical, EventPause, StatePaused},
	// The disaster path: the primary site is gone.
	{StateCritical, EventFailover, StateFailoverStarted},
	{StateCritical, EventDisable, StateDisabling},

	{StateDisabling, EventDisabled, StateUnprotected},

	{StateFailoverDraining, EventDrained, StateFailoverStarted},
	// The source could not be stopped or the drain did not finish.
	{StateFailoverDraining, EventFailoverFailed, StateFailoverFailed},
	// A disaster during the drain does not wait for it.
	{StateFailoverDraining, EventFailover, StateFailoverStarted},
	{StateFailoverDraining, EventDisable, StateDisabling},

	{StateFailoverStarted, EventFailoverDone, StateFailedOver},
	{StateFailoverStarted, EventFailoverFailed, StateFailoverFailed},
	// A failback's failover: the original agent compares the primary's
	// disks with the original replica and catches up.
	{StateFailoverStarted, EventFailbackDone, StateResynchronizing},

	// Retry (perhaps from another point).
	{StateFailoverFailed, EventFailover, StateFailoverStarted},
	// Give up: the epoch moved, so the original direction resumes by a
	// resync, never by assuming the replica is unchanged.
	{StateFailoverFailed, EventResyncStarted, StateResynchronizing},
	{StateFailoverFailed, EventDisable, StateDisabling},

	// Change the recovery point before commit.
	{StateFailedOver, EventFailover, StateFailoverStarted},
	{StateFailedOver, EventCommit, StateFailoverCommitted},
	// Re-protect without commit: the failover's export stays, the machine
	// runs from it; history at the secondary stays until commit.
	{StateFailedOver, EventReprotect, StateReprotecting},
	{StateFailedOver, EventDisable, StateDisabling},

	{StateFailoverCommitted, EventReprotect, StateReprotecting},
	{StateFailoverCommitted, EventDisable, StateDisabling},

	{StateReprotecting, EventReprotectDone, StateProtected},
	{StateReprotecting, EventHeartbeatLost, StateCritical},
	{StateReprotecting, EventDisable, StateDisabling},
}

// transitionIndex maps (from, event) to the target state.
var transitionIndex = func() map[StateTransition]MachineState {
	m := make(map[StateTransition]MachineState, len(transitions))
	for _, t := range transitions {
		key := StateTransition{From: t.From, Event: t.Event}
		if _, dup := m[key]; dup {
			panic(fmt.Sprintf("control: duplicate transition %s --%s-->", t.From, t.Event))
		}
		m[key] = t.To
	}
	return m
}()

// Transitions returns a copy of the transition table, in table order.
func Transitions() []StateTransition { return slices.Clone(transitions) }

// ErrTransition is wrapped by every *TransitionError, so a caller can test
// for a refused transition with errors.Is. It is permanent: retrying the
// same event in the same state gives the same answer.
var ErrTransition = errors.New("transition not allowed")

// TransitionError is a refused transition: the machine is in From, Event
// is not allowed there, Allowed are the events that are.
//
// Test is the machine's test-failover flag when the error comes from
// TestTransition, and TestNone otherwise.
type TransitionError struct {
	From    MachineState
	Test    TestFailoverState
	Event   Event
	Allowed []Event
}

func (e *TransitionError) Error() string {
	if !e.From.Valid() {
		return fmt.Sprintf("event %q: machine state %q is unknown (known: %s)", e.Event, e.From, joinStates(MachineStates))
	}
	state := string(e.From)
	if e.Test != TestNone {
		state += " with a test failover " + string(e.Test)
	}
	if len(e.Allowed) == 0 && e.Event == EventTestFailover {
		return fmt.Sprintf("event %q is not allowed in state %s: a test failover needs recovery points (states: %s)",
			e.Event, state, joinStates(testStartStates))
	}
	if len(e.Allowed) == 0 {
		return fmt.Sprintf("event %q is not allowed in state %s: no event is", e.Event, state)
	}
	return fmt.Sprintf("event %q is not allowed in state %s: allowed: %s", e.Event, state, joinEvents(e.Allowed))
}

// Unwrap makes errors.Is(err, ErrTransition) hold.
func (e *TransitionError) Unwrap() error { return ErrTransition }

// Transition returns the state event ev moves a machine in state from to,
// or a *TransitionError listing the events allowed in from.
func Transition(from MachineState, ev Event) (MachineState, error) {
	if to, ok := transitionIndex[StateTransition{From: from, Event: ev}]; ok {
		return to, nil
	}
	return from, &TransitionError{From: from, Event: ev, Allowed: Events(from)}
}

// Events lists the events allowed in state from, in the order of
// AllEvents; none for an unknown state.
func Events(from MachineState) []Event {
	var evs []Event
	for _, ev := range AllEvents {
		if _, ok := transitionIndex[StateTransition{From: from, Event: ev}]; ok {
			evs = append(evs, ev)
		}
	}
	return evs
}

// TestFailoverState says whether a test failover of the machine exists.
//
// A test failover does not change the machine's protection state (DESIGN
// §5: production is untouched and replication continues), so it is not a
// state of the table above: it would double every state. It is a small
// flag of its own, beside the protection state, with its own three
// values. It is set before the test failover creates anything, so a start
// that fails half-way still needs (and gets) a cleanup.
type TestFailoverState string

// Test failover states. The zero value is TestNone.
const (
	TestNone       TestFailoverState = ""            // no test failover
	TestRunning    TestFailoverState = "running"     // an overlay (and maybe a replica machine) exists
	TestCleaningUp TestFailoverState = "cleaning-up" // cleanup under way
)

// testStartStates are the protection states in which a test failover may
// start: the master target has retained points and serves them whatever
// replication is doing. Not before the first point, not while the machine
// is failed over or being disabled.
var testStartStates = []MachineState{StateProtected, StateResynchronizing, StatePaused, StateCritical}

// TestTransition moves the test-failover flag of a machine in protection
// state ms. It refuses a test failover in a state without usable points
// and a second test failover while one exists, with a *TransitionError.
func TestTransition(ms MachineState, from TestFailoverState, ev Event) (TestFailoverState, error) {
	allowed := TestEvents(ms, from)
	if !slices.Contains(allowed, ev) {
		return from, &TransitionError{From: ms, Test: from, Event: ev, Allowed: allowed}
	}
	switch ev {
	case EventTestFailover:
		return TestRunning, nil
	case EventTestCleanup:
		return TestCleaningUp, nil
	default: // EventTestCleanupDone
		return TestNone, nil
	}
}

// TestEvents lists the test-failover events allowed for a machine in
// protection state ms whose flag is from.
func TestEvents(ms MachineState, from TestFailoverState) []Event {
	switch from {
	case TestNone:
		if slices.Contains(testStartStates, ms) {
			return []Event{EventTestFailover}
		}
		return nil
	case TestRunning:
		return []Event{EventTestCleanup}
	case TestCleaningUp:
		// A cleanup interrupted may be started again.
		return []Event{EventTestCleanup, EventTestCleanupDone}
	}
	return nil
}

// ErrTestFailoverActive is returned by CheckTestFailover.
var ErrTestFailoverActive = errors.New("a test failover of the machine exists")

// CheckTestFailover refuses the protection events that would release
// history a test failover's overlay may stand on — disable and commit —
// while the machine has a test failover. A failover itself is allowed: a
// disaster must not wait for a forgotten test.
func CheckTestFailover(machine string, test TestFailoverState, ev Event) error {
	if test == TestNone || (ev != EventDisable && ev != EventCommit) {
		return nil
	}
	return fmt.Errorf("%s of %s: %w (%s); clean it up first: run `standby machines test-cleanup %s`",
		ev, machine, ErrTestFailoverActive, test, machine)
}

func joinEvents(evs []Event) string {
	s := make([]string, len(evs))
	for i, ev := range evs {
		s[i] = string(ev)
	}
	return strings.Join(s, ", ")
}

func joinStates(sts []MachineState) string {
	s := make([]string, len(sts))
	for i, st := range sts {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}
