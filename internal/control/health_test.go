package control

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// healthy returns the input of a protected machine with nothing wrong at
// t0: fresh heartbeats and report, RPO 2 s, a point 5 s ago.
func healthy() HealthInput {
	srv := func(id, name string, role Role) Server {
		return Server{ID: id, Name: name, Role: role, JoinedAt: t0.Add(-time.Hour), HeartbeatAt: t0.Add(-5 * time.Second)}
	}
	return HealthInput{
		Machine: Machine{ID: "m1", Name: "web01", State: StateProtected, Replication: ReplicationReport{
			RPOSeconds: 2, BacklogBytes: 1 << 20, LastPointAt: t0.Add(-5 * time.Second), ReportedAt: t0.Add(-3 * time.Second),
		}},
		Policy:  DefaultPolicy(),
		Agent:   srv("a1", "host1", RoleAgent),
		Process: srv("p1", "ps1", RoleProcess),
		Target:  srv("t1", "mt1", RoleTarget),
	}
}

func TestAssessHealth(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*HealthInput)
		health  Health
		reasons []string // exact, in order
	}{
		{"healthy", func(*HealthInput) {}, HealthNormal, nil},
		{"rpo at threshold", func(in *HealthInput) { in.Machine.Replication.RPOSeconds = 30 }, HealthNormal, nil},
		{"rpo warning", func(in *HealthInput) { in.Machine.Replication.RPOSeconds = 45 },
			HealthWarning, []string{"RPO 45s exceeds the threshold 30s"}},
		{"rpo critical", func(in *HealthInput) { in.Machine.Replication.RPOSeconds = 90.5 },
			HealthCritical, []string{"RPO 1m30s exceeds the threshold 30s more than 2 times"}},
		{"rpo threshold from policy", func(in *HealthInput) {
			in.Policy.RPOThreshold = Duration(2 * time.Minute)
			in.Machine.Replication.RPOSeconds = 150
		}, HealthWarning, []string{"RPO 2m30s exceeds the threshold 2m"}},
		{"rpo unknown", func(in *HealthInput) { in.Machine.Replication.RPOSeconds = -1 }, HealthNormal, nil},
		{"rpo NaN", func(in *HealthInput) { in.Machine.Replication.RPOSeconds = math.NaN() }, HealthNormal, nil},
		{"zero policy reads as defaults", func(in *HealthInput) {
			in.Policy = Policy{}
			in.Machine.Replication.RPOSeconds = 45
		}, HealthWarning, []string{"RPO 45s exceeds the threshold 30s"}},
		{"points late", func(in *HealthInput) { in.Machine.Replication.LastPointAt = t0.Add(-45 * time.Second) },
			HealthWarning, []string{"no recovery point for 45s (expected every 10s)"}},
		{"points very late", func(in *HealthInput) { in.Machine.Replication.LastPointAt = t0.Add(-3 * time.Minute) },
			HealthCritical, []string{"no recovery point for 3m (expected every 10s)"}},
		{"points late by the rpo rule", func(in *HealthInput) {
			// 10 intervals of 1 s are 10 s, but twice the RPO threshold is 60 s.
			in.Policy.PointInterval = Duration(time.Second)
			in.Machine.Replication.LastPointAt = t0.Add(-50 * time.Second)
		}, HealthWarning, []string{"no recovery point for 50s (expected every 1s)"}},
		{"points unknown", func(in *HealthInput) { in.Machine.Replication.LastPointAt = time.Time{} }, HealthNormal, nil},
		{"agent heartbeat warning", func(in *HealthInput) { in.Agent.HeartbeatAt = t0.Add(-40 * time.Second) },
			HealthWarning, []string{"agent host1 heartbeat 40s old"}},
		{"agent heartbeat critical", func(in *HealthInput) { in.Agent.HeartbeatAt = t0.Add(-2 * time.Minute) },
			HealthCritical, []string{"agent host1 heartbeat 2m old"}},
		{"agent never heartbeated", func(in *HealthInput) {
			in.Agent.HeartbeatAt = time.Time{}
			in.Agent.JoinedAt = t0.Add(-5 * time.Minute)
		}, HealthCritical, []string{"agent host1 has sent no heartbeat since it joined 5m ago"}},
		{"agent revoked", func(in *HealthInput) { in.Agent.Revoked = true },
			HealthCritical, []string{"agent host1 is revoked"}},
		{"heartbeat from the future", func(in *HealthInput) { in.Agent.HeartbeatAt = t0.Add(time.Minute) }, HealthNormal, nil},
		{"servers late", func(in *HealthInput) {
			in.Process.HeartbeatAt = t0.Add(-45 * time.Second)
			in.Target.HeartbeatAt = t0.Add(-10 * time.Minute)
		}, HealthCritical, []string{"master target mt1 heartbeat 10m old", "process server ps1 heartbeat 45s old"}},
		{"servers unassigned", func(in *HealthInput) { in.Process, in.Target = Server{}, Server{} }, HealthNormal, nil},
		{"report stale", func(in *HealthInput) { in.Machine.Replication.ReportedAt = t0.Add(-2 * time.Minute) },
			HealthWarning, []string{"last replication report 2m old"}},
		{"report stale with the agent silent says only the heartbeat", func(in *HealthInput) {
			in.Machine.Replication.ReportedAt = t0.Add(-2 * time.Minute)
			in.Agent.HeartbeatAt = t0.Add(-2 * time.Minute)
		}, HealthCritical, []string{"agent host1 heartbeat 2m old"}},
		{"agent error", func(in *HealthInput) { in.Machine.Replication.LastError = "process server ps1: connection refused" },
			HealthWarning, []string{"agent reports: process server ps1: connection refused"}},
		{"backlog growing", func(in *HealthInput) {
			in.Previous = ReplicationReport{BacklogBytes: 900 << 20, ReportedAt: t0.Add(-63 * time.Second)}
			in.Machine.Replication.BacklogBytes = 1288490189 // 1.2 GiB
		}, HealthWarning, []string{"backlog of 1.2 GiB growing (+328.8 MiB in 1m)"}},
		{"backlog shrinking", func(in *HealthInput) {
			in.Previous = ReplicationReport{BacklogBytes: 2 << 30, ReportedAt: t0.Add(-63 * time.Second)}
			in.Machine.Replication.BacklogBytes = 1 << 30
		}, HealthNormal, nil},
		{"backlog growing but small", func(in *HealthInput) {
			in.Previous = ReplicationReport{BacklogBytes: 1 << 20, ReportedAt: t0.Add(-63 * time.Second)}
			in.Machine.Replication.BacklogBytes = 10 << 20
		}, HealthNormal, nil},
		{"backlog same report", func(in *HealthInput) {
			in.Previous = in.Machine.Replication
			in.Previous.BacklogBytes = 0
			in.Machine.Replication.BacklogBytes = 1 << 30
		}, HealthNormal, nil},
		{"everything at once, critical first", func(in *HealthInput) {
			in.Machine.Replication.RPOSeconds = 40
			in.Machine.Replication.LastPointAt = t0.Add(-10 * time.Minute)
			in.Process.HeartbeatAt = t0.Add(-35 * time.Second)
		}, HealthCritical, []string{
			"no recovery point for 10m (expected every 10s)",
			"process server ps1 heartbeat 35s old",
			"RPO 40s exceeds the threshold 30s",
		}},

		// By state.
		{"unprotected ignores everything", func(in *HealthInput) {
			in.Machine.State = StateUnprotected
			in.Agent.HeartbeatAt = t0.Add(-time.Hour)
			in.Machine.Replication.RPOSeconds = 1000
		}, HealthNormal, nil},
		{"enabling checks the agent only", func(in *HealthInput) {
			in.Machine.State = StateEnabling
			in.Agent.HeartbeatAt = t0.Add(-40 * time.Second)
			in.Target.HeartbeatAt = t0.Add(-time.Hour)
			in.Machine.Replication.RPOSeconds = 1000
		}, HealthWarning, []string{"agent host1 heartbeat 40s old"}},
		{"initial replication has no rpo yet", func(in *HealthInput) {
			in.Machine.State = StateInitialReplication
			in.Machine.Replication.RPOSeconds = 1000
			in.Machine.Replication.LastPointAt = time.Time{}
		}, HealthNormal, nil},
		{"initial replication with a silent target", func(in *HealthInput) {
			in.Machine.State = StateInitialReplication
			in.Target.HeartbeatAt = t0.Add(-90 * time.Second)
		}, HealthCritical, []string{"master target mt1 heartbeat 1m30s old"}},
		{"resync checks rpo, not points", func(in *HealthInput) {
			in.Machine.State = StateResynchronizing
			in.Machine.Replication.RPOSeconds = 45
			in.Machine.Replication.LastPointAt = t0.Add(-time.Hour)
		}, HealthWarning, []string{"RPO 45s exceeds the threshold 30s"}},
		{"resync alone is normal", func(in *HealthInput) {
			in.Machine.State = StateResynchronizing
			in.Machine.Replication.ResyncLeft = 1 << 30
		}, HealthNormal, nil},
		{"paused", func(in *HealthInput) {
			in.Machine.State = StatePaused
			in.Machine.Replication.RPOSeconds = 1000
		}, HealthWarning, []string{"replication paused by an operator: no recovery points are made (resume: `standby machines resume web01`)"}},
		{"paused with a silent agent", func(in *HealthInput) {
			in.Machine.State = StatePaused
			in.Agent.HeartbeatAt = t0.Add(-5 * time.Minute)
		}, HealthCritical, []string{"agent host1 heartbeat 5m old", "replication paused by an operator: no recovery points are made (resume: `standby machines resume web01`)"}},
		{"critical state", func(in *HealthInput) {
			in.Machine.State = StateCritical
			in.Agent.HeartbeatAt = t0.Add(-5 * time.Minute)
		}, HealthCritical, []string{"replication stopped: the agent's heartbeat was lost", "agent host1 heartbeat 5m old"}},
		{"failover failed", func(in *HealthInput) { in.Machine.State = StateFailoverFailed },
			HealthCritical, []string{"a failover failed: retry it, resume protection or disable it (see the failover job's log)"}},
		{"failed over", func(in *HealthInput) {
			in.Machine.State = StateFailedOver
			in.Agent.HeartbeatAt = t0.Add(-time.Hour)
		}, HealthNormal, nil},
		{"committed", func(in *HealthInput) { in.Machine.State = StateFailoverCommitted },
			HealthWarning, []string{"not protected since the failover: re-protect it to replicate back"}},
		{"reprotecting", func(in *HealthInput) {
			in.Machine.State = StateReprotecting
			in.Machine.Replication.LastError = "x"
			in.Machine.Replication.RPOSeconds = 1000
		}, HealthWarning, []string{"agent reports: x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := healthy()
			tt.change(&in)
			h, reasons := AssessHealth(in, t0)
			if h != tt.health || !slices.Equal(reasons, tt.reasons) {
				t.Errorf("AssessHealth = %s %q\nwant          %s %q", h, reasons, tt.health, tt.reasons)
			}
		})
	}
}

// Every state is assessed without surprises: a healthy machine is normal
// in every state but those whose state is itself a warning or critical.
func TestAssessHealthEveryState(t *testing.T) {
	bad := map[MachineState]Health{
		StatePaused: HealthWarning, StateFailoverCommitted: HealthWarning,
		StateCritical: HealthCritical, StateFailoverFailed: HealthCritical,
	}
	for _, s := range append(slices.Clone(MachineStates), "bogus") {
		in := healthy()
		in.Machine.State = s
		want := bad[s]
		if want == "" {
			want = HealthNormal
		}
		if h, reasons := AssessHealth(in, t0); h != want {
			t.Errorf("state %s: %s %q; want %s", s, h, reasons, want)
		}
	}
}

func TestFormat(t *testing.T) {
	durs := map[time.Duration]string{
		0: "0s", 400 * time.Millisecond: "0.4s", 1500 * time.Millisecond: "1.5s", 45 * time.Second: "45s",
		59*time.Second + 900*time.Millisecond: "59s", time.Minute: "1m", 150 * time.Second: "2m30s",
		time.Hour + 5*time.Minute + 7*time.Second: "1h5m", 2 * time.Hour: "2h", 51 * time.Hour: "2d3h",
		-3 * time.Second: "-3s",
	}
	for d, want := range durs {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %s; want %s", d, got, want)
		}
	}
	sizes := map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 64 << 20: "64.0 MiB", 1288490189: "1.2 GiB",
		-2048: "-2.0 KiB", math.MinInt64: "-8.0 EiB", math.MaxInt64: "8.0 EiB",
	}
	for n, want := range sizes {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %s; want %s", n, got, want)
		}
	}
}

func TestAssessFindingsNameConditions(t *testing.T) {
	in := healthy()
	in.Machine.Replication.RPOSeconds = 100
	in.Agent.HeartbeatAt = t0.Add(-time.Minute * 2)
	fs := Assess(in, t0)
	var conds []string
	for _, f := range fs {
		conds = append(conds, f.Condition)
		if f.Severity != SeverityCritical || !strings.Contains(f.Reason, " ") {
			t.Errorf("finding %+v", f)
		}
	}
	if want := []string{ConditionAgentHeartbeat, ConditionRPO}; !slices.Equal(conds, want) {
		t.Errorf("conditions %v; want %v", conds, want)
	}
}
