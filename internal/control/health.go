package control

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"
)

// Health thresholds. This is the one place they live; docs/control.md
// lists them. Heartbeat thresholds apply to every server; the RPO and
// point thresholds scale with the group's policy.
const (
	// HeartbeatInterval is how often servers are expected to heartbeat.
	HeartbeatInterval = 10 * time.Second
	// HeartbeatWarnAfter: a server silent this long (three missed
	// heartbeats) is a warning.
	HeartbeatWarnAfter = 3 * HeartbeatInterval
	// HeartbeatCriticalAfter: a server silent this long is critical.
	HeartbeatCriticalAfter = 6 * HeartbeatInterval

	// RPOCriticalFactor: an RPO over the policy's threshold is a warning,
	// over this many times the threshold critical.
	RPOCriticalFactor = 2

	// PointLateWarnFactor: no recovery point for this many point
	// intervals is a warning.
	PointLateWarnFactor = 3
	// PointLateCriticalFactor: no recovery point for this many point
	// intervals, and for at least RPOCriticalFactor times the RPO
	// threshold, is critical.
	PointLateCriticalFactor = 10

	// ReportStaleAfter: a replication report this old, while the agent
	// still heartbeats, is a warning (the agent is alive but its
	// replication is not reporting).
	ReportStaleAfter = HeartbeatCriticalAfter

	// BacklogGrowingMin: a backlog that grew between two reports is a
	// warning once it is at least this large (smaller ones come and go
	// with bursts of writes).
	BacklogGrowingMin = 64 << 20
)

// Conditions a Finding names. Each is also the first part of an alert key
// (alerts.go) when it deserves an alert of its own.
const (
	ConditionState            = "state"             // the protection state itself is bad
	ConditionPaused           = "paused"            // an operator paused replication
	ConditionUnprotected      = "unprotected"       // failed over and committed, not yet re-protected
	ConditionAgentHeartbeat   = "agent-heartbeat"   // the machine's agent is silent
	ConditionProcessHeartbeat = "process-heartbeat" // its process server is silent
	ConditionTargetHeartbeat  = "target-heartbeat"  // its master target is silent
	ConditionRPO              = "rpo"               // achieved RPO over the threshold
	ConditionPoints           = "points"            // recovery points are late
	ConditionBacklog          = "backlog"           // backlog growing
	ConditionReport           = "report"            // replication report stale
	ConditionError            = "error"             // the agent reports an error
)

// HealthInput is everything AssessHealth looks at for one machine.
type HealthInput struct {
	// Machine: its State and Replication report are read.
	Machine Machine
	// Policy of its group: RPOThreshold and PointInterval are read (a
	// zero value reads as the default).
	Policy Policy
	// Agent, Process and Target are the servers the machine uses, with
	// their last heartbeats; a zero ID means not known or not assigned,
	// and is not assessed.
	Agent, Process, Target Server
	// Previous is the replication report before Machine.Replication, when
	// the caller kept it (zero otherwise): with it a growing backlog can
	// be told from a large but shrinking one.
	Previous ReplicationReport
}

// Finding is one reason for a machine's health.
type Finding struct {
	Condition string   // one of the Condition constants
	Severity  Severity // warning or critical
	Reason    string   // in operator words, e.g. "RPO 45s exceeds the threshold 30s"
}

// AssessHealth returns a machine's health and the reasons for it, most
// severe first; normal has no reasons. It is Assess summarised.
func AssessHealth(in HealthInput, now time.Time) (Health, []string) {
	fs := Assess(in, now)
	h := HealthNormal
	var reasons []string
	for _, f := range fs {
		switch {
		case f.Severity == SeverityCritical:
			h = HealthCritical
		case h == HealthNormal:
			h = HealthWarning
		}
		reasons = append(reasons, f.Reason)
	}
	return h, reasons
}

// Assess returns what is wrong with a machine's replication at now, most
// severe first. What is checked depends on its protection state:
//
//   - enabling: the agent's heartbeat;
//   - initial-replication, reprotecting: the servers' heartbeats, the
//     report's age and error, the backlog;
//   - protected: all of that, the RPO and the age of the last point;
//   - resynchronizing: as protected, but not the age of the last point
//     (a resync makes none);
//   - paused: a warning that it is, and the agent's heartbeat;
//   - critical, failover-failed: the state itself is critical;
//   - failover-committed: a warning that the machine is not protected;
//   - unprotected, disabling, failover-started, failed-over: nothing.
//
// Unknown values (an RPO of -1, a zero LastPointAt or ReportedAt) give no
// finding: the checks that know give them instead.
func Assess(in HealthInput, now time.Time) []Finding {
	var fs []Finding
	add := func(cond string, sev Severity, format string, args ...any) {
		fs = append(fs, Finding{Condition: cond, Severity: sev, Reason: fmt.Sprintf(format, args...)})
	}
	m := in.Machine
	_, _, _, rep := m.Replicating()
	agentLate := false
	checkServers := func(all bool) {
		agentLate = heartbeatFinding(&fs, ConditionAgentHeartbeat, "agent", in.Agent, now)
		if all {
			heartbeatFinding(&fs, ConditionProcessHeartbeat, "process server", in.Process, now)
			heartbeatFinding(&fs, ConditionTargetHeartbeat, "master target", in.Target, now)
		}
	}
	replicating := func() {
		checkServers(true)
		if rep.LastError != "" {
			add(ConditionError, SeverityWarning, "agent reports: %s", rep.LastError)
		}
		if !agentLate && !rep.ReportedAt.IsZero() {
			if age := since(now, rep.ReportedAt); age > ReportStaleAfter {
				add(ConditionReport, SeverityWarning, "last replication report %s old", FormatDuration(age))
			}
		}
		backlogFinding(&fs, in.Previous, rep)
	}

	switch m.State {
	case StateEnabling:
		checkServers(false)
	case StateInitialReplication, StateReprotecting:
		replicating()
	case StateProtected, StateResynchronizing:
		replicating()
		rpoFinding(&fs, in.Policy, rep)
		if m.State == StateProtected {
			pointsFinding(&fs, in.Policy, rep, now)
		}
	case StatePaused:
		add(ConditionPaused, SeverityWarning,
			"replication paused by an operator: no recovery points are made (resume: `standby machines resume %s`)", m.Name)
		checkServers(false)
	case StateCritical:
		add(ConditionState, SeverityCritical, "replication stopped: the agent's heartbeat was lost")
		checkServers(true)
	case StateFailoverFailed:
		add(ConditionState, SeverityCritical, "a failover failed: retry it, resume protection or disable it (see the failover job's log)")
	case StateFailoverCommitted:
		add(ConditionUnprotected, SeverityWarning, "not protected since the failover: re-protect it to replicate back")
	}
	slices.SortStableFunc(fs, func(a, b Finding) int { return cmp.Compare(rank(b.Severity), rank(a.Severity)) })
	return fs
}

func rank(s Severity) int {
	if s == SeverityCritical {
		return 2
	}
	return 1
}

// heartbeatFinding adds a finding when server s is revoked or silent, and
// says whether it did. A server that never heartbeated is measured from
// when it joined.
func heartbeatFinding(fs *[]Finding, cond, role string, s Server, now time.Time) bool {
	if s.ID == "" {
		return false
	}
	name := s.Name
	if name == "" {
		name = s.ID
	}
	if s.Revoked {
		*fs = append(*fs, Finding{cond, SeverityCritical, fmt.Sprintf("%s %s is revoked", role, name)})
		return true
	}
	sev, age, ok := heartbeatLate(s, now)
	if !ok {
		return false
	}
	reason := fmt.Sprintf("%s %s heartbeat %s old", role, name, FormatDuration(age))
	if s.HeartbeatAt.IsZero() {
		reason = fmt.Sprintf("%s %s has sent no heartbeat since it joined %s ago", role, name, FormatDuration(age))
	}
	*fs = append(*fs, Finding{cond, sev, reason})
	return true
}

// heartbeatLate says whether s's heartbeat is late at now, how badly and
// how old it is.
func heartbeatLate(s Server, now time.Time) (Severity, time.Duration, bool) {
	last := s.HeartbeatAt
	if last.IsZero() {
		last = s.JoinedAt
	}
	if last.IsZero() {
		return "", 0, false
	}
	age := since(now, last)
	switch {
	case age > HeartbeatCriticalAfter:
		return SeverityCritical, age, true
	case age > HeartbeatWarnAfter:
		return SeverityWarning, age, true
	}
	return "", age, false
}

func rpoFinding(fs *[]Finding, p Policy, rep ReplicationReport) {
	if rep.RPOSeconds < 0 || math.IsNaN(rep.RPOSeconds) {
		return
	}
	th := rpoThreshold(p)
	rpo := time.Duration(rep.RPOSeconds * float64(time.Second))
	switch {
	case rpo > RPOCriticalFactor*th:
		*fs = append(*fs, Finding{ConditionRPO, SeverityCritical,
			fmt.Sprintf("RPO %s exceeds the threshold %s more than %d times", FormatDuration(rpo), FormatDuration(th), RPOCriticalFactor)})
	case rpo > th:
		*fs = append(*fs, Finding{ConditionRPO, SeverityWarning,
			fmt.Sprintf("RPO %s exceeds the threshold %s", FormatDuration(rpo), FormatDuration(th))})
	}
}

func pointsFinding(fs *[]Finding, p Policy, rep ReplicationReport, now time.Time) {
	if rep.LastPointAt.IsZero() {
		return
	}
	iv := p.PointInterval.D()
	if iv <= 0 {
		iv = DefaultPointInterval
	}
	age := since(now, rep.LastPointAt)
	crit := max(PointLateCriticalFactor*iv, RPOCriticalFactor*rpoThreshold(p))
	var sev Severity
	switch {
	case age > crit:
		sev = SeverityCritical
	case age > PointLateWarnFactor*iv:
		sev = SeverityWarning
	default:
		return
	}
	*fs = append(*fs, Finding{ConditionPoints, sev,
		fmt.Sprintf("no recovery point for %s (expected every %s)", FormatDuration(age), FormatDuration(iv))})
}

func backlogFinding(fs *[]Finding, prev, cur ReplicationReport) {
	if prev.ReportedAt.IsZero() || !cur.ReportedAt.After(prev.ReportedAt) ||
		cur.BacklogBytes <= prev.BacklogBytes || cur.BacklogBytes < BacklogGrowingMin {
		return
	}
	*fs = append(*fs, Finding{ConditionBacklog, SeverityWarning,
		fmt.Sprintf("backlog of %s growing (+%s in %s)", FormatBytes(cur.BacklogBytes),
			FormatBytes(cur.BacklogBytes-prev.BacklogBytes), FormatDuration(cur.ReportedAt.Sub(prev.ReportedAt)))})
}

func rpoThreshold(p Policy) time.Duration {
	if th := p.RPOThreshold.D(); th > 0 {
		return th
	}
	return DefaultRPOThreshold
}

// since is now-t, never negative (clocks of servers differ a little).
func since(now, t time.Time) time.Duration { return max(now.Sub(t), 0) }

// FormatDuration writes d for an operator: "45s", "1.5s", "3m", "2m30s",
// "1h5m", "2d3h" — the two largest units, rounded down.
func FormatDuration(d time.Duration) string {
	if d < 0 {
		return "-" + FormatDuration(-d)
	}
	const day = 24 * time.Hour
	switch {
	case d < time.Minute && d%time.Second != 0 && d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return pair(int64(d/time.Minute), "m", int64(d%time.Minute/time.Second), "s")
	case d < day:
		return pair(int64(d/time.Hour), "h", int64(d%time.Hour/time.Minute), "m")
	default:
		return pair(int64(d/day), "d", int64(d%day/time.Hour), "h")
	}
}

func pair(a int64, ua string, b int64, ub string) string {
	if b == 0 {
		return fmt.Sprintf("%d%s", a, ua)
	}
	return fmt.Sprintf("%d%s%d%s", a, ua, b, ub)
}

// FormatBytes writes n for an operator with one decimal in binary units:
// "512 B", "64.0 MiB", "1.2 GiB".
func FormatBytes(n int64) string {
	if n > -1024 && n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	const units = "KMGTPE"
	v, i := float64(n)/1024, 0
	for math.Abs(v) >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}
