package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

var planTests = []test{
	{"Plans", testPlans},
	{"PlanUpdate", testPlanUpdate},
	{"PlanDelete", testPlanDelete},
	{"PlanRuns", testPlanRuns},
	{"PlanRunUpdate", testPlanRunUpdate},
	{"PlanRunList", testPlanRunList},
	{"PlanInvalid", testPlanInvalid},
}

// samplePlan is a plan with every field set.
func samplePlan(id, name string) control.Plan {
	return control.Plan{
		ID: id, Name: name, Description: "résumé ✓ \"quoted\"\nsecond line",
		Groups: []control.PlanGroup{
			{Name: "db", Machines: []string{"db01", "db02"}, After: []control.PlanAction{
				{Name: "check", Manual: &control.ManualAction{Instructions: "Check db02 follows db01."},
					Operations: []control.PlanOperation{control.PlanFailover, control.PlanPlannedFailover}, Timeout: control.Duration(2 * time.Hour)}}},
			{Name: "app", Machines: []string{"app01"}, Before: []control.PlanAction{
				{Name: "drain", Script: &control.ScriptAction{Command: []string{"/opt/lb/drain", "app", "--wait=1.5s"}}, Timeout: control.Duration(90 * time.Second), Retries: 3}}},
		},
		Drill: &control.DrillPolicy{Every: control.Duration(24 * time.Hour), Window: control.Duration(72 * time.Hour), Probes: map[string]control.Probe{
			"db01":  {TCP: "db01:5432", Timeout: control.Duration(5 * time.Second)},
			"app01": {HTTP: "http://app01:8080/health"},
			"db02":  {Command: []string{"/usr/bin/pg_isready", "-h", "db02"}},
		}},
		Version:   7, // ignored by CreatePlan
		CreatedAt: at(0), UpdatedAt: at(time.Second),
	}
}

func wantPlan(p control.Plan, version int64) control.Plan {
	p.CreatedAt, p.UpdatedAt = um(p.CreatedAt), um(p.UpdatedAt)
	p.Version = version
	return p
}

func testPlans(t *testing.T, s store.Store) {
	got, err := s.ListPlans(ctx(t))
	must(t, "list empty", err)
	same(t, "plans of an empty store", got, []control.Plan{})

	shop := samplePlan("p1", "shop")
	created, err := s.CreatePlan(ctx(t), shop)
	must(t, "create", err)
	same(t, "created plan", created, wantPlan(shop, 1))
	if &created.Groups[0] == &shop.Groups[0] || created.Drill == shop.Drill {
		t.Fatal("the created plan shares the caller's groups or drill")
	}
	stored, err := s.GetPlan(ctx(t), "shop")
	must(t, "get", err)
	same(t, "stored plan", stored, wantPlan(shop, 1))

	// A bare plan: no drill, no description. A group's empty machine
	// list stays empty; an empty list of actions (left out of the JSON)
	// comes back nil.
	bare := control.Plan{ID: "p2", Name: "a-bare.plan", Groups: []control.PlanGroup{{Name: "g", Machines: []string{}, Before: []control.PlanAction{}}}}
	created, err = s.CreatePlan(ctx(t), bare)
	must(t, "create bare", err)
	wantBare := wantPlan(bare, 1)
	wantBare.Groups = []control.PlanGroup{{Name: "g", Machines: []string{}}}
	same(t, "created bare plan", created, wantBare)
	stored, err = s.GetPlan(ctx(t), "a-bare.plan")
	must(t, "get bare", err)
	same(t, "stored bare plan", stored, wantBare)

	_, err = s.CreatePlan(ctx(t), samplePlan("p3", "shop"))
	wantErr(t, "same name", err, store.ErrExists)
	_, err = s.CreatePlan(ctx(t), samplePlan("p1", "other"))
	wantErr(t, "same id", err, store.ErrExists)
	_, err = s.GetPlan(ctx(t), "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)

	_, err = s.CreatePlan(ctx(t), samplePlan("p4", "b"))
	must(t, "create b", err)
	list, err := s.ListPlans(ctx(t))
	must(t, "list", err)
	same(t, "plans by name", names(list, func(p control.Plan) string { return p.Name }), []string{"a-bare.plan", "b", "shop"})
	same(t, "listed shop", list[2], wantPlan(shop, 1))
}

func testPlanUpdate(t *testing.T, s store.Store) {
	p, err := s.CreatePlan(ctx(t), samplePlan("p1", "shop"))
	must(t, "create", err)
	_, err = s.CreatePlan(ctx(t), samplePlan("p2", "intranet"))
	must(t, "create", err)

	u := p
	u.Description, u.Drill, u.UpdatedAt = "", nil, at(time.Hour)
	u.Groups = append(u.Groups, control.PlanGroup{Name: "web", Machines: []string{"web01"}})
	got, err := s.UpdatePlan(ctx(t), u)
	must(t, "update", err)
	same(t, "updated plan", got, wantPlan(u, 2))
	stored, err := s.GetPlan(ctx(t), "shop")
	must(t, "get", err)
	same(t, "stored plan", stored, wantPlan(u, 2))

	stale := u // still version 1
	stale.Description = "lost update"
	_, err = s.UpdatePlan(ctx(t), stale)
	wantErr(t, "update with a stale version", err, store.ErrConflict)
	stored, err = s.GetPlan(ctx(t), "shop")
	must(t, "get", err)
	same(t, "plan after a refused update", stored, wantPlan(u, 2))

	got.Name = "intranet"
	_, err = s.UpdatePlan(ctx(t), got)
	wantErr(t, "rename onto another", err, store.ErrExists)
	_, err = s.UpdatePlan(ctx(t), control.Plan{ID: "zz", Name: "zz", Version: 1})
	wantErr(t, "update unknown", err, store.ErrNotFound)

	got.Name = "shop"
	got, err = s.UpdatePlan(ctx(t), got)
	must(t, "update again", err)
	same(t, "version after two updates", got.Version, int64(3))
}

func testPlanDelete(t *testing.T, s store.Store) {
	for i, name := range []string{"a", "b", "c"} {
		_, err := s.CreatePlan(ctx(t), samplePlan(id(i), name))
		must(t, "create "+name, err)
	}
	// A run of b outlives it.
	_, err := s.CreatePlanRun(ctx(t), samplePlanRun("r1", "b", 0))
	must(t, "create run", err)
	must(t, "delete", s.DeletePlan(ctx(t), "b"))
	_, err = s.GetPlan(ctx(t), "b")
	wantErr(t, "get deleted", err, store.ErrNotFound)
	wantErr(t, "delete again", s.DeletePlan(ctx(t), "b"), store.ErrNotFound)
	wantErr(t, "delete unknown", s.DeletePlan(ctx(t), "nope"), store.ErrNotFound)
	list, err := s.ListPlans(ctx(t))
	must(t, "list", err)
	same(t, "plans after a delete", names(list, func(p control.Plan) string { return p.Name }), []string{"a", "c"})
	runs, err := s.ListPlanRuns(ctx(t), "b", 0)
	must(t, "list runs", err)
	same(t, "runs of the deleted plan", len(runs), 1)
	// The name is free again, with a new ID.
	_, err = s.CreatePlan(ctx(t), samplePlan("new", "b"))
	must(t, "create b again", err)
}

// samplePlanRun is a run with every field set, started at started.
func samplePlanRun(id, plan string, started time.Duration) control.PlanRun {
	return control.PlanRun{
		ID: id, Plan: plan, Operation: control.PlanFailover, Point: "latest-consistent", DryRun: true,
		RetryOf: "r0", Skip: "group app: before drain", State: control.JobRunning,
		Steps: []control.PlanStepReport{
			{Name: "group db", Group: "db", Kind: "machines", Machines: []string{"db01", "db02"}, EstimateSeconds: 12.5,
				State: control.JobSucceeded, StartedAt: at(started), EndedAt: at(started + time.Minute), Result: "2 machines running"},
			{Name: "check", Group: "db", Kind: "manual", State: control.PlanStepSkipped, Error: "résumé ✓ \"quoted\""},
			{Name: "group app", Group: "app", Kind: "machines", Machines: []string{"app01"}, State: control.JobQueued},
		},
		Machines: []control.PlanMachineReport{
			{Machine: "db01", Group: "db", PointID: 1<<63 + 5, PointTime: at(started - time.Second), DataLossSeconds: 1.25,
				ReadyAt: at(started + 30*time.Second), Job: "j-db01", Result: "running"},
			{Machine: "app01", Group: "app"},
		},
		StartedAt: at(started), RTOSeconds: 42.5, Error: "",
		Signals: map[string]string{"check": "continue"},
		Version: 9, // ignored by CreatePlanRun
	}
}

func wantPlanRun(r control.PlanRun, version int64) control.PlanRun {
	r.StartedAt, r.EndedAt = um(r.StartedAt), um(r.EndedAt)
	steps := append([]control.PlanStepReport(nil), r.Steps...)
	for i := range steps {
		steps[i].StartedAt, steps[i].EndedAt = um(steps[i].StartedAt), um(steps[i].EndedAt)
	}
	machines := append([]control.PlanMachineReport(nil), r.Machines...)
	for i := range machines {
		machines[i].PointTime, machines[i].ReadyAt = um(machines[i].PointTime), um(machines[i].ReadyAt)
	}
	r.Steps, r.Machines = steps, machines
	r.Version = version
	return r
}

func testPlanRuns(t *testing.T, s store.Store) {
	r1 := samplePlanRun("r1", "shop", 0)
	got, err := s.CreatePlanRun(ctx(t), r1)
	must(t, "create", err)
	same(t, "created run", got, wantPlanRun(r1, 1))
	got, err = s.GetPlanRun(ctx(t), "r1")
	must(t, "get", err)
	same(t, "stored run", got, wantPlanRun(r1, 1))

	bare := control.PlanRun{ID: "r2", Plan: "shop", Operation: control.PlanTestFailover, State: control.JobQueued}
	got, err = s.CreatePlanRun(ctx(t), bare)
	must(t, "create bare", err)
	same(t, "created bare run", got, wantPlanRun(bare, 1))
	got, err = s.GetPlanRun(ctx(t), "r2")
	must(t, "get bare", err)
	same(t, "stored bare run", got, wantPlanRun(bare, 1))
	if got.Steps != nil || got.Machines != nil || got.Signals != nil {
		t.Fatalf("bare run: steps %#v, machines %#v, signals %#v: want nil, as created", got.Steps, got.Machines, got.Signals)
	}

	_, err = s.CreatePlanRun(ctx(t), samplePlanRun("r1", "other", 0))
	wantErr(t, "same id", err, store.ErrExists)
	_, err = s.GetPlanRun(ctx(t), "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)
}

func testPlanRunUpdate(t *testing.T, s store.Store) {
	r, err := s.CreatePlanRun(ctx(t), samplePlanRun("r1", "shop", 0))
	must(t, "create", err)
	r.State, r.Error, r.EndedAt, r.RTOSeconds = control.JobFailed, "group app: app01: start: no capacity", at(time.Hour), 0
	r.Steps[2].State, r.Steps[2].StartedAt, r.Steps[2].EndedAt = control.JobFailed, at(time.Minute), at(time.Hour)
	r.Machines = append(r.Machines, control.PlanMachineReport{Machine: "web01", Group: "web", ReadyAt: at(time.Hour)})
	r.Signals["another"] = "abort"
	got, err := s.UpdatePlanRun(ctx(t), r)
	must(t, "update", err)
	same(t, "updated run", got, wantPlanRun(r, 2))
	stored, err := s.GetPlanRun(ctx(t), "r1")
	must(t, "get", err)
	same(t, "stored run", stored, wantPlanRun(r, 2))

	_, err = s.UpdatePlanRun(ctx(t), r) // r still has version 1
	wantErr(t, "stale update", err, store.ErrConflict)
	_, err = s.UpdatePlanRun(ctx(t), control.PlanRun{ID: "zz", Plan: "p", Operation: control.PlanCommit, State: control.JobQueued, Version: 1})
	wantErr(t, "update unknown", err, store.ErrNotFound)
	got, err = s.UpdatePlanRun(ctx(t), got)
	must(t, "update again", err)
	same(t, "version after two updates", got.Version, int64(3))
}

func testPlanRunList(t *testing.T, s store.Store) {
	mk := func(id, plan string, started time.Duration) {
		r := control.PlanRun{ID: id, Plan: plan, Operation: control.PlanTestFailover, State: control.JobSucceeded}
		if started >= 0 {
			r.StartedAt = at(started)
		}
		_, err := s.CreatePlanRun(ctx(t), r)
		must(t, "create "+id, err)
	}
	mk("r1", "shop", 0)
	mk("r2", "shop", 3*time.Second)
	mk("r3", "shop", time.Second)
	mk("r4", "intranet", 5*time.Second)
	mk("r5", "shop", time.Second) // same start as r3, created later
	mk("r6", "shop", -1)          // not started yet: the newest
	for _, tc := range []struct {
		plan  string
		limit int
		want  []string
	}{
		{"shop", 0, []string{"r6", "r2", "r5", "r3", "r1"}},
		{"shop", 2, []string{"r6", "r2"}},
		{"shop", 5, []string{"r6", "r2", "r5", "r3", "r1"}},
		{"shop", 100, []string{"r6", "r2", "r5", "r3", "r1"}},
		{"intranet", 0, []string{"r4"}},
		{"nope", 0, []string{}},
	} {
		got, err := s.ListPlanRuns(ctx(t), tc.plan, tc.limit)
		must(t, "list", err)
		same(t, fmt.Sprintf("runs of %s, newest first, at most %d", tc.plan, tc.limit), names(got, func(r control.PlanRun) string { return r.ID }), tc.want)
	}
	_, err := s.ListPlanRuns(ctx(t), "shop", -1)
	wantErr(t, "negative limit", err, store.ErrInvalid)
}

// testPlanInvalid: bad plans and runs are refused with ErrInvalid, the
// same way by every backend.
func testPlanInvalid(t *testing.T, s store.Store) {
	c := ctx(t)
	plan := func(p control.Plan) error { _, err := s.CreatePlan(c, p); return err }
	run := func(r control.PlanRun) error { _, err := s.CreatePlanRun(c, r); return err }
	ok := control.PlanRun{ID: "r", Plan: "p", Operation: control.PlanFailover, State: control.JobQueued}
	for name, err := range map[string]error{
		"plan without id":        plan(control.Plan{Name: "p"}),
		"plan without name":      plan(control.Plan{ID: "p"}),
		"plan name with NUL":     plan(control.Plan{ID: "p", Name: "a\x00"}),
		"description not UTF-8":  plan(control.Plan{ID: "p", Name: "p", Description: "\xff"}),
		"run without id":         run(func(r control.PlanRun) control.PlanRun { r.ID = ""; return r }(ok)),
		"run without plan":       run(func(r control.PlanRun) control.PlanRun { r.Plan = ""; return r }(ok)),
		"run without operation":  run(func(r control.PlanRun) control.PlanRun { r.Operation = ""; return r }(ok)),
		"run with bad state":     run(func(r control.PlanRun) control.PlanRun { r.State = "sleeping"; return r }(ok)),
		"run error with NUL":     run(func(r control.PlanRun) control.PlanRun { r.Error = "a\x00"; return r }(ok)),
		"delete plan name NUL":   s.DeletePlan(c, "a\x00"),
		"get plan name not UTF8": func() error { _, err := s.GetPlan(c, "\xff"); return err }(),
	} {
		wantErr(t, name, err, store.ErrInvalid)
	}
	plans, err := s.ListPlans(c)
	must(t, "list", err)
	same(t, "plans after refused creates", len(plans), 0)
	runs, err := s.ListPlanRuns(c, "p", 0)
	must(t, "list runs", err)
	same(t, "runs after refused creates", len(runs), 0)
}
