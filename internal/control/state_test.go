package control

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// want is the protection state machine written out a second time, by
// state: the test compares the table in state.go with it over the whole
// cross product of states and events, so a row added, dropped or
// redirected there shows here.
var want = map[MachineState]map[Event]MachineState{
	StateUnprotected: {EventEnable: StateEnabling},
	StateEnabling: {
		EventAgentJoinedStream: StateInitialReplication,
		EventDisable:           StateDisabling,
	},
	StateInitialReplication: {
		EventInitialDone:   StateProtected,
		EventPause:         StatePaused,
		EventHeartbeatLost: StateCritical,
		EventDisable:       StateDisabling,
	},
	StateProtected: {
		EventResyncStarted:   StateResynchronizing,
		EventPause:           StatePaused,
		EventHeartbeatLost:   StateCritical,
		EventFailover:        StateFailoverStarted,
		EventPlannedFailover: StateFailoverDraining,
		EventDisable:         StateDisabling,
	},
	StateResynchronizing: {
		EventResyncDone:    StateProtected,
		EventPause:         StatePaused,
		EventHeartbeatLost: StateCritical,
		EventFailover:      StateFailoverStarted,
		EventDisable:       StateDisabling,
	},
	StatePaused: {
		EventResume:   StateResynchronizing,
		EventFailover: StateFailoverStarted,
		EventDisable:  StateDisabling,
	},
	StateCritical: {
		EventHeartbeatBack: StateResynchronizing,
		EventPause:         StatePaused,
		EventFailover:      StateFailoverStarted,
		EventDisable:       StateDisabling,
	},
	StateDisabling: {EventDisabled: StateUnprotected},
	StateFailoverDraining: {
		EventDrained:        StateFailoverStarted,
		EventFailoverFailed: StateFailoverFailed,
		EventFailover:       StateFailoverStarted,
		EventDisable:        StateDisabling,
	},
	StateFailoverStarted: {
		EventFailoverDone:   StateFailedOver,
		EventFailoverFailed: StateFailoverFailed,
		EventFailbackDone:   StateResynchronizing,
	},
	StateFailoverFailed: {
		EventFailover:      StateFailoverStarted,
		EventResyncStarted: StateResynchronizing,
		EventDisable:       StateDisabling,
	},
	StateFailedOver: {
		EventFailover:  StateFailoverStarted,
		EventCommit:    StateFailoverCommitted,
		EventReprotect: StateReprotecting,
		EventDisable:   StateDisabling,
	},
	StateFailoverCommitted: {
		EventReprotect: StateReprotecting,
		EventDisable:   StateDisabling,
	},
	StateReprotecting: {
		EventReprotectDone: StateProtected,
		EventHeartbeatLost: StateCritical,
		EventDisable:       StateDisabling,
	},
}

func TestTransitionCrossProduct(t *testing.T) {
	if len(want) != len(MachineStates) {
		t.Fatalf("the test knows %d states, MachineStates lists %d", len(want), len(MachineStates))
	}
	// An unknown state and an unknown event are part of the product too.
	states := append(slices.Clone(MachineStates), "", "bogus")
	events := append(slices.Clone(AllEvents), "", "bogus", EventTestFailover)
	for _, from := range states {
		for _, ev := range events {
			got, err := Transition(from, ev)
			to, ok := want[from][ev]
			if ok {
				if err != nil || got != to {
					t.Errorf("Transition(%s, %s) = %s, %v; want %s", from, ev, got, err, to)
				}
				continue
			}
			var te *TransitionError
			if !errors.As(err, &te) || !errors.Is(err, ErrTransition) {
				t.Errorf("Transition(%s, %s) = %s, %v; want a *TransitionError", from, ev, got, err)
				continue
			}
			if got != from {
				t.Errorf("Transition(%s, %s) refused but returned %s; want the unchanged state", from, ev, got)
			}
			if te.From != from || te.Event != ev || !slices.Equal(te.Allowed, Events(from)) {
				t.Errorf("Transition(%s, %s): error %+v; want From, Event and Allowed %v", from, ev, te, Events(from))
			}
			for _, a := range te.Allowed {
				if !strings.Contains(err.Error(), string(a)) {
					t.Errorf("Transition(%s, %s): message %q does not list allowed event %s", from, ev, err, a)
				}
			}
		}
	}
}

func TestEventsMatchTable(t *testing.T) {
	for _, s := range MachineStates {
		var evs []Event
		for _, ev := range AllEvents {
			if _, ok := want[s][ev]; ok {
				evs = append(evs, ev)
			}
		}
		if got := Events(s); !slices.Equal(got, evs) {
			t.Errorf("Events(%s) = %v; want %v", s, got, evs)
		}
	}
	if got := Events("bogus"); got != nil {
		t.Errorf("Events(bogus) = %v; want none", got)
	}
	// Every event is used somewhere, and the table names only known
	// states and events.
	used := map[Event]bool{}
	for _, tr := range Transitions() {
		used[tr.Event] = true
		if !tr.From.Valid() || !tr.To.Valid() || !slices.Contains(AllEvents, tr.Event) {
			t.Errorf("table row %+v names an unknown state or event", tr)
		}
	}
	for _, ev := range AllEvents {
		if !used[ev] {
			t.Errorf("event %s appears in no transition", ev)
		}
	}
}

// reach returns the states reachable from start following edges.
func reach(start MachineState, edges func(MachineState) []MachineState) map[MachineState]bool {
	seen := map[MachineState]bool{start: true}
	todo := []MachineState{start}
	for len(todo) > 0 {
		s := todo[0]
		todo = todo[1:]
		for _, n := range edges(s) {
			if !seen[n] {
				seen[n] = true
				todo = append(todo, n)
			}
		}
	}
	return seen
}

func TestEveryStateReachableAndNoDeadEnd(t *testing.T) {
	forward := func(s MachineState) []MachineState {
		var out []MachineState
		for _, ev := range Events(s) {
			to, _ := Transition(s, ev)
			out = append(out, to)
		}
		return out
	}
	fromStart := reach(StateUnprotected, forward)
	for _, s := range MachineStates {
		if !fromStart[s] {
			t.Errorf("state %s is not reachable from %s", s, StateUnprotected)
		}
		// No dead end: from every state the machine can get back to
		// unprotected (and so start again).
		if !reach(s, forward)[StateUnprotected] {
			t.Errorf("state %s cannot reach %s: a dead end", s, StateUnprotected)
		}
		if len(Events(s)) == 0 {
			t.Errorf("state %s allows no event", s)
		}
	}
}

func TestTransitionErrorMessage(t *testing.T) {
	_, err := Transition(StateDisabling, EventFailover)
	const msg = `event "failover" is not allowed in state disabling: allowed: disabled`
	if err == nil || err.Error() != msg {
		t.Errorf("got %v; want %s", err, msg)
	}
	_, err = Transition("frozen", EventEnable)
	if err == nil || !strings.Contains(err.Error(), `machine state "frozen" is unknown`) || !strings.Contains(err.Error(), "unprotected") {
		t.Errorf("unknown state: got %v", err)
	}
}

func TestTestTransition(t *testing.T) {
	tests := []struct {
		ms   MachineState
		from TestFailoverState
		ev   Event
		want TestFailoverState // "" with ok false: refused
		ok   bool
	}{
		{StateProtected, TestNone, EventTestFailover, TestRunning, true},
		{StateResynchronizing, TestNone, EventTestFailover, TestRunning, true},
		{StatePaused, TestNone, EventTestFailover, TestRunning, true},
		{StateCritical, TestNone, EventTestFailover, TestRunning, true},
		{StateProtected, TestRunning, EventTestCleanup, TestCleaningUp, true},
		// Cleanup goes on whatever happened to protection meanwhile.
		{StateFailedOver, TestRunning, EventTestCleanup, TestCleaningUp, true},
		{StateFailedOver, TestCleaningUp, EventTestCleanupDone, TestNone, true},
		{StateProtected, TestCleaningUp, EventTestCleanup, TestCleaningUp, true},

		{StateProtected, TestRunning, EventTestFailover, TestRunning, false},
		{StateProtected, TestNone, EventTestCleanup, TestNone, false},
		{StateProtected, TestRunning, EventTestCleanupDone, TestRunning, false},
		{StateProtected, TestNone, EventFailover, TestNone, false},
	}
	for _, ms := range MachineStates {
		if !slices.Contains([]MachineState{StateProtected, StateResynchronizing, StatePaused, StateCritical}, ms) {
			tests = append(tests, struct {
				ms   MachineState
				from TestFailoverState
				ev   Event
				want TestFailoverState
				ok   bool
			}{ms, TestNone, EventTestFailover, TestNone, false})
		}
	}
	for _, tt := range tests {
		got, err := TestTransition(tt.ms, tt.from, tt.ev)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("TestTransition(%s, %q, %s) = %q, %v; want %q ok=%v", tt.ms, tt.from, tt.ev, got, err, tt.want, tt.ok)
		}
		var te *TransitionError
		if !tt.ok && (!errors.As(err, &te) || te.Test != tt.from) {
			t.Errorf("TestTransition(%s, %q, %s): error %v; want a *TransitionError naming the flag", tt.ms, tt.from, tt.ev, err)
		}
	}
	_, err := TestTransition(StateEnabling, TestNone, EventTestFailover)
	if err == nil || !strings.Contains(err.Error(), "needs recovery points") {
		t.Errorf("test failover while enabling: got %v", err)
	}
	_, err = TestTransition(StateProtected, TestRunning, EventTestFailover)
	if err == nil || !strings.Contains(err.Error(), "with a test failover running") {
		t.Errorf("second test failover: got %v", err)
	}
}

func TestCheckTestFailover(t *testing.T) {
	for _, ev := range AllEvents {
		err := CheckTestFailover("web01", TestRunning, ev)
		blocked := ev == EventDisable || ev == EventCommit
		if (err != nil) != blocked {
			t.Errorf("CheckTestFailover(running, %s) = %v; want blocked=%v", ev, err, blocked)
		}
		if blocked && (!errors.Is(err, ErrTestFailoverActive) || !strings.Contains(err.Error(), "standby machines test-cleanup web01")) {
			t.Errorf("CheckTestFailover(running, %s) = %v; want ErrTestFailoverActive with a hint", ev, err)
		}
		if err := CheckTestFailover("web01", TestNone, ev); err != nil {
			t.Errorf("CheckTestFailover(none, %s) = %v", ev, err)
		}
	}
}

var updateDoc = flag.Bool("update-doc", false, "rewrite the generated part of docs/control.md")

const (
	docPath  = "../../docs/control.md"
	docBegin = "<!-- BEGIN transitions: generated by `go test ./internal/control -run TestDocListsEveryTransition -update-doc` -->\n"
	docEnd   = "<!-- END transitions -->\n"
)

// transitionDoc renders the transition table as a mermaid diagram and a
// markdown table.
func transitionDoc() string {
	id := func(s MachineState) string { return strings.ReplaceAll(string(s), "-", "_") }
	var b strings.Builder
	b.WriteString("```mermaid\nstateDiagram-v2\n")
	for _, s := range MachineStates {
		fmt.Fprintf(&b, "    state \"%s\" as %s\n", s, id(s))
	}
	fmt.Fprintf(&b, "    [*] --> %s\n", id(StateUnprotected))
	for _, t := range Transitions() {
		fmt.Fprintf(&b, "    %s --> %s: %s\n", id(t.From), id(t.To), t.Event)
	}
	b.WriteString("```\n\n| state | event | next state |\n|---|---|---|\n")
	for _, t := range Transitions() {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", t.From, t.Event, t.To)
	}
	return b.String()
}

func TestDocListsEveryTransition(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers %q and %q", docPath, docBegin, docEnd)
	}
	want := transitionDoc()
	got := doc[i+len(docBegin) : j]
	if got == want {
		return
	}
	if *updateDoc {
		doc = doc[:i+len(docBegin)] + want + doc[j:]
		if err := os.WriteFile(docPath, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s does not list the transition table as it is; run go test ./internal/control -run TestDocListsEveryTransition -update-doc", docPath)
}
