package api

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// withMachines registers machines as an agent would have reported them.
func (f *fixture) withMachines(names ...string) {
	f.t.Helper()
	for _, n := range names {
		if _, err := f.st.CreateMachine(context.Background(), control.Machine{ID: "m-" + n, Name: n, State: "protected"}); err != nil {
			f.t.Fatal(err)
		}
	}
}

func shop() control.Plan {
	return control.Plan{
		Name: "shop", Description: "the shop",
		Groups: []control.PlanGroup{
			{Name: "db", Machines: []string{"db01"}, After: []control.PlanAction{{Name: "check", Manual: &control.ManualAction{Instructions: "Check the database."}}}},
			{Name: "app", Machines: []string{"app01", "app02"}, Before: []control.PlanAction{{Name: "drain", Script: &control.ScriptAction{Command: []string{"/opt/lb/drain"}}}}},
			{Name: "web", Machines: []string{"web01"}},
		},
		Drill: &control.DrillPolicy{Every: control.Duration(24 * time.Hour), Probes: map[string]control.Probe{"web01": {HTTP: "http://web01/"}}},
	}
}

func jsonOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (f *fixture) apply(p control.Plan, query string, want int) planApplyResponse {
	f.t.Helper()
	var out planApplyResponse
	body := f.must(control.UserOperator, "PUT", "/v1/plans/"+p.Name+query, jsonOf(f.t, p), want)
	if want == 200 {
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			f.t.Fatalf("apply answer: %v: %s", err, body)
		}
	}
	return out
}

func (f *fixture) auditActions() []string {
	f.t.Helper()
	var audit []control.AuditEntry
	json.Unmarshal([]byte(f.must(control.UserViewer, "GET", "/v1/audit", "", 200)), &audit)
	var out []string
	for _, a := range audit {
		out = append(out, a.Action+" "+a.Object+" "+a.Result)
	}
	return out
}

func TestPlanApplyIsIdempotent(t *testing.T) {
	f := newFixture(t)
	f.withMachines("db01", "db02", "app01", "app02", "web01")

	wantDiff := []string{
		`+ description: "the shop"`,
		"+ group db: machines [db01]",
		`+ group db: after check: manual "Check the database."`,
		"+ group app: machines [app01 app02]",
		"+ group app: before drain: script [/opt/lb/drain]",
		"+ group web: machines [web01]",
		"+ drill: every 24h0m0s, window default",
		"+ drill.probes[web01]: http http://web01/",
	}
	// A dry run of a new plan: what would be created, nothing written.
	out := f.apply(shop(), "?dry_run=true", 200)
	if !out.Changed || !out.Created || !out.DryRun || out.Plan.Version != 1 || out.Plan.ID != "" || !reflect.DeepEqual(out.Diff, wantDiff) {
		t.Fatalf("dry run of a new plan: %+v", out)
	}
	f.must(control.UserViewer, "GET", "/v1/plans/shop", "", 404)

	out = f.apply(shop(), "", 200)
	if !out.Changed || !out.Created || out.DryRun || out.Plan.Version != 1 || out.Plan.ID == "" || out.Plan.CreatedAt.IsZero() {
		t.Fatalf("create: %+v", out)
	}
	if !reflect.DeepEqual(out.Diff, wantDiff) {
		t.Fatalf("diff of a new plan:\n%s", strings.Join(out.Diff, "\n"))
	}
	created := out.Plan

	// The same plan again: nothing written, and the answer says so.
	out = f.apply(shop(), "", 200)
	if out.Changed || out.Created || len(out.Diff) != 0 || !reflect.DeepEqual(out.Plan, created) {
		t.Fatalf("the same plan again: %+v", out)
	}

	// A change: the diff says what, the version goes up.
	p := shop()
	p.Groups[0].Machines = []string{"db01", "db02"}
	p.Groups = p.Groups[:2]
	p.Drill = nil
	out = f.apply(p, "?dry_run=true", 200)
	if !out.Changed || out.Created || out.Plan.Version != 2 {
		t.Fatalf("dry run of a change: %+v", out)
	}
	var stored control.Plan
	json.Unmarshal([]byte(f.must(control.UserViewer, "GET", "/v1/plans/shop", "", 200)), &stored)
	if !reflect.DeepEqual(stored, created) {
		t.Fatalf("a dry run changed the plan: %+v", stored)
	}
	out = f.apply(p, "", 200)
	want := []string{"- group web", "~ group db: machines [db01] -> [db01 db02]", "- drill"}
	if !out.Changed || out.Created || out.Plan.Version != 2 || !reflect.DeepEqual(out.Diff, want) {
		t.Fatalf("change: %+v, want the diff %q", out, want)
	}
	if out.Plan.ID != created.ID || !out.Plan.CreatedAt.Equal(created.CreatedAt) {
		t.Fatalf("an update changed the plan's ID or creation time: %+v", out.Plan)
	}

	// Applied as read, with the version: refused once it changed.
	created.Description = "stale"
	f.must(control.UserOperator, "PUT", "/v1/plans/shop", jsonOf(t, created), 409)
	p.Version = 2
	p.Description = "current"
	if out = f.apply(p, "", 200); out.Plan.Version != 3 {
		t.Fatalf("apply at the current version: %+v", out)
	}

	var list []control.Plan
	json.Unmarshal([]byte(f.must(control.UserViewer, "GET", "/v1/plans", "", 200)), &list)
	if len(list) != 1 || list[0].Name != "shop" || list[0].Version != 3 {
		t.Fatalf("list: %+v", list)
	}
	got := f.auditActions()
	wantAudit := []string{"plan.apply plan/shop ok", "plan.apply plan/shop ok", "plan.apply plan/shop ok"}
	if !reflect.DeepEqual(got, wantAudit) {
		t.Fatalf("audit %q, want %q (one entry per change, none for dry runs and no-ops)", got, wantAudit)
	}
}

func TestPlanApplyRefuses(t *testing.T) {
	f := newFixture(t)
	f.withMachines("db01", "app01", "app02", "web01")
	bad := shop()
	bad.Groups[2].Name = "db"
	bad.Groups[1].Before[0].Script.Command = []string{"drain"}
	bad.Drill.Every = control.Duration(time.Second)
	for _, tc := range []struct {
		name, path, body string
		want             int
		says             []string
	}{
		{"every problem", "/v1/plans/shop", jsonOf(t, bad), 400, []string{
			"plan shop is invalid:\n",
			`groups[2].name: "db" is used by another group`,
			"groups[1].before[0].script.command: want an argv whose program is an absolute path",
			"drill.every: 1s: at least 1m",
		}},
		{"unknown machines", "/v1/plans/shop", jsonOf(t, func() control.Plan {
			p := shop()
			p.Groups[0].Machines = []string{"db01", "db09"}
			p.Groups[2].Machines = []string{"web01", "web07"}
			return p
		}()), 400,
			[]string{"names machines the server does not know: db09 (group db), web07 (group web)"}},
		{"name differs", "/v1/plans/other", jsonOf(t, shop()), 400, []string{`name "shop" in the body differs from "other" in the path`}},
		{"unknown field", "/v1/plans/shop", `{"name": "shop", "groups": [{"name": "db", "machine": ["db01"]}]}`, 400, []string{`unknown field "machine"`}},
		{"bad duration", "/v1/plans/shop", `{"name": "shop", "groups": [{"name": "db", "machines": ["db01"]}], "drill": {"every": "daily"}}`, 400, []string{"daily"}},
		{"bad dry_run", "/v1/plans/shop?dry_run=maybe", jsonOf(t, shop()), 400, []string{`dry_run="maybe": want true or false`}},
	} {
		code, out := f.call(control.UserOperator, "PUT", tc.path, tc.body)
		var eb errorBody
		json.Unmarshal([]byte(out), &eb)
		if code != tc.want {
			t.Errorf("%s: HTTP %d %s, want %d", tc.name, code, out, tc.want)
		}
		for _, s := range tc.says {
			if !strings.Contains(eb.Error, s) {
				t.Errorf("%s: %q does not say %q", tc.name, eb.Error, s)
			}
		}
	}
	if code, _ := f.call(control.UserViewer, "PUT", "/v1/plans/shop", jsonOf(t, shop())); code != 403 {
		t.Errorf("a viewer applies a plan: HTTP %d, want 403", code)
	}
	f.must(control.UserViewer, "GET", "/v1/plans/shop", "", 404)
	if got := f.auditActions(); len(got) != 0 {
		t.Errorf("refused applies left audit entries: %q", got)
	}
}

func TestPlanDelete(t *testing.T) {
	f := newFixture(t)
	f.withMachines("db01", "app01", "app02", "web01")
	f.apply(shop(), "", 200)
	ctx := context.Background()

	// A run in progress: a job on plan/shop.
	j, err := f.st.CreateJob(ctx, control.Job{ID: "run-1", Kind: "plan.run", Object: "plan/shop", State: control.JobRunning})
	if err != nil {
		t.Fatal(err)
	}
	code, out := f.call(control.UserOperator, "DELETE", "/v1/plans/shop", "")
	if code != 409 || !strings.Contains(out, "plan shop is running (job run-1, running)") || !strings.Contains(out, "standby jobs cancel run-1") {
		t.Fatalf("delete of a running plan: HTTP %d %s", code, out)
	}
	f.must(control.UserViewer, "DELETE", "/v1/plans/shop", "", 403)

	j.State = control.JobSucceeded
	if _, err := f.st.UpdateJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	var deleted control.Plan
	json.Unmarshal([]byte(f.must(control.UserOperator, "DELETE", "/v1/plans/shop", "", 200)), &deleted)
	if deleted.Name != "shop" || len(deleted.Groups) != 3 {
		t.Fatalf("delete answered %+v, want the deleted plan", deleted)
	}
	f.must(control.UserViewer, "GET", "/v1/plans/shop", "", 404)
	f.must(control.UserOperator, "DELETE", "/v1/plans/shop", "", 404)
	if got := f.auditActions(); len(got) != 2 || got[0] != "plan.delete plan/shop ok" {
		t.Fatalf("audit %q, want the delete first", got)
	}
	// Applied again, it is a new plan.
	if out := f.apply(shop(), "", 200); !out.Created || out.Plan.Version != 1 {
		t.Fatalf("apply after delete: %+v", out)
	}
}
