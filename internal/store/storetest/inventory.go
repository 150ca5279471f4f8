package storetest

import (
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/retention"
	"github.com/standby-dr/standby/internal/store"
)

var inventoryTests = []test{
	{"Sites", testSites},
	{"Servers", testServers},
	{"ServerUpdate", testServerUpdate},
	{"Heartbeat", testHeartbeat},
	{"JoinTokens", testJoinTokens},
	{"Users", testUsers},
	{"Groups", testGroups},
	{"Invalid", testInvalid},
	{"CancelledContext", testCancelled},
	{"SchemaVersion", testSchemaVersion},
}

func testSites(t *testing.T, s store.Store) {
	got, err := s.ListSites(ctx(t))
	must(t, "list empty", err)
	same(t, "sites of an empty store", len(got), 0)
	must(t, "create", s.CreateSite(ctx(t), control.Site{ID: "s2", Name: "secondary", CreatedAt: at(time.Second)}))
	must(t, "create", s.CreateSite(ctx(t), control.Site{ID: "s1", Name: "primary", CreatedAt: at(0)}))
	wantErr(t, "same name", s.CreateSite(ctx(t), control.Site{ID: "s3", Name: "primary"}), store.ErrExists)
	wantErr(t, "same id", s.CreateSite(ctx(t), control.Site{ID: "s1", Name: "third"}), store.ErrExists)
	got, err = s.ListSites(ctx(t))
	must(t, "list", err)
	same(t, "sites by name", got, []control.Site{
		{ID: "s1", Name: "primary", CreatedAt: um(at(0))},
		{ID: "s2", Name: "secondary", CreatedAt: um(at(time.Second))},
	})
}

func sampleServer(id string, role control.Role, name string) control.Server {
	return control.Server{
		ID: id, Role: role, Name: name, Site: "s1", Address: "10.0.0.1:7443", Version: "1.2.3",
		Capacity:   control.Capacity{Machines: 3, MaxMachines: 100, FreeBytes: 1 << 40},
		CertSerial: "0a:1b", CertExpires: at(365 * 24 * time.Hour), JoinedAt: at(0),
	}
}

func wantServer(x control.Server) control.Server {
	x.CertExpires, x.JoinedAt, x.HeartbeatAt = um(x.CertExpires), um(x.JoinedAt), um(x.HeartbeatAt)
	return x
}

func testServers(t *testing.T, s store.Store) {
	a1 := sampleServer("a1", control.RoleAgent, "web01")
	a1.HeartbeatAt = at(time.Minute)
	a1.Revoked = true
	a2 := sampleServer("a2", control.RoleAgent, "db01")
	p1 := sampleServer("p1", control.RoleProcess, "web01") // same name, other role
	t1 := sampleServer("t1", control.RoleTarget, "mt01")
	t1.Capacity = control.Capacity{}
	for _, x := range []control.Server{a1, t1, p1, a2} {
		must(t, "create "+x.ID, s.CreateServer(ctx(t), x))
	}
	wantErr(t, "same name and role", s.CreateServer(ctx(t), sampleServer("a3", control.RoleAgent, "web01")), store.ErrExists)
	wantErr(t, "same id", s.CreateServer(ctx(t), sampleServer("a1", control.RoleAgent, "other")), store.ErrExists)

	got, err := s.GetServer(ctx(t), "a1")
	must(t, "get", err)
	same(t, "get a1", got, wantServer(a1))
	_, err = s.GetServer(ctx(t), "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)

	all, err := s.ListServers(ctx(t), "")
	must(t, "list all", err)
	same(t, "all servers by role then name", names(all, func(x control.Server) string { return x.ID }), []string{"a2", "a1", "p1", "t1"})
	same(t, "listed t1", all[3], wantServer(t1))
	agents, err := s.ListServers(ctx(t), control.RoleAgent)
	must(t, "list agents", err)
	same(t, "agents", names(agents, func(x control.Server) string { return x.ID }), []string{"a2", "a1"})
	targets, err := s.ListServers(ctx(t), control.RoleTarget)
	must(t, "list targets", err)
	same(t, "targets", len(targets), 1)
}

func testServerUpdate(t *testing.T, s store.Store) {
	a1 := sampleServer("a1", control.RoleAgent, "web01")
	must(t, "create", s.CreateServer(ctx(t), a1))
	must(t, "create", s.CreateServer(ctx(t), sampleServer("a2", control.RoleAgent, "db01")))
	must(t, "create", s.CreateServer(ctx(t), sampleServer("p1", control.RoleProcess, "ps01")))

	u := a1
	u.Name, u.Site, u.Address, u.Version = "web02", "s2", "10.0.0.2:7443", "1.3.0"
	u.Capacity = control.Capacity{Machines: 7}
	u.CertSerial, u.CertExpires, u.Revoked, u.HeartbeatAt = "ff", at(time.Hour), true, at(time.Minute)
	u.Role, u.JoinedAt = control.RoleTarget, at(-time.Hour) // neither may change
	must(t, "update", s.UpdateServer(ctx(t), u))
	got, err := s.GetServer(ctx(t), "a1")
	must(t, "get", err)
	want := wantServer(u)
	want.Role, want.JoinedAt = control.RoleAgent, um(a1.JoinedAt)
	same(t, "updated server", got, want)

	dup := sampleServer("a1", control.RoleAgent, "db01")
	wantErr(t, "rename onto another agent's name", s.UpdateServer(ctx(t), dup), store.ErrExists)
	other := sampleServer("a1", control.RoleAgent, "ps01") // a process server's name: allowed
	must(t, "rename onto another role's name", s.UpdateServer(ctx(t), other))
	wantErr(t, "update unknown", s.UpdateServer(ctx(t), sampleServer("zz", control.RoleAgent, "zz")), store.ErrNotFound)
}

func testHeartbeat(t *testing.T, s store.Store) {
	a1 := sampleServer("a1", control.RoleAgent, "web01")
	must(t, "create", s.CreateServer(ctx(t), a1))
	c := control.Capacity{Machines: 9, MaxMachines: 10, FreeBytes: 12345}
	must(t, "heartbeat", s.Heartbeat(ctx(t), "a1", at(2*time.Minute), "2.0.0", c))
	got, err := s.GetServer(ctx(t), "a1")
	must(t, "get", err)
	want := wantServer(a1)
	want.HeartbeatAt, want.Version, want.Capacity = um(at(2*time.Minute)), "2.0.0", c
	same(t, "after heartbeat", got, want)
	wantErr(t, "heartbeat of unknown", s.Heartbeat(ctx(t), "zz", at(0), "1", c), store.ErrNotFound)
}

func testJoinTokens(t *testing.T, s store.Store) {
	tok := func(id, hash string, created, expires time.Duration) control.JoinToken {
		return control.JoinToken{ID: id, Hash: hash, Role: control.RoleAgent, CreatedBy: "user:admin",
			CreatedAt: at(created), ExpiresAt: at(expires)}
	}
	k1 := tok("k1", "h1", 0, time.Hour)
	k2 := tok("k2", "h2", time.Second, time.Minute)
	k3 := tok("k3", "h3", 2*time.Second, time.Hour)
	for _, k := range []control.JoinToken{k1, k2, k3} {
		must(t, "create "+k.ID, s.CreateJoinToken(ctx(t), k))
	}
	wantErr(t, "same hash", s.CreateJoinToken(ctx(t), tok("k4", "h1", 0, time.Hour)), store.ErrExists)
	wantErr(t, "same id", s.CreateJoinToken(ctx(t), tok("k1", "h9", 0, time.Hour)), store.ErrExists)

	now := at(10 * time.Minute)
	got, err := s.UseJoinToken(ctx(t), "h1", now, "a1")
	must(t, "use", err)
	want := k1
	want.CreatedAt, want.ExpiresAt, want.UsedAt, want.UsedBy = um(k1.CreatedAt), um(k1.ExpiresAt), um(now), "a1"
	same(t, "used token", got, want)
	_, err = s.UseJoinToken(ctx(t), "h1", now, "a2")
	wantErr(t, "use twice", err, store.ErrTokenUsed)
	_, err = s.UseJoinToken(ctx(t), "h2", now, "a2")
	wantErr(t, "use expired", err, store.ErrTokenExpired)
	_, err = s.UseJoinToken(ctx(t), "h3", at(time.Hour), "a2")
	wantErr(t, "use at the expiry instant", err, store.ErrTokenExpired)
	_, err = s.UseJoinToken(ctx(t), "nope", now, "a2")
	wantErr(t, "use unknown", err, store.ErrNotFound)

	list, err := s.ListJoinTokens(ctx(t))
	must(t, "list", err)
	same(t, "tokens, newest first", names(list, func(x control.JoinToken) string { return x.ID }), []string{"k3", "k2", "k1"})
	for _, x := range list {
		if x.ID != "k1" && (!x.UsedAt.IsZero() || x.UsedBy != "") {
			t.Fatalf("token %s: used at %v by %q, want unused (expired tokens stay unused)", x.ID, x.UsedAt, x.UsedBy)
		}
		if x.Hash == "" {
			t.Fatalf("token %s listed without its hash", x.ID)
		}
	}
	same(t, "listed k1", list[2], want)
}

func testUsers(t *testing.T, s store.Store) {
	alice := control.User{ID: "u1", Name: "alice", Role: control.UserAdmin, TokenHash: "t1", CreatedAt: at(0)}
	bob := control.User{ID: "u2", Name: "bob", Role: control.UserViewer, CreatedAt: at(time.Second), Disabled: true}
	carol := control.User{ID: "u3", Name: "carol", Role: control.UserOperator} // no token either
	for _, u := range []control.User{bob, alice, carol} {
		must(t, "create "+u.Name, s.CreateUser(ctx(t), u))
	}
	wantErr(t, "same name", s.CreateUser(ctx(t), control.User{ID: "u4", Name: "alice", Role: control.UserViewer}), store.ErrExists)
	wantErr(t, "same token", s.CreateUser(ctx(t), control.User{ID: "u4", Name: "dave", Role: control.UserViewer, TokenHash: "t1"}), store.ErrExists)
	wantErr(t, "same id", s.CreateUser(ctx(t), control.User{ID: "u1", Name: "erin", Role: control.UserViewer}), store.ErrExists)

	got, err := s.UserByTokenHash(ctx(t), "t1")
	must(t, "by token", err)
	want := alice
	want.CreatedAt = um(alice.CreatedAt)
	same(t, "alice", got, want)
	_, err = s.UserByTokenHash(ctx(t), "nope")
	wantErr(t, "unknown token", err, store.ErrNotFound)
	_, err = s.UserByTokenHash(ctx(t), "")
	wantErr(t, "empty token", err, store.ErrNotFound)

	list, err := s.ListUsers(ctx(t))
	must(t, "list", err)
	same(t, "users by name", names(list, func(x control.User) string { return x.Name }), []string{"alice", "bob", "carol"})
	wantBob := bob
	wantBob.CreatedAt = um(bob.CreatedAt)
	same(t, "listed bob", list[1], wantBob)
}

func samplePolicy() control.Policy {
	return control.Policy{
		PointInterval: control.Duration(10 * time.Second),
		AppInterval:   control.Duration(time.Hour + 1500*time.Millisecond),
		Retention: retention.Policy{KeepAll: time.Hour, Hourly: 24, Daily: 7, Max: 7 * 24 * time.Hour,
			KeepAppConsistent: 3},
		RPOThreshold:   control.Duration(90 * time.Second),
		InitialStart:   at(3 * time.Hour),
		Compression:    "standard",
		BandwidthLimit: 125_000_000,
	}
}

func testGroups(t *testing.T, s store.Store) {
	g1 := control.Group{ID: "g1", Name: "web", Policy: samplePolicy(), CreatedAt: at(0), UpdatedAt: at(0)}
	g2 := control.Group{ID: "g2", Name: "db", CreatedAt: at(time.Second), UpdatedAt: at(time.Second)}
	must(t, "create", s.CreateGroup(ctx(t), g1))
	must(t, "create", s.CreateGroup(ctx(t), g2))
	wantErr(t, "same name", s.CreateGroup(ctx(t), control.Group{ID: "g3", Name: "web"}), store.ErrExists)
	wantErr(t, "same id", s.CreateGroup(ctx(t), control.Group{ID: "g1", Name: "other"}), store.ErrExists)

	wantG := func(g control.Group) control.Group {
		g.CreatedAt, g.UpdatedAt, g.Policy.InitialStart = um(g.CreatedAt), um(g.UpdatedAt), um(g.Policy.InitialStart)
		return g
	}
	got, err := s.GetGroup(ctx(t), "g1")
	must(t, "get", err)
	same(t, "g1 with its policy", got, wantG(g1))
	got, err = s.GroupByName(ctx(t), "db")
	must(t, "by name", err)
	same(t, "g2", got, wantG(g2))
	_, err = s.GetGroup(ctx(t), "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)
	_, err = s.GroupByName(ctx(t), "nope")
	wantErr(t, "unknown name", err, store.ErrNotFound)

	u := g1
	u.Name, u.UpdatedAt = "www", at(time.Hour)
	u.Policy.Compression, u.Policy.InitialStart = "off", time.Time{}
	u.CreatedAt = at(-time.Hour) // not replaced
	must(t, "update", s.UpdateGroup(ctx(t), u))
	got, err = s.GetGroup(ctx(t), "g1")
	must(t, "get", err)
	want := wantG(u)
	want.CreatedAt = um(g1.CreatedAt)
	same(t, "updated g1", got, want)
	u.Name = "db"
	wantErr(t, "rename onto another", s.UpdateGroup(ctx(t), u), store.ErrExists)
	wantErr(t, "update unknown", s.UpdateGroup(ctx(t), control.Group{ID: "zz", Name: "zz"}), store.ErrNotFound)

	list, err := s.ListGroups(ctx(t))
	must(t, "list", err)
	same(t, "groups by name", names(list, func(x control.Group) string { return x.Name }), []string{"db", "www"})
}

// testInvalid: bad input is refused with ErrInvalid, before it reaches the
// database, the same way by every backend.
func testInvalid(t *testing.T, s store.Store) {
	c := ctx(t)
	for name, err := range map[string]error{
		"site without id":         s.CreateSite(c, control.Site{Name: "x"}),
		"site without name":       s.CreateSite(c, control.Site{ID: "x"}),
		"site name with NUL":      s.CreateSite(c, control.Site{ID: "x", Name: "a\x00b"}),
		"site name not UTF-8":     s.CreateSite(c, control.Site{ID: "x", Name: "a\xffb"}),
		"server with bad role":    s.CreateServer(c, control.Server{ID: "x", Name: "x", Role: "king"}),
		"token with bad role":     s.CreateJoinToken(c, control.JoinToken{ID: "x", Hash: "h", Role: "", ExpiresAt: at(0)}),
		"token that never expire": s.CreateJoinToken(c, control.JoinToken{ID: "x", Hash: "h", Role: control.RoleAgent}),
		"user with bad role":      s.CreateUser(c, control.User{ID: "x", Name: "x", Role: "root"}),
		"alert without key":       s.ClearAlert(c, "", at(0)),
		"heartbeat without time":  s.Heartbeat(c, "x", time.Time{}, "", control.Capacity{}),
	} {
		wantErr(t, name, err, store.ErrInvalid)
	}
	_, err := s.CreateJob(c, control.Job{ID: "j", Kind: "k", State: control.JobQueued, Params: []byte("{nope")})
	wantErr(t, "job with bad params", err, store.ErrInvalid)
	_, err = s.CreateJob(c, control.Job{ID: "j", Kind: "k", State: "sleeping"})
	wantErr(t, "job with bad state", err, store.ErrInvalid)
	_, err = s.CreateMachine(c, control.Machine{ID: "m", Name: ""})
	wantErr(t, "machine without name", err, store.ErrInvalid)
	_, err = s.AppendAudit(c, control.AuditEntry{Action: "x"})
	wantErr(t, "audit without time", err, store.ErrInvalid)
	_, _, err = s.RaiseAlert(c, control.Alert{Key: "k"})
	wantErr(t, "alert without time", err, store.ErrInvalid)
	_, err = s.ListAudit(c, -1)
	wantErr(t, "negative audit limit", err, store.ErrInvalid)
	_, err = s.ListJobs(c, store.JobFilter{Limit: -1})
	wantErr(t, "negative job limit", err, store.ErrInvalid)
	sites, err := s.ListSites(c)
	must(t, "list", err)
	same(t, "sites after refused creates", len(sites), 0)
}

// testCancelled: a cancelled context means no mutation.
func testCancelled(t *testing.T, s store.Store) {
	c, cancel := contextWithCancel(t)
	cancel()
	if err := s.CreateSite(c, control.Site{ID: "s1", Name: "primary"}); err == nil {
		t.Fatal("create with a cancelled context: got no error")
	}
	if _, err := s.AppendAudit(c, control.AuditEntry{At: at(0), Action: "x"}); err == nil {
		t.Fatal("append audit with a cancelled context: got no error")
	}
	sites, err := s.ListSites(ctx(t))
	must(t, "list", err)
	same(t, "sites after a cancelled create", len(sites), 0)
	audit, err := s.ListAudit(ctx(t), 0)
	must(t, "list audit", err)
	same(t, "audit after a cancelled append", len(audit), 0)
}

func testSchemaVersion(t *testing.T, s store.Store) {
	v, err := s.SchemaVersion(ctx(t))
	must(t, "schema version", err)
	if v < 1 {
		t.Fatalf("schema version %d, want at least 1 (migrations applied at open)", v)
	}
}
