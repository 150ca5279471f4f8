package storetest

import (
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// snapshot is everything a store lists, to compare a store before a close
// with the same database reopened.
type snapshot struct {
	Version int
	Sites   []control.Site
	Servers []control.Server
	Tokens  []control.JoinToken
	Users   []control.User
	Groups  []control.Group
	Machs   []control.Machine
	Points  []control.RecoveryPoint
	Jobs    []control.Job
	Plans   []control.Plan
	Runs    []control.PlanRun
	Alerts  []control.Alert
	Audit   []control.AuditEntry
}

func take(t *testing.T, s store.Store) snapshot {
	t.Helper()
	var x snapshot
	var err error
	x.Version, err = s.SchemaVersion(ctx(t))
	must(t, "schema version", err)
	x.Sites, err = s.ListSites(ctx(t))
	must(t, "sites", err)
	x.Servers, err = s.ListServers(ctx(t), "")
	must(t, "servers", err)
	x.Tokens, err = s.ListJoinTokens(ctx(t))
	must(t, "tokens", err)
	x.Users, err = s.ListUsers(ctx(t))
	must(t, "users", err)
	x.Groups, err = s.ListGroups(ctx(t))
	must(t, "groups", err)
	x.Machs, err = s.ListMachines(ctx(t), store.MachineFilter{})
	must(t, "machines", err)
	x.Points, err = s.ListPoints(ctx(t), "m1")
	must(t, "points", err)
	x.Jobs, err = s.ListJobs(ctx(t), store.JobFilter{})
	must(t, "jobs", err)
	x.Plans, err = s.ListPlans(ctx(t))
	must(t, "plans", err)
	x.Runs, err = s.ListPlanRuns(ctx(t), "shop", 0)
	must(t, "plan runs", err)
	x.Alerts, err = s.ListAlerts(ctx(t), false)
	must(t, "alerts", err)
	x.Audit, err = s.ListAudit(ctx(t), 0)
	must(t, "audit", err)
	return x
}

// fill puts one or two of everything in s.
func fill(t *testing.T, s store.Store) {
	t.Helper()
	c := ctx(t)
	must(t, "site", s.CreateSite(c, control.Site{ID: "s1", Name: "primary", CreatedAt: at(0)}))
	a1 := sampleServer("a1", control.RoleAgent, "web01")
	a1.HeartbeatAt = at(time.Minute)
	must(t, "server", s.CreateServer(c, a1))
	must(t, "server", s.CreateServer(c, sampleServer("t1", control.RoleTarget, "mt01")))
	must(t, "token", s.CreateJoinToken(c, control.JoinToken{ID: "k1", Hash: "h1", Role: control.RoleAgent, CreatedAt: at(0), ExpiresAt: at(time.Hour)}))
	_, err := s.UseJoinToken(c, "h1", at(time.Minute), "a1")
	must(t, "use token", err)
	must(t, "user", s.CreateUser(c, control.User{ID: "u1", Name: "alice", Role: control.UserAdmin, TokenHash: "t1", CreatedAt: at(0)}))
	must(t, "group", s.CreateGroup(c, control.Group{ID: "g1", Name: "web", Policy: samplePolicy(), CreatedAt: at(0), UpdatedAt: at(0)}))
	m, err := s.CreateMachine(c, sampleMachine("m1", "web01"))
	must(t, "machine", err)
	_, err = s.UpdateMachine(c, m)
	must(t, "update machine", err)
	must(t, "points", s.ReplacePoints(c, "m1", []control.RecoveryPoint{{ID: 1, Seq: 10, Time: at(0), Tags: []string{"x"}}, {ID: 2, Seq: 20, Time: at(time.Second), AppConsistent: true}}))
	_, err = s.CreateJob(c, sampleJob("j1", 0))
	must(t, "job", err)
	p, err := s.CreatePlan(c, samplePlan("p1", "shop"))
	must(t, "plan", err)
	_, err = s.UpdatePlan(c, p)
	must(t, "update plan", err)
	_, err = s.CreatePlan(c, control.Plan{ID: "p2", Name: "bare", Groups: []control.PlanGroup{{Name: "g", Machines: []string{"m1"}}}})
	must(t, "plan", err)
	_, err = s.CreatePlanRun(c, samplePlanRun("r1", "shop", 0))
	must(t, "plan run", err)
	_, err = s.CreatePlanRun(c, samplePlanRun("r2", "shop", 0))
	must(t, "plan run", err)
	_, _, err = s.RaiseAlert(c, control.Alert{Key: "rpo/m1", Machine: "m1", Severity: control.SeverityWarning, Message: "late", RaisedAt: at(0)})
	must(t, "alert", err)
	_, _, err = s.RaiseAlert(c, control.Alert{Key: "rpo/m1", LastSeen: at(time.Second)})
	must(t, "alert", err)
	must(t, "clear", s.ClearAlert(c, "rpo/m1", at(time.Minute)))
	_, _, err = s.RaiseAlert(c, control.Alert{Key: "server/t1", Server: "t1", Severity: control.SeverityCritical, RaisedAt: at(time.Hour)})
	must(t, "alert", err)
	_, err = s.AppendAudit(c, control.AuditEntry{At: at(0), Actor: "system", Action: "server.start", Result: "ok"})
	must(t, "audit", err)
}

// testReopen: what a store holds survives Close, and a second Open of a
// migrated database applies nothing and finds everything.
func testReopen(t *testing.T, open func() store.Store) {
	s := open()
	fill(t, s)
	before := take(t, s)
	must(t, "close", s.Close())

	s = open()
	after := take(t, s)
	same(t, "after a reopen", after, before)
	// The reopened store still writes, and IDs continue.
	e, err := s.AppendAudit(ctx(t), control.AuditEntry{At: at(time.Hour), Action: "server.stop"})
	must(t, "append after reopen", err)
	if e.ID <= before.Audit[0].ID {
		t.Fatalf("audit id after reopen %d, want more than %d", e.ID, before.Audit[0].ID)
	}
	must(t, "close", s.Close())

	// Two reopens in a row, no writes between: still the same.
	s = open()
	defer s.Close()
	again := take(t, s)
	same(t, "schema version after reopens", again.Version, before.Version)
	same(t, "machines after reopens", again.Machs, before.Machs)
}
