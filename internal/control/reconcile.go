package control

// Agent replication states, as agents report them (internal/agent).
const (
	AgentConnecting = "connecting"
	AgentInitial    = "initial-replication"
	AgentResyncing  = "resynchronizing"
	AgentProtected  = "protected"
	AgentFenced     = "fenced"
)

// ReportEvents says which events an agent's report of its replication
// state means for a machine in state s, in order: applying them one after
// the other with Transition brings the machine's state in line with what
// the agent does. A report that means nothing new gives none.
//
// The agent's states map to the machine's as: initial-replication while
// the first copy runs; protected in delta; resynchronizing while it
// compares or catches up. "connecting" and "fenced" give no event: an
// agent that cannot reach its process server is seen through the health
// assessment (RPO grows), and fencing is the failover's business.
func ReportEvents(s MachineState, agent string) []Event {
	switch s {
	case StateEnabling:
		switch agent {
		case AgentInitial, AgentResyncing:
			return []Event{EventAgentJoinedStream}
		case AgentProtected:
			return []Event{EventAgentJoinedStream, EventInitialDone}
		}
	case StateInitialReplication:
		if agent == AgentProtected {
			return []Event{EventInitialDone}
		}
	case StateProtected:
		if agent == AgentResyncing || agent == AgentInitial {
			return []Event{EventResyncStarted}
		}
	case StateResynchronizing:
		if agent == AgentProtected {
			return []Event{EventResyncDone}
		}
	case StateReprotecting:
		if agent == AgentProtected {
			return []Event{EventReprotectDone}
		}
	case StateCritical:
		switch agent {
		case AgentInitial, AgentResyncing:
			return []Event{EventHeartbeatBack}
		case AgentProtected:
			return []Event{EventHeartbeatBack, EventResyncDone}
		}
	}
	return nil
}

// Apply applies events to s in order with Transition; it stops at the
// first refused one and returns the state reached and that error.
func Apply(s MachineState, evs ...Event) (MachineState, error) {
	for _, ev := range evs {
		next, err := Transition(s, ev)
		if err != nil {
			return s, err
		}
		s = next
	}
	return s, nil
}
