package control

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// shopPlan is a valid plan that uses every field: the base the tests of
// Validate and DiffPlans change.
func shopPlan() Plan {
	return Plan{
		Name:        "shop",
		Description: "the web shop: database, application, web",
		Groups: []PlanGroup{
			{Name: "db", Machines: []string{"db01", "db02"},
				After: []PlanAction{{Name: "check-replication", Manual: &ManualAction{Instructions: "Check that db02 follows db01."},
					Operations: []PlanOperation{PlanFailover, PlanPlannedFailover}, Timeout: Duration(2 * time.Hour)}}},
			{Name: "app", Machines: []string{"app01"},
				Before: []PlanAction{{Name: "drain-lb", Script: &ScriptAction{Command: []string{"/opt/lb/drain", "app"}}, Timeout: Duration(time.Minute), Retries: 2}}},
			{Name: "web", Machines: []string{"web01", "web02"}},
		},
		Drill: &DrillPolicy{Every: Duration(24 * time.Hour), Window: Duration(72 * time.Hour), Probes: map[string]Probe{
			"db01":  {TCP: "db01:5432"},
			"app01": {HTTP: "http://app01:8080/health", Timeout: Duration(10 * time.Second)},
			"web01": {Command: []string{"/usr/bin/curl", "-fs", "http://web01/"}},
		}},
	}
}

func TestPlanValidate(t *testing.T) {
	allowedOps := "allowed: test-failover, test-cleanup, planned-failover, failover, commit, reprotect, failback, drill"
	tests := []struct {
		name   string
		change func(*Plan)
		want   []string // substrings, one per problem; none: valid
	}{
		{"every field", func(*Plan) {}, nil},
		{"no drill, one group, one machine", func(p *Plan) { p.Groups, p.Drill = p.Groups[:1], nil }, nil},
		{"an action's name in before and after", func(p *Plan) {
			p.Groups[1].After = []PlanAction{{Name: "drain-lb", Script: &ScriptAction{Command: []string{"/bin/true"}}}}
		}, nil},
		{"longest name", func(p *Plan) { p.Name = "a" + strings.Repeat("-", 62) }, nil},
		{"window equal to every", func(p *Plan) { p.Drill.Window = p.Drill.Every }, nil},

		{"name with capitals", func(p *Plan) { p.Name = "Shop" },
			[]string{`name: "Shop": 1-63 of a-z 0-9 . _ -, starting with a letter or digit`}},
		{"empty name", func(p *Plan) { p.Name = "" }, []string{`name: "": 1-63 of`}},
		{"name too long", func(p *Plan) { p.Name = strings.Repeat("a", 64) }, []string{"name: \"aaaa"}},
		{"description too long", func(p *Plan) { p.Description = strings.Repeat("x", 1025) },
			[]string{"description: 1025 bytes: at most 1024"}},
		{"no groups", func(p *Plan) { p.Groups, p.Drill = nil, nil }, []string{"groups: 0 groups: 1 to 32"}},
		{"too many groups", func(p *Plan) {
			p.Groups, p.Drill = nil, nil
			for i := range 33 {
				p.Groups = append(p.Groups, PlanGroup{Name: fmt.Sprintf("g%d", i), Machines: []string{fmt.Sprintf("m%d", i)}})
			}
		}, []string{"groups: 33 groups: 1 to 32"}},
		{"too many machines", func(p *Plan) {
			p.Groups, p.Drill = []PlanGroup{{Name: "all"}}, nil
			for i := range 257 {
				p.Groups[0].Machines = append(p.Groups[0].Machines, fmt.Sprintf("m%d", i))
			}
		}, []string{"groups: 257 machines: at most 256"}},
		{"group name", func(p *Plan) { p.Groups[2].Name = "Web Tier" },
			[]string{`groups[2].name: "Web Tier": 1-63 of a-z 0-9 . _ -`}},
		{"two groups of one name", func(p *Plan) { p.Groups[2].Name = "db" },
			[]string{`groups[2].name: "db" is used by another group`}},
		{"group without machines", func(p *Plan) { p.Groups[2].Machines = nil },
			[]string{"groups[2].machines: a group needs at least one machine", `drill.probes[web01]: "web01" is not a machine of the plan`}},
		{"empty machine name", func(p *Plan) { p.Groups[2].Machines[1] = "" },
			[]string{"groups[2].machines[1]: empty machine name"}},
		{"machine in two groups", func(p *Plan) { p.Groups[2].Machines[1] = "db02" },
			[]string{`groups[2].machines[1]: "db02" is already in group "db": a machine is in one group`}},
		{"machine twice in a group", func(p *Plan) { p.Groups[0].Machines[1] = "db01" },
			[]string{`groups[0].machines[1]: "db01" is already in group "db"`}},
		{"too many actions", func(p *Plan) {
			for i := range 17 {
				p.Groups[2].Before = append(p.Groups[2].Before, PlanAction{Name: fmt.Sprintf("a%d", i), Script: &ScriptAction{Command: []string{"/bin/true"}}})
			}
		}, []string{"groups[2].before: 17 actions: at most 16"}},
		{"action name", func(p *Plan) { p.Groups[1].Before[0].Name = "drain LB" },
			[]string{`groups[1].before[0].name: "drain LB": 1-63 of a-z`}},
		{"two actions of one name", func(p *Plan) {
			p.Groups[1].Before = append(p.Groups[1].Before, PlanAction{Name: "drain-lb", Manual: &ManualAction{Instructions: "x"}})
		}, []string{`groups[1].before[1].name: "drain-lb" is used by another action of groups[1].before`}},
		{"neither script nor manual", func(p *Plan) { p.Groups[1].Before[0].Script = nil },
			[]string{"groups[1].before[0]: set exactly one of script, manual"}},
		{"script and manual", func(p *Plan) { p.Groups[1].Before[0].Manual = &ManualAction{Instructions: "x"} },
			[]string{"groups[1].before[0]: set exactly one of script, manual"}},
		{"relative program", func(p *Plan) { p.Groups[1].Before[0].Script.Command[0] = "drain" },
			[]string{"groups[1].before[0].script.command: want an argv whose program is an absolute path"}},
		{"empty command", func(p *Plan) { p.Groups[1].Before[0].Script.Command = nil },
			[]string{"groups[1].before[0].script.command: want an argv"}},
		{"manual without instructions", func(p *Plan) { p.Groups[0].After[0].Manual.Instructions = "" },
			[]string{"groups[0].after[0].manual.instructions: 1 to 4096 bytes"}},
		{"manual instructions too long", func(p *Plan) { p.Groups[0].After[0].Manual.Instructions = strings.Repeat("x", 4097) },
			[]string{"groups[0].after[0].manual.instructions: 1 to 4096 bytes"}},
		{"manual with retries", func(p *Plan) { p.Groups[0].After[0].Retries = 1 },
			[]string{"groups[0].after[0].retries: a manual action has no retries"}},
		{"negative timeout", func(p *Plan) { p.Groups[1].Before[0].Timeout = Duration(-time.Second) },
			[]string{"groups[1].before[0].timeout: -1s: 0 (the default) to 168h"}},
		{"timeout over a week", func(p *Plan) { p.Groups[1].Before[0].Timeout = Duration(169 * time.Hour) },
			[]string{"groups[1].before[0].timeout: 169h0m0s: 0 (the default) to 168h"}},
		{"too many retries", func(p *Plan) { p.Groups[1].Before[0].Retries = 11 },
			[]string{"groups[1].before[0].retries: 11: 0 to 10"}},
		{"negative retries", func(p *Plan) { p.Groups[1].Before[0].Retries = -1 },
			[]string{"groups[1].before[0].retries: -1: 0 to 10"}},
		{"unknown operation", func(p *Plan) { p.Groups[0].After[0].Operations[1] = "fail-over" },
			[]string{`groups[0].after[0].operations[1]: "fail-over": ` + allowedOps}},
		{"drill too often", func(p *Plan) { p.Drill.Every, p.Drill.Window = Duration(30*time.Second), 0 },
			[]string{"drill.every: 30s: at least 1m"}},
		{"drill without every", func(p *Plan) { p.Drill.Every, p.Drill.Window = 0, 0 },
			[]string{"drill.every: 0s: at least 1m"}},
		{"window below every", func(p *Plan) { p.Drill.Window = Duration(time.Hour) },
			[]string{"drill.window: 1h0m0s: at least drill.every (24h0m0s)"}},
		{"probe of another machine", func(p *Plan) { p.Drill.Probes["web99"] = Probe{TCP: "web99:80"} },
			[]string{`drill.probes[web99]: "web99" is not a machine of the plan`}},
		{"probe of nothing", func(p *Plan) { p.Drill.Probes["db01"] = Probe{} },
			[]string{"drill.probes[db01]: set exactly one of tcp, http, command"}},
		{"probe of two kinds", func(p *Plan) { p.Drill.Probes["db01"] = Probe{TCP: "db01:5432", HTTP: "http://db01/"} },
			[]string{"drill.probes[db01]: set exactly one of tcp, http, command"}},
		{"probe command relative", func(p *Plan) { p.Drill.Probes["web01"] = Probe{Command: []string{"curl"}} },
			[]string{`drill.probes[web01].command: "curl": the program must be an absolute path`}},
		{"probe timeout over an hour", func(p *Plan) { p.Drill.Probes["db01"] = Probe{TCP: "db01:5432", Timeout: Duration(2 * time.Hour)} },
			[]string{"drill.probes[db01].timeout: 2h0m0s: 0 (30s) to 1h"}},
		{"probe timeout negative", func(p *Plan) { p.Drill.Probes["db01"] = Probe{TCP: "db01:5432", Timeout: Duration(-time.Second)} },
			[]string{"drill.probes[db01].timeout: -1s: 0 (30s) to 1h"}},

		{"every problem at once", func(p *Plan) {
			p.Name = "Shop"
			p.Groups[2].Name = "db"
			p.Groups[1].Before[0].Retries = 11
			p.Drill.Every, p.Drill.Window = Duration(time.Second), 0
		}, []string{`name: "Shop"`, "groups[1].before[0].retries: 11", `groups[2].name: "db" is used`, "drill.every: 1s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := shopPlan()
			tc.change(&p)
			err := p.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPlan) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrInvalidPlan", err)
			}
			problems := PlanProblems(err)
			if len(problems) != len(tc.want) {
				t.Fatalf("%d problems, want %d:\n%s", len(problems), len(tc.want), strings.Join(problems, "\n"))
			}
			for i, w := range tc.want {
				if !strings.Contains(problems[i], w) {
					t.Errorf("problem %d: %q, want it to say %q", i, problems[i], w)
				}
			}
		})
	}
}

func TestPlanActionDefaults(t *testing.T) {
	script := PlanAction{Name: "s", Script: &ScriptAction{Command: []string{"/bin/true"}}}
	manual := PlanAction{Name: "m", Manual: &ManualAction{Instructions: "x"}}
	if got := script.ActionTimeout(); got != 10*time.Minute {
		t.Errorf("script timeout %s, want 10m", got)
	}
	if got := manual.ActionTimeout(); got != 24*time.Hour {
		t.Errorf("manual timeout %s, want 24h", got)
	}
	script.Timeout = Duration(time.Second)
	if got := script.ActionTimeout(); got != time.Second {
		t.Errorf("script timeout %s, want the 1s set", got)
	}
	if !manual.Applies(PlanTestFailover) {
		t.Error("an action without operations does not apply to test-failover")
	}
	manual.Operations = []PlanOperation{PlanFailover}
	if manual.Applies(PlanTestFailover) || !manual.Applies(PlanFailover) {
		t.Error("an action of failovers only: Applies is wrong")
	}
	if got := shopPlan().Machines(); strings.Join(got, " ") != "db01 db02 app01 web01 web02" {
		t.Errorf("Machines() = %v, want group by group", got)
	}
}

func TestPlanProblems(t *testing.T) {
	if got := PlanProblems(nil); got != nil {
		t.Errorf("PlanProblems(nil) = %v", got)
	}
	got := PlanProblems(errors.New("not a plan error"))
	if len(got) != 1 || got[0] != "not a plan error" {
		t.Errorf("PlanProblems of another error = %q", got)
	}
}
