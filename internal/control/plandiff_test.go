package control

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDiffPlans(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Plan)
		want   []string
	}{
		{"nothing", func(*Plan) {}, []string{}},
		{"ID, version and times are not declared", func(p *Plan) {
			p.ID, p.Version, p.CreatedAt, p.UpdatedAt = "x", 9, time.Now(), time.Now()
		}, []string{}},
		{"nil and empty lists are the same", func(p *Plan) {
			p.Groups[2].Before, p.Groups[2].After = []PlanAction{}, []PlanAction{}
			p.Groups[0].After[0].Operations = append([]PlanOperation{}, p.Groups[0].After[0].Operations...)
			p.Groups[1].Before[0].Operations = []PlanOperation{}
		}, []string{}},
		{"description", func(p *Plan) { p.Description = "a" }, []string{`~ description: "the web shop: database, application, web" -> "a"`}},
		{"description removed", func(p *Plan) { p.Description = "" }, []string{"- description"}},
		{"machine added", func(p *Plan) { p.Groups[1].Machines = []string{"app01", "app02"} },
			[]string{"~ group app: machines [app01] -> [app01 app02]"}},
		{"machines reordered", func(p *Plan) { p.Groups[2].Machines = []string{"web02", "web01"} },
			[]string{"~ group web: machines [web01 web02] -> [web02 web01]"}},
		{"group removed", func(p *Plan) { p.Groups = p.Groups[:2]; delete(p.Drill.Probes, "web01") },
			[]string{"- group web", "- drill.probes[web01]"}},
		{"group added", func(p *Plan) {
			p.Groups = append(p.Groups, PlanGroup{Name: "batch", Machines: []string{"b01", "b02"},
				Before: []PlanAction{{Name: "stop-jobs", Script: &ScriptAction{Command: []string{"/opt/jobs", "stop"}}, Retries: 1}},
				After:  []PlanAction{{Name: "ok", Manual: &ManualAction{Instructions: strings.Repeat("é", 70)}, Operations: []PlanOperation{PlanFailover}}}})
		}, []string{"+ group batch: machines [b01 b02]",
			"+ group batch: before stop-jobs: script [/opt/jobs stop], retries 1",
			`+ group batch: after ok: manual "` + strings.Repeat("é", 57) + `...", operations [failover]`}},
		{"groups reordered", func(p *Plan) { p.Groups[0], p.Groups[1] = p.Groups[1], p.Groups[0] },
			[]string{"~ groups order: [db app web] -> [app db web]"}},
		{"a group removed is no reorder", func(p *Plan) { p.Groups = p.Groups[1:]; p.Drill = nil },
			[]string{"- group db", "- drill"}},
		{"action added", func(p *Plan) {
			p.Groups[1].Before = append(p.Groups[1].Before, PlanAction{Name: "warm", Manual: &ManualAction{Instructions: "warm caches"}, Timeout: Duration(time.Hour)})
		}, []string{`+ group app: before warm: manual "warm caches", timeout 1h0m0s`}},
		{"action removed", func(p *Plan) { p.Groups[0].After = nil }, []string{"- group db: after check-replication"}},
		{"action moved to another stage", func(p *Plan) {
			p.Groups[1].After, p.Groups[1].Before = p.Groups[1].Before, nil
		}, []string{"- group app: before drain-lb", "+ group app: after drain-lb: script [/opt/lb/drain app], timeout 1m0s, retries 2"}},
		{"action changed", func(p *Plan) {
			a := &p.Groups[1].Before[0]
			a.Script = &ScriptAction{Command: []string{"/opt/lb/drain", "app", "--wait"}}
			a.Timeout, a.Retries, a.Operations = 0, 3, []PlanOperation{PlanFailback}
		}, []string{
			"~ group app: before drain-lb: command [/opt/lb/drain app] -> [/opt/lb/drain app --wait]",
			"~ group app: before drain-lb: operations all -> [failback]",
			"~ group app: before drain-lb: timeout 1m0s -> default",
			"~ group app: before drain-lb: retries 2 -> 3",
		}},
		{"action became manual", func(p *Plan) {
			a := &p.Groups[1].Before[0]
			a.Script, a.Manual, a.Retries = nil, &ManualAction{Instructions: "drain by hand"}, 0
		}, []string{
			"~ group app: before drain-lb: kind script -> manual",
			"~ group app: before drain-lb: command [/opt/lb/drain app] -> -",
			`~ group app: before drain-lb: instructions - -> "drain by hand"`,
			"~ group app: before drain-lb: retries 2 -> 0",
		}},
		{"instructions changed", func(p *Plan) { p.Groups[0].After[0].Manual = &ManualAction{Instructions: "Check db02."} },
			[]string{`~ group db: after check-replication: instructions "Check that db02 follows db01." -> "Check db02."`}},
		{"an action inserted is no reorder", func(p *Plan) {
			p.Groups[1].Before = append([]PlanAction{{Name: "first", Script: &ScriptAction{Command: []string{"/bin/true"}}}}, p.Groups[1].Before...)
		}, []string{"+ group app: before first: script [/bin/true]"}},
		{"drill every", func(p *Plan) { p.Drill.Every = Duration(12 * time.Hour) }, []string{"~ drill.every: 24h0m0s -> 12h0m0s"}},
		{"drill window to default", func(p *Plan) { p.Drill.Window = 0 }, []string{"~ drill.window: 72h0m0s -> default"}},
		{"drill removed", func(p *Plan) { p.Drill = nil }, []string{"- drill"}},
		{"probes changed", func(p *Plan) {
			p.Drill.Probes["db01"] = Probe{TCP: "db01:5433"}
			p.Drill.Probes["app01"] = Probe{TCP: "app01:8080"}
			p.Drill.Probes["web02"] = Probe{HTTP: "http://web02/", Timeout: Duration(5 * time.Second)}
			delete(p.Drill.Probes, "web01")
		}, []string{
			"~ drill.probes[app01]: http http://app01:8080/health, timeout 10s -> tcp app01:8080",
			"~ drill.probes[db01]: tcp db01:5432 -> tcp db01:5433",
			"- drill.probes[web01]",
			"+ drill.probes[web02]: http http://web02/, timeout 5s",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			to := shopPlan()
			tc.change(&to)
			got := DiffPlans(shopPlan(), to)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			back := DiffPlans(to, shopPlan())
			if (len(back) == 0) != (len(got) == 0) {
				t.Fatalf("the diff back says %q, the diff there %q: both empty or neither", back, got)
			}
		})
	}
}

func TestDiffPlansOfReorderedActions(t *testing.T) {
	from := shopPlan()
	from.Groups[1].Before = append(from.Groups[1].Before, PlanAction{Name: "warm", Script: &ScriptAction{Command: []string{"/bin/true"}}})
	to := shopPlan()
	to.Groups[1].Before = []PlanAction{from.Groups[1].Before[1], from.Groups[1].Before[0]}
	got := DiffPlans(from, to)
	want := []string{"~ group app: before order: [drain-lb warm] -> [warm drain-lb]"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("diff %q, want %q", got, want)
	}
}

// A new plan: every group, action and probe is an addition.
func TestDiffPlansOfANewPlan(t *testing.T) {
	got := DiffPlans(Plan{}, shopPlan())
	want := []string{
		`+ description: "the web shop: database, application, web"`,
		"+ group db: machines [db01 db02]",
		`+ group db: after check-replication: manual "Check that db02 follows db01.", operations [failover planned-failover], timeout 2h0m0s`,
		"+ group app: machines [app01]",
		"+ group app: before drain-lb: script [/opt/lb/drain app], timeout 1m0s, retries 2",
		"+ group web: machines [web01 web02]",
		"+ drill: every 24h0m0s, window 72h0m0s",
		"+ drill.probes[app01]: http http://app01:8080/health, timeout 10s",
		"+ drill.probes[db01]: tcp db01:5432",
		"+ drill.probes[web01]: command [/usr/bin/curl -fs http://web01/]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The diff compares every declared field: a field added to the plan's
// types must be added to DiffPlans (and to this list).
func TestDiffPlansKnowsEveryField(t *testing.T) {
	known := map[reflect.Type][]string{
		reflect.TypeFor[Plan]():         {"ID", "Name", "Description", "Groups", "Drill", "Version", "CreatedAt", "UpdatedAt"},
		reflect.TypeFor[PlanGroup]():    {"Name", "Machines", "Before", "After"},
		reflect.TypeFor[PlanAction]():   {"Name", "Script", "Manual", "Operations", "Timeout", "Retries"},
		reflect.TypeFor[ScriptAction](): {"Command"},
		reflect.TypeFor[ManualAction](): {"Instructions"},
		reflect.TypeFor[DrillPolicy]():  {"Every", "Window", "Probes"},
		reflect.TypeFor[Probe]():        {"TCP", "HTTP", "Command", "Timeout"},
	}
	for typ, fields := range known {
		var got []string
		for f := range typ.Fields() {
			got = append(got, f.Name)
		}
		if !reflect.DeepEqual(got, fields) {
			t.Errorf("%s has fields %v; DiffPlans knows %v: teach it the new ones", typ, got, fields)
		}
	}
}
