package control

import "testing"

// Every event a report gives is allowed in the state it is given for, and
// the machine ends where the agent is.
func TestReportEvents(t *testing.T) {
	agentStates := []string{AgentConnecting, AgentInitial, AgentResyncing, AgentProtected, AgentFenced}
	for _, s := range MachineStates {
		for _, a := range agentStates {
			evs := ReportEvents(s, a)
			got, err := Apply(s, evs...)
			if err != nil {
				t.Errorf("%s + agent %s: events %v refused: %v", s, a, evs, err)
				continue
			}
			if len(evs) > 0 && a == AgentProtected && got != StateProtected {
				t.Errorf("%s + agent protected: ends %s, want protected", s, got)
			}
		}
	}
	for _, tc := range []struct {
		from  MachineState
		agent string
		want  MachineState
	}{
		{StateEnabling, AgentInitial, StateInitialReplication},
		{StateEnabling, AgentProtected, StateProtected},
		{StateInitialReplication, AgentProtected, StateProtected},
		{StateProtected, AgentResyncing, StateResynchronizing},
		{StateResynchronizing, AgentProtected, StateProtected},
		{StateCritical, AgentResyncing, StateResynchronizing},
		{StateCritical, AgentProtected, StateProtected},
		{StatePaused, AgentProtected, StatePaused},           // the operator's pause stands
		{StateUnprotected, AgentProtected, StateUnprotected}, // a leftover stream does not protect
		{StateProtected, AgentConnecting, StateProtected},
	} {
		got, err := Apply(tc.from, ReportEvents(tc.from, tc.agent)...)
		if err != nil || got != tc.want {
			t.Errorf("%s + agent %s: %s (%v), want %s", tc.from, tc.agent, got, err, tc.want)
		}
	}
}
