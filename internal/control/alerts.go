package control

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Certificate thresholds for server alerts.
const (
	// CertWarnBefore: a server certificate expiring within this is a
	// warning.
	CertWarnBefore = 14 * 24 * time.Hour
	// CertCriticalBefore: within this (or expired) it is critical.
	CertCriticalBefore = 2 * 24 * time.Hour
)

// Alert key prefixes of server conditions; machine conditions use the
// Condition constants of health.go.
const (
	AlertHeartbeat   = "heartbeat"   // heartbeat/<server-id>
	AlertCertificate = "certificate" // certificate/<server-id>
	AlertDrill       = "drill"       // drill/<plan name>
)

// machineAlerts are the conditions of a machine's health that raise an
// alert keyed "<condition>/<machine-id>". The heartbeat conditions are not
// among them: one silent process server would otherwise raise an alert
// per machine it serves; its own heartbeat/<server-id> alert says it once.
// Neither are paused and unprotected: both are an operator's decision,
// shown in the machine's health, not raised.
var machineAlerts = []string{
	ConditionState, ConditionRPO, ConditionPoints, ConditionBacklog, ConditionReport, ConditionError,
}

// AlertInput is what DesiredAlerts looks at.
type AlertInput struct {
	// Machines to assess (AssessHealth's input for each). Machines whose
	// state has no conditions (unprotected ones) give no alert.
	Machines []HealthInput
	// Servers are every registered server, for heartbeat and certificate
	// alerts; revoked servers give none.
	Servers []Server
	// Drills are the plans with a drill policy, for drill alerts.
	Drills []DrillInput
}

// DrillInput is a plan's drill history, for its alert.
type DrillInput struct {
	Plan   Plan
	Last   *PlanRun  // the newest drill run, nil when none
	Passed time.Time // when the newest successful drill ended; zero: never
}

// DesiredAlerts returns the alerts whose conditions hold at now, one per
// Key, ordered by Key. The caller raises each (the store counts repeats)
// and clears every active alert whose Key is not in the set. RaisedAt and
// LastSeen are now, Count is 1; ID is left to the store.
//
// Keys are stable while a condition holds, whatever its severity or
// message: "<condition>/<machine-id>" (rpo, points, backlog, report,
// error, state) and "heartbeat/<server-id>", "certificate/<server-id>".
func DesiredAlerts(in AlertInput, now time.Time) []Alert {
	byKey := map[string]Alert{}
	add := func(a Alert) {
		a.RaisedAt, a.LastSeen, a.Count = now, now, 1
		if old, ok := byKey[a.Key]; ok && rank(old.Severity) >= rank(a.Severity) {
			return // the same key twice (a machine listed twice): keep the worse
		}
		byKey[a.Key] = a
	}
	for _, hi := range in.Machines {
		m := hi.Machine
		name := cmp.Or(m.Name, m.ID)
		for _, f := range Assess(hi, now) {
			if !slices.Contains(machineAlerts, f.Condition) {
				continue
			}
			add(Alert{Key: f.Condition + "/" + m.ID, Machine: m.ID, Severity: f.Severity,
				Message: fmt.Sprintf("machine %s: %s", name, f.Reason)})
		}
	}
	for _, s := range in.Servers {
		if s.Revoked || s.ID == "" {
			continue
		}
		name := fmt.Sprintf("%s %s", roleName(s.Role), cmp.Or(s.Name, s.ID))
		if sev, age, late := heartbeatLate(s, now); late {
			msg := fmt.Sprintf("%s: no heartbeat for %s", name, FormatDuration(age))
			if s.HeartbeatAt.IsZero() {
				msg = fmt.Sprintf("%s: no heartbeat since it joined %s ago", name, FormatDuration(age))
			}
			add(Alert{Key: AlertHeartbeat + "/" + s.ID, Server: s.ID, Severity: sev, Message: msg})
		}
		if a, ok := certAlert(s, name, now); ok {
			add(a)
		}
	}
	for _, d := range in.Drills {
		if a, ok := drillAlert(d, now); ok {
			add(a)
		}
	}
	out := make([]Alert, 0, len(byKey))
	for _, a := range byKey {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Alert) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

func certAlert(s Server, name string, now time.Time) (Alert, bool) {
	if s.CertExpires.IsZero() {
		return Alert{}, false
	}
	left := s.CertExpires.Sub(now)
	a := Alert{Key: AlertCertificate + "/" + s.ID, Server: s.ID}
	switch {
	case left <= 0:
		a.Severity = SeverityCritical
		a.Message = fmt.Sprintf("%s: certificate expired %s ago; it cannot connect until it is renewed", name, FormatDuration(-left))
	case left <= CertCriticalBefore:
		a.Severity = SeverityCritical
		a.Message = fmt.Sprintf("%s: certificate expires in %s; renew it", name, FormatDuration(left))
	case left <= CertWarnBefore:
		a.Severity = SeverityWarning
		a.Message = fmt.Sprintf("%s: certificate expires in %s; renew it", name, FormatDuration(left))
	default:
		return Alert{}, false
	}
	return a, true
}

func roleName(r Role) string {
	switch r {
	case RoleProcess:
		return "process server"
	case RoleTarget:
		return "master target"
	case RoleAgent:
		return "agent"
	}
	return "server"
}

// drillAlert raises drill/<plan> when the plan's newest drill failed, or
// when no drill passed within its window (2 × every by default; counted
// from the plan's creation while it was never drilled).
func drillAlert(d DrillInput, now time.Time) (Alert, bool) {
	p := d.Plan
	if p.Drill == nil {
		return Alert{}, false
	}
	key := AlertDrill + "/" + p.Name
	if l := d.Last; l != nil && l.State == JobFailed {
		return Alert{Key: key, Severity: SeverityWarning, Message: fmt.Sprintf("plan %s: the drill of %s (run %s) failed: %s", p.Name, l.StartedAt.UTC().Format(time.RFC3339), l.ID, l.Error)}, true
	}
	window := p.Drill.Window.D()
	if window == 0 {
		window = 2 * p.Drill.Every.D()
	}
	since := d.Passed
	if since.IsZero() {
		since = p.CreatedAt
	}
	if !since.IsZero() && now.Sub(since) > window {
		what := "since it was made"
		if !d.Passed.IsZero() {
			what = "since " + d.Passed.UTC().Format(time.RFC3339)
		}
		return Alert{Key: key, Severity: SeverityWarning, Message: fmt.Sprintf("plan %s: no drill passed %s (window %s)", p.Name, what, FormatDuration(window))}, true
	}
	return Alert{}, false
}
