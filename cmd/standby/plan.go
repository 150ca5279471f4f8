package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/standby-dr/standby/internal/control"
)

// The recovery plan commands (docs/plans.md): a plan is a YAML file,
// applied declaratively (plan apply -f FILE: created, updated or left
// alone, with what changed), read back (plan get -o yaml gives a file
// plan apply takes), listed and deleted.

func planCommands() []command {
	return []command{newPlanApplyCommand(), newPlanGetCommand()}
}

var planListCommand = apiCommand{name: "plan list", short: "list recovery plans: groups, machines, drill", usage: "[-o json]",
	method: "GET", path: fixed("/v1/plans"), text: printPlans}

var planDeleteCommand = apiCommand{name: "plan delete", short: "delete a recovery plan (refused while it runs; its runs are kept)", usage: "NAME [-o json]", nargs: 1,
	method: "DELETE", path: func(a []string) string { return "/v1/plans/" + esc(a[0]) },
	text: func(w io.Writer, raw json.RawMessage) error {
		var p control.Plan
		if err := json.Unmarshal(raw, &p); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "plan %s deleted\n", p.Name)
		return err
	}}

func newPlanApplyCommand() command {
	const name = "plan apply"
	return command{name: name, short: "create or update a recovery plan from a YAML file (idempotent; --dry-run says what would change)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "-f FILE [--dry-run] [-o json]")
			af := addAPIFlags(fs)
			file := fs.String("f", "", "the plan's YAML file; - reads standard input")
			fs.StringVar(file, "file", "", "the same as -f")
			dry := fs.Bool("dry-run", false, "only say what would change")
			pos, err := parseInterspersed(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 0 || *file == "" {
				return usagef("usage: standby %s -f FILE [--dry-run]", name)
			}
			p, err := loadPlan(e, *file)
			if err != nil {
				return err
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			path := "/v1/plans/" + esc(p.Name)
			if *dry {
				path += "?dry_run=true"
			}
			var raw json.RawMessage
			if err := cl.Do(ctx, "PUT", path, p, &raw); err != nil {
				return err
			}
			if *af.output == "json" {
				return printJSON(e.stdout, raw)
			}
			return printApplied(e.stdout, raw)
		}}
}

// loadPlan reads the plan of file ("-": standard input) and checks it as
// the server will. A file that is not a valid plan is a usage error
// (exit code 2) that lists every problem.
func loadPlan(e *env, file string) (control.Plan, error) {
	var r io.Reader = e.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return control.Plan{}, err
		}
		defer f.Close()
		r = f
	} else if r == nil {
		return control.Plan{}, usagef("-f -: no standard input")
	}
	p, err := decodePlan(r)
	if err != nil {
		return p, usagef("%s: %v", file, err)
	}
	if err := p.Validate(); err != nil {
		return p, usagef("%s: plan %s is invalid:\n  %s", file, p.Name, strings.Join(control.PlanProblems(err), "\n  "))
	}
	return p, nil
}

// decodePlan decodes the one YAML document of r into a plan; unknown
// fields are refused (a typo is never a silently missing setting).
func decodePlan(r io.Reader) (control.Plan, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var p control.Plan
	if err := dec.Decode(&p); err != nil {
		if errors.Is(err, io.EOF) {
			return p, errors.New("no plan in it: want a YAML document with name and groups")
		}
		return p, err
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return p, errors.New("more than one YAML document: one plan a file")
	}
	return p, nil
}

// printApplied prints the answer of PUT /v1/plans/{name}: what happened,
// then what changed, a line a change.
func printApplied(w io.Writer, raw json.RawMessage) error {
	var a struct {
		Plan    control.Plan `json:"plan"`
		Changed bool         `json:"changed"`
		Created bool         `json:"created"`
		DryRun  bool         `json:"dry_run"`
		Diff    []string     `json:"diff"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	switch {
	case !a.Changed:
		fmt.Fprintf(w, "plan %s unchanged\n", a.Plan.Name)
	case a.DryRun && a.Created:
		fmt.Fprintf(w, "plan %s would be created (dry run)\n", a.Plan.Name)
	case a.DryRun:
		fmt.Fprintf(w, "plan %s would change (dry run)\n", a.Plan.Name)
	case a.Created:
		fmt.Fprintf(w, "plan %s created\n", a.Plan.Name)
	default:
		fmt.Fprintf(w, "plan %s updated (version %d)\n", a.Plan.Name, a.Plan.Version)
	}
	for _, l := range a.Diff {
		fmt.Fprintf(w, "  %s\n", l)
	}
	return nil
}

func newPlanGetCommand() command {
	const name = "plan get"
	return command{name: name, short: "one recovery plan (-o yaml gives a file plan apply takes back)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [-o table|yaml|json]")
			af := addConnectionFlags(fs)
			output := fs.String("output", "table", "output format: table, yaml (a file for plan apply -f) or json")
			fs.StringVar(output, "o", "table", "shorthand for --output")
			pos, err := parseInterspersed(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 1 {
				return usagef("usage: standby %s NAME [-o table|yaml|json]", name)
			}
			switch *output {
			case "table", "text", "yaml", "json":
			default:
				return usagef("--output %q: use table, yaml or json", *output)
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := cl.Do(ctx, "GET", "/v1/plans/"+esc(pos[0]), nil, &raw); err != nil {
				return err
			}
			if *output == "json" {
				return printJSON(e.stdout, raw)
			}
			var p control.Plan
			if err := json.Unmarshal(raw, &p); err != nil {
				return err
			}
			if *output == "yaml" {
				return printPlanYAML(e.stdout, p)
			}
			return printPlan(e.stdout, p)
		}}
}

// printPlanYAML writes p as plan apply -f reads it: the declared fields,
// under a comment saying which version it is.
func printPlanYAML(w io.Writer, p control.Plan) error {
	fmt.Fprintf(w, "# recovery plan %s, version %d, updated %s\n", p.Name, p.Version, p.UpdatedAt.Format(time.RFC3339))
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return err
	}
	return enc.Close()
}

func printPlan(w io.Writer, p control.Plan) error {
	fmt.Fprintf(w, "plan      %s (version %d, updated %s)\n", p.Name, p.Version, ago(p.UpdatedAt))
	if p.Description != "" {
		fmt.Fprintf(w, "          %s\n", strings.ReplaceAll(p.Description, "\n", "\n          "))
	}
	rows := make([][]string, 0, len(p.Groups))
	for i, g := range p.Groups {
		rows = append(rows, []string{strconv.Itoa(i + 1), g.Name, strings.Join(g.Machines, " "), actionList(g.Before), actionList(g.After)})
	}
	if err := table(w, "# GROUP MACHINES BEFORE AFTER", rows); err != nil {
		return err
	}
	if d := p.Drill; d != nil {
		window := "2 × every"
		if d.Window != 0 {
			window = d.Window.String()
		}
		fmt.Fprintf(w, "drill     every %s, alert after %s without a good one\n", d.Every, window)
		for _, m := range p.Machines() {
			if pr, ok := d.Probes[m]; ok {
				fmt.Fprintf(w, "probe     %s: %s\n", m, pr)
			}
		}
	}
	return nil
}

// actionList names a stage's actions and their kinds.
func actionList(as []control.PlanAction) string {
	if len(as) == 0 {
		return "-"
	}
	out := make([]string, len(as))
	for i, a := range as {
		kind := "script"
		if a.Manual != nil {
			kind = "manual"
		}
		out[i] = a.Name + " (" + kind + ")"
	}
	return strings.Join(out, ", ")
}

func printPlans(w io.Writer, raw json.RawMessage) error {
	var ps []control.Plan
	if err := json.Unmarshal(raw, &ps); err != nil {
		return err
	}
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		drill := "-"
		if p.Drill != nil {
			drill = "every " + p.Drill.Every.String()
		}
		rows = append(rows, []string{p.Name, strconv.Itoa(len(p.Groups)), strconv.Itoa(len(p.Machines())), drill, strconv.FormatInt(p.Version, 10), ago(p.UpdatedAt)})
	}
	return table(w, "NAME GROUPS MACHINES DRILL VERSION UPDATED", rows)
}
