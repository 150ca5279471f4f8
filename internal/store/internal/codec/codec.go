package codec

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Time returns t as the store keeps it: UTC, truncated to microseconds
// (PostgreSQL's precision, so both backends agree). The zero time stays
// zero, and is stored as NULL.
func Time(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// NewID returns a random identifier for rows the caller did not name
// (alerts raised without an ID).
func NewID() string {
	return fmt.Sprintf("%016x", rand.Uint64())
}

// invalid returns an ErrInvalid error for what, saying why.
func invalid(what, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", what, fmt.Sprintf(format, args...), store.ErrInvalid)
}

// text checks a string that goes into a text column. PostgreSQL refuses NUL
// bytes and invalid UTF-8 in text; SQLite would take them. Refusing them in
// both keeps the backends interchangeable.
func text(what, field, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return invalid(what, "%s contains a NUL byte", field)
	}
	if !utf8.ValidString(s) {
		return invalid(what, "%s is not valid UTF-8", field)
	}
	return nil
}

// texts checks pairs of (field, value); required fields must not be empty.
func texts(what string, required []string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := text(what, pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	for _, f := range required {
		for i := 0; i+1 < len(pairs); i += 2 {
			if pairs[i] == f && pairs[i+1] == "" {
				return invalid(what, "%s is empty", f)
			}
		}
	}
	return nil
}

func validRole(what string, r control.Role) error {
	if !r.Valid() {
		return invalid(what, "role %q is not one of %v", r, control.Roles)
	}
	return nil
}

// UserRoles lists the roles of API users, for validation messages.
var UserRoles = []control.UserRole{control.UserAdmin, control.UserOperator, control.UserViewer}

// JobStates lists the states a job can be in.
var JobStates = []control.JobState{control.JobQueued, control.JobRunning, control.JobSucceeded, control.JobFailed, control.JobCancelled}

// Site checks s and returns it in normal form.
func Site(s control.Site) (control.Site, error) {
	what := fmt.Sprintf("site %q", s.Name)
	if err := texts(what, []string{"id", "name"}, "id", s.ID, "name", s.Name); err != nil {
		return s, err
	}
	s.CreatedAt = Time(s.CreatedAt)
	return s, nil
}

// Server checks s and returns it in normal form. An update does not change
// a server's role, so checkRole is false for updates.
func Server(s control.Server, checkRole bool) (control.Server, error) {
	what := fmt.Sprintf("server %s/%s", s.Role, s.Name)
	if err := texts(what, []string{"id", "name"}, "id", s.ID, "name", s.Name, "site", s.Site,
		"address", s.Address, "version", s.Version, "cert serial", s.CertSerial); err != nil {
		return s, err
	}
	if checkRole {
		if err := validRole(what, s.Role); err != nil {
			return s, err
		}
	}
	s.CertExpires = Time(s.CertExpires)
	s.JoinedAt = Time(s.JoinedAt)
	s.HeartbeatAt = Time(s.HeartbeatAt)
	return s, nil
}

// Heartbeat checks a heartbeat's values and returns its time in normal form.
func Heartbeat(id string, at time.Time, version string) (time.Time, error) {
	what := fmt.Sprintf("heartbeat of server %s", id)
	if err := texts(what, []string{"id"}, "id", id, "version", version); err != nil {
		return at, err
	}
	if at.IsZero() {
		return at, invalid(what, "time is zero")
	}
	return Time(at), nil
}

// JoinToken checks t and returns it in normal form.
func JoinToken(t control.JoinToken) (control.JoinToken, error) {
	what := fmt.Sprintf("join token %s", t.ID)
	if err := texts(what, []string{"id", "hash"}, "id", t.ID, "hash", t.Hash,
		"created by", t.CreatedBy, "used by", t.UsedBy); err != nil {
		return t, err
	}
	if err := validRole(what, t.Role); err != nil {
		return t, err
	}
	if t.ExpiresAt.IsZero() {
		return t, invalid(what, "no expiry: join tokens must expire")
	}
	t.CreatedAt = Time(t.CreatedAt)
	t.ExpiresAt = Time(t.ExpiresAt)
	t.UsedAt = Time(t.UsedAt)
	return t, nil
}

// User checks u and returns it in normal form.
func User(u control.User) (control.User, error) {
	what := fmt.Sprintf("user %q", u.Name)
	if err := texts(what, []string{"id", "name"}, "id", u.ID, "name", u.Name, "token hash", u.TokenHash); err != nil {
		return u, err
	}
	ok := false
	for _, r := range UserRoles {
		ok = ok || u.Role == r
	}
	if !ok {
		return u, invalid(what, "role %q is not one of %v", u.Role, UserRoles)
	}
	u.CreatedAt = Time(u.CreatedAt)
	return u, nil
}

// Group checks g and returns it in normal form.
func Group(g control.Group) (control.Group, error) {
	what := fmt.Sprintf("group %q", g.Name)
	if err := texts(what, []string{"id", "name"}, "id", g.ID, "name", g.Name); err != nil {
		return g, err
	}
	g.CreatedAt = Time(g.CreatedAt)
	g.UpdatedAt = Time(g.UpdatedAt)
	g.Policy.InitialStart = Time(g.Policy.InitialStart)
	return g, nil
}

// Machine checks m and returns it in normal form; slices are copied, so
// the caller's value is never changed.
func Machine(m control.Machine) (control.Machine, error) {
	what := fmt.Sprintf("machine %q", m.Name)
	if err := texts(what, []string{"id", "name"}, "id", m.ID, "name", m.Name, "agent", m.Agent,
		"group", m.Group, "process", m.Process, "target", m.Target,
		"state", string(m.State), "health", string(m.Health), "test_failover", string(m.TestFailover)); err != nil {
		return m, err
	}
	if m.Test != nil {
		// A copy: the caller's value is not changed by normalising it.
		t := *m.Test
		t.Report.Disks = slices.Clone(t.Report.Disks)
		t.RequestedAt, t.Report.PointTime, t.Report.ReportedAt = Time(t.RequestedAt), Time(t.Report.PointTime), Time(t.Report.ReportedAt)
		m.Test = &t
	}
	if m.Failover != nil {
		f := *m.Failover
		f.Network = maps.Clone(f.Network)
		f.Report.Disks = slices.Clone(f.Report.Disks)
		f.Report.Hydration.Images = slices.Clone(f.Report.Hydration.Images)
		f.RequestedAt, f.Report.PointTime, f.Report.ReportedAt = Time(f.RequestedAt), Time(f.Report.PointTime), Time(f.Report.ReportedAt)
		f.Report.Hydration.CompletedAt = Time(f.Report.Hydration.CompletedAt)
		m.Failover = &f
	}
	if m.Reverse != nil {
		r := *m.Reverse
		r.Seed = slices.Clone(r.Seed)
		r.RequestedAt = Time(r.RequestedAt)
		if r.Failback != nil {
			f := *r.Failback
			f.RequestedAt = Time(f.RequestedAt)
			r.Failback = &f
		}
		m.Reverse = &r
	}
	if m.Disks != nil {
		m.Disks = append([]control.Disk{}, m.Disks...)
	}
	if m.HealthReasons != nil {
		m.HealthReasons = append([]string{}, m.HealthReasons...)
	}
	m.Replication.LastPointAt = Time(m.Replication.LastPointAt)
	m.Replication.ReportedAt = Time(m.Replication.ReportedAt)
	m.UpdatedAt = Time(m.UpdatedAt)
	return m, nil
}

// Points checks a machine's recovery points and returns them in normal
// form, each naming the machine.
func Points(machine string, pts []control.RecoveryPoint) ([]control.RecoveryPoint, error) {
	what := fmt.Sprintf("recovery points of machine %s", machine)
	if err := texts(what, []string{"machine"}, "machine", machine); err != nil {
		return nil, err
	}
	out := make([]control.RecoveryPoint, len(pts))
	seen := make(map[uint64]bool, len(pts))
	for i, p := range pts {
		if p.Machine != "" && p.Machine != machine {
			return nil, invalid(what, "point %d names machine %s", p.ID, p.Machine)
		}
		if seen[p.ID] {
			return nil, invalid(what, "point %d appears twice", p.ID)
		}
		seen[p.ID] = true
		if err := text(what, "label", p.Label); err != nil {
			return nil, err
		}
		p.Machine = machine
		p.Time = Time(p.Time)
		if p.Tags != nil {
			p.Tags = append([]string{}, p.Tags...)
		}
		out[i] = p
	}
	return out, nil
}

// Job checks j and returns it in normal form; slices are copied.
func Job(j control.Job) (control.Job, error) {
	what := fmt.Sprintf("job %s", j.ID)
	if err := texts(what, []string{"id", "kind"}, "id", j.ID, "kind", j.Kind, "object", j.Object,
		"result", j.Result, "error", j.Error, "created by", j.CreatedBy); err != nil {
		return j, err
	}
	ok := false
	for _, s := range JobStates {
		ok = ok || j.State == s
	}
	if !ok {
		return j, invalid(what, "state %q is not one of %v", j.State, JobStates)
	}
	if len(j.Params) == 0 {
		j.Params = nil
	} else if !json.Valid(j.Params) {
		return j, invalid(what, "params are not valid JSON")
	} else {
		j.Params = append(json.RawMessage{}, j.Params...)
	}
	if j.Steps != nil {
		steps := make([]control.Step, len(j.Steps))
		for i, s := range j.Steps {
			s.StartedAt = Time(s.StartedAt)
			s.EndedAt = Time(s.EndedAt)
			steps[i] = s
		}
		j.Steps = steps
	}
	if j.Log != nil {
		log := make([]control.LogLine, len(j.Log))
		for i, l := range j.Log {
			l.At = Time(l.At)
			log[i] = l
		}
		j.Log = log
	}
	j.CreatedAt = Time(j.CreatedAt)
	j.UpdatedAt = Time(j.UpdatedAt)
	j.EndedAt = Time(j.EndedAt)
	return j, nil
}

// Alert checks a raised alert and returns it in normal form: LastSeen is
// RaisedAt when not given, and the other way round.
func Alert(a control.Alert) (control.Alert, error) {
	what := fmt.Sprintf("alert %q", a.Key)
	if err := texts(what, []string{"key"}, "id", a.ID, "key", a.Key, "machine", a.Machine,
		"server", a.Server, "severity", string(a.Severity), "message", a.Message); err != nil {
		return a, err
	}
	a.RaisedAt = Time(a.RaisedAt)
	a.LastSeen = Time(a.LastSeen)
	if a.LastSeen.IsZero() {
		a.LastSeen = a.RaisedAt
	}
	if a.RaisedAt.IsZero() {
		a.RaisedAt = a.LastSeen
	}
	if a.RaisedAt.IsZero() {
		return a, invalid(what, "neither raised at nor last seen is set")
	}
	a.ClearedAt = time.Time{}
	return a, nil
}

// ClearAlert checks the arguments of a ClearAlert call.
func ClearAlert(key string, at time.Time) (time.Time, error) {
	what := fmt.Sprintf("clear alert %q", key)
	if err := texts(what, []string{"key"}, "key", key); err != nil {
		return at, err
	}
	if at.IsZero() {
		return at, invalid(what, "time is zero")
	}
	return Time(at), nil
}

// Audit checks an audit entry and returns it in normal form.
func Audit(e control.AuditEntry) (control.AuditEntry, error) {
	what := fmt.Sprintf("audit entry %q", e.Action)
	if err := texts(what, []string{"action"}, "actor", e.Actor, "action", e.Action,
		"object", e.Object, "result", e.Result, "detail", e.Detail); err != nil {
		return e, err
	}
	if e.At.IsZero() {
		return e, invalid(what, "time is zero")
	}
	e.At = Time(e.At)
	return e, nil
}

// Key checks a lookup key (an ID, a name, a hash) before a query.
func Key(what, s string) error {
	return text(what, "key", s)
}

// Limit checks a list limit.
func Limit(what string, n int) error {
	if n < 0 {
		return invalid(what, "limit %d is negative", n)
	}
	return nil
}

// JSON encodes a nested value for a JSON column.
func JSON(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", what, err)
	}
	return b, nil
}

// Unjson decodes a JSON column into v.
func Unjson(what string, b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: decode stored JSON: %w", what, err)
	}
	return nil
}
