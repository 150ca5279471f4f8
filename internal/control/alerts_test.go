package control

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func keys(as []Alert) []string {
	var ks []string
	for _, a := range as {
		ks = append(ks, a.Key)
	}
	return ks
}

func TestDesiredAlerts(t *testing.T) {
	type want struct {
		key, msg string
		sev      Severity
	}
	tests := []struct {
		name   string
		change func(*AlertInput)
		want   []want
	}{
		{"all well", func(*AlertInput) {}, nil},
		{"rpo", func(in *AlertInput) { in.Machines[0].Machine.Replication.RPOSeconds = 45 },
			[]want{{"rpo/m1", "machine web01: RPO 45s exceeds the threshold 30s", SeverityWarning}}},
		{"rpo and points of two machines", func(in *AlertInput) {
			in.Machines[0].Machine.Replication.RPOSeconds = 100
			in.Machines[1].Machine.Replication.LastPointAt = t0.Add(-time.Minute)
		}, []want{
			{"points/m2", "machine db01: no recovery point for 1m (expected every 10s)", SeverityWarning},
			{"rpo/m1", "machine web01: RPO 1m40s exceeds the threshold 30s more than 2 times", SeverityCritical},
		}},
		{"a silent process server is one alert, not one per machine", func(in *AlertInput) {
			in.Machines[0].Process.HeartbeatAt = t0.Add(-2 * time.Minute)
			in.Machines[1].Process.HeartbeatAt = t0.Add(-2 * time.Minute)
			in.Servers[1].HeartbeatAt = t0.Add(-2 * time.Minute)
		}, []want{{"heartbeat/p1", "process server ps1: no heartbeat for 2m", SeverityCritical}}},
		{"agent lost: state and heartbeat", func(in *AlertInput) {
			in.Machines[0].Machine.State = StateCritical
			in.Machines[0].Agent.HeartbeatAt = t0.Add(-40 * time.Second)
			in.Servers[0].HeartbeatAt = t0.Add(-40 * time.Second)
		}, []want{
			{"heartbeat/a1", "agent host1: no heartbeat for 40s", SeverityWarning},
			{"state/m1", "machine web01: replication stopped: the agent's heartbeat was lost", SeverityCritical},
		}},
		{"server never heartbeated", func(in *AlertInput) {
			in.Servers[2].HeartbeatAt = time.Time{}
			in.Servers[2].JoinedAt = t0.Add(-45 * time.Second)
		}, []want{{"heartbeat/t1", "master target mt1: no heartbeat since it joined 45s ago", SeverityWarning}}},
		{"revoked servers raise nothing", func(in *AlertInput) {
			in.Servers[2].Revoked = true
			in.Servers[2].HeartbeatAt = t0.Add(-time.Hour)
			in.Servers[2].CertExpires = t0.Add(-time.Hour)
		}, nil},
		{"certificates", func(in *AlertInput) {
			in.Servers[0].CertExpires = t0.Add(10 * 24 * time.Hour)
			in.Servers[1].CertExpires = t0.Add(36 * time.Hour)
			in.Servers[2].CertExpires = t0.Add(-3 * time.Hour)
		}, []want{
			{"certificate/a1", "agent host1: certificate expires in 10d; renew it", SeverityWarning},
			{"certificate/p1", "process server ps1: certificate expires in 1d12h; renew it", SeverityCritical},
			{"certificate/t1", "master target mt1: certificate expired 3h ago; it cannot connect until it is renewed", SeverityCritical},
		}},
		{"paused and committed are health, not alerts", func(in *AlertInput) {
			in.Machines[0].Machine.State = StatePaused
			in.Machines[1].Machine.State = StateFailoverCommitted
		}, nil},
		{"failover failed", func(in *AlertInput) { in.Machines[1].Machine.State = StateFailoverFailed },
			[]want{{"state/m2", "machine db01: a failover failed: retry it, resume protection or disable it (see the failover job's log)", SeverityCritical}}},
		{"agent error and stale report", func(in *AlertInput) {
			in.Machines[0].Machine.Replication.LastError = "disk full"
			in.Machines[1].Machine.Replication.ReportedAt = t0.Add(-5 * time.Minute)
		}, []want{
			{"error/m1", "machine web01: agent reports: disk full", SeverityWarning},
			{"report/m2", "machine db01: last replication report 5m old", SeverityWarning},
		}},
		{"a machine listed twice keeps the worse", func(in *AlertInput) {
			dup := in.Machines[0]
			dup.Machine.Replication.RPOSeconds = 100
			in.Machines[0].Machine.Replication.RPOSeconds = 40
			in.Machines = append(in.Machines, dup)
		}, []want{{"rpo/m1", "machine web01: RPO 1m40s exceeds the threshold 30s more than 2 times", SeverityCritical}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m1, m2 := healthy(), healthy()
			m2.Machine.ID, m2.Machine.Name = "m2", "db01"
			in := AlertInput{Machines: []HealthInput{m1, m2}, Servers: []Server{m1.Agent, m1.Process, m1.Target}}
			tt.change(&in)
			got := DesiredAlerts(in, t0)
			if len(got) != len(tt.want) {
				t.Fatalf("got alerts %v; want %d", keys(got), len(tt.want))
			}
			for i, w := range tt.want {
				a := got[i]
				if a.Key != w.key || a.Message != w.msg || a.Severity != w.sev {
					t.Errorf("alert %d = %s %s %q\nwant       %s %s %q", i, a.Key, a.Severity, a.Message, w.key, w.sev, w.msg)
				}
				if !a.RaisedAt.Equal(t0) || !a.LastSeen.Equal(t0) || a.Count != 1 || !a.Active() {
					t.Errorf("alert %s: times or count not set: %+v", a.Key, a)
				}
				if (a.Machine == "") == (a.Server == "") {
					t.Errorf("alert %s names machine %q and server %q; want exactly one", a.Key, a.Machine, a.Server)
				}
			}
		})
	}
}

// The key of a condition stays the same while its severity and message
// change, so the store counts one alert instead of raising new ones.
func TestDesiredAlertsKeysStable(t *testing.T) {
	in := AlertInput{Machines: []HealthInput{healthy()}}
	var seen []string
	for _, rpo := range []float64{35, 50, 61, 200} {
		in.Machines[0].Machine.Replication.RPOSeconds = rpo
		as := DesiredAlerts(in, t0)
		seen = append(seen, keys(as)...)
	}
	if want := []string{"rpo/m1", "rpo/m1", "rpo/m1", "rpo/m1"}; !slices.Equal(seen, want) {
		t.Errorf("keys %v; want %v", seen, want)
	}
}

// A plan's drill alert: raised when its newest drill failed, or when no
// drill passed within the window (counted from the plan's creation
// before the first); cleared by a passing drill.
func TestDrillAlert(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	p := Plan{Name: "shop", CreatedAt: now.Add(-time.Hour), Drill: &DrillPolicy{Every: Duration(time.Hour)}}
	cases := []struct {
		name string
		in   DrillInput
		want string // "" for no alert
	}{
		{"never drilled, within the window", DrillInput{Plan: p}, ""},
		{"never drilled, past the window", DrillInput{Plan: Plan{Name: "shop", CreatedAt: now.Add(-3 * time.Hour), Drill: p.Drill}}, "no drill passed since it was made (window 2h"},
		{"the last drill failed", DrillInput{Plan: p, Last: &PlanRun{ID: "r1", State: JobFailed, Error: "drill failed: probe of db01: exit status 1"}, Passed: now.Add(-time.Minute)},
			"the drill of 0001-01-01T00:00:00Z (run r1) failed: drill failed: probe of db01"},
		{"passed recently", DrillInput{Plan: p, Last: &PlanRun{ID: "r2", State: JobSucceeded}, Passed: now.Add(-time.Minute)}, ""},
		{"passed long ago", DrillInput{Plan: p, Last: &PlanRun{ID: "r2", State: JobSucceeded}, Passed: now.Add(-5 * time.Hour)}, "no drill passed since 2026-11-27T07:00:00Z"},
		{"a drill running after a pass", DrillInput{Plan: p, Last: &PlanRun{ID: "r3", State: JobRunning}, Passed: now.Add(-time.Minute)}, ""},
		{"no drill policy", DrillInput{Plan: Plan{Name: "x"}}, ""},
	}
	for _, c := range cases {
		as := DesiredAlerts(AlertInput{Drills: []DrillInput{c.in}}, now)
		switch {
		case c.want == "" && len(as) != 0:
			t.Errorf("%s: alerts %+v; want none", c.name, as)
		case c.want != "" && (len(as) != 1 || as[0].Key != "drill/shop" || !strings.Contains(as[0].Message, c.want)):
			t.Errorf("%s: alerts %+v; want drill/shop saying %q", c.name, as, c.want)
		}
	}
}
