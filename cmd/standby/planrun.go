package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
)

// Runs of recovery plans (docs/plans.md, "Runs"): plan run, runs, report,
// continue, abort, retry, skip.

func planRunCommands() []command {
	return []command{
		{name: "plan run", short: "run a recovery plan: an operation group by group, the machines of a group in parallel, with the groups' scripts and manual actions (a job; --wait follows it)",
			run: func(ctx context.Context, e *env, args []string) error {
				fs := newFlags(e, "plan run", "NAME OPERATION [--point SEL] [--target MT --process PS --force] [--dry-run] [--wait] [-o json]")
				af := addAPIFlags(fs)
				point := fs.String("point", "", "failover and test-failover: latest, latest-app, latest-consistent (the plan's newest multi-machine consistent point), a point id or an RFC 3339 time")
				target := fs.String("target", "", "reprotect: the master target at the primary site")
				process := fs.String("process", "", "reprotect: the process server (default: each machine's)")
				force := fs.Bool("force", false, "reprotect: discard writes of the old primaries that never reached the secondary")
				dry := fs.Bool("dry-run", false, "list the steps in order, with how long each took in earlier runs; do nothing")
				wait := fs.Bool("wait", false, "wait until the run ends, showing progress, then print its report")
				pos, err := parseInterspersed(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 2 {
					return usagef("usage: standby plan run NAME OPERATION (operations: %s)", strings.Join(planOps(), ", "))
				}
				cl, err := af.client()
				if err != nil {
					return err
				}
				var raw json.RawMessage
				body := map[string]any{"operation": pos[1], "point": *point, "target": *target, "process": *process, "force": *force, "dry_run": *dry}
				if err := cl.Do(ctx, "POST", "/v1/plans/"+esc(pos[0])+"/run", body, &raw); err != nil {
					return err
				}
				var r struct {
					Run control.PlanRun `json:"run"`
					Job control.Job     `json:"job"`
				}
				if err := json.Unmarshal(raw, &r); err != nil {
					return err
				}
				switch {
				case *dry && *af.output == "json":
					return printJSON(e.stdout, raw)
				case *dry:
					return printDryRun(e.stdout, r.Run)
				case *wait:
					return followRun(ctx, e, cl, pos[0], r.Job.ID, *af.output)
				case *af.output == "json":
					return printJSON(e.stdout, raw)
				}
				fmt.Fprintf(e.stdout, "plan %s: %s run %s started; follow it with `standby plan report %s %s` (or `standby jobs show %s --wait`)\n",
					pos[0], r.Run.Operation, r.Job.ID, pos[0], r.Job.ID, r.Job.ID)
				return nil
			}},
		{name: "plan points", short: "list a plan's multi-machine consistent points, newest first (what --point latest-consistent picks from)",
			run: func(ctx context.Context, e *env, args []string) error {
				return planGet(ctx, e, "plan points", "NAME [-o json]", args, 1, func(pos []string) string { return "/v1/plans/" + esc(pos[0]) + "/points" }, printConsistentPoints)
			}},
		{name: "plan runs", short: "list a plan's runs, newest first",
			run: func(ctx context.Context, e *env, args []string) error {
				return planGet(ctx, e, "plan runs", "NAME [-o json]", args, 1, func(pos []string) string { return "/v1/plans/" + esc(pos[0]) + "/runs" }, printRuns)
			}},
		{name: "plan report", short: "a run's report: steps with their times and results, machines with the point used and the data loss window, the achieved RTO",
			run: func(ctx context.Context, e *env, args []string) error {
				return planGet(ctx, e, "plan report", "NAME RUN [-o json]", args, 2, func(pos []string) string {
					return "/v1/plans/" + esc(pos[0]) + "/runs/" + esc(pos[1])
				}, printReport)
			}},
		planSignalCommand("continue", "continue a run waiting at a manual action"),
		planSignalCommand("abort", "abort a run waiting at a manual action (the run fails there)"),
		planRetryCommand("retry", "run a failed run again from its failed step (what succeeded is not done again)"),
		planRetryCommand("skip", "run a failed run again past its failed step"),
	}
}

func planOps() []string {
	var s []string
	for _, o := range control.PlanOperations {
		s = append(s, string(o))
	}
	return s
}

// planGet is the shape of the read-only plan commands.
func planGet(ctx context.Context, e *env, name, usage string, args []string, n int, path func([]string) string, print func(io.Writer, json.RawMessage) error) error {
	fs := newFlags(e, name, usage)
	af := addAPIFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != n {
		return usagef("usage: standby %s %s", name, usage)
	}
	cl, err := af.client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := cl.Do(ctx, "GET", path(pos), nil, &raw); err != nil {
		return err
	}
	if *af.output == "json" {
		return printJSON(e.stdout, raw)
	}
	return print(e.stdout, raw)
}

func planSignalCommand(signal, short string) command {
	name := "plan " + signal
	return command{name: name, short: short,
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME RUN [--step STEP] [-o json]")
			af := addAPIFlags(fs)
			step := fs.String("step", "", "the manual step (default: the one waiting)")
			pos, err := parseInterspersed(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 2 {
				return usagef("usage: standby %s NAME RUN", name)
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := cl.Do(ctx, "POST", "/v1/plans/"+esc(pos[0])+"/runs/"+esc(pos[1])+"/"+signal, map[string]string{"step": *step}, &raw); err != nil {
				return err
			}
			if *af.output == "json" {
				return printJSON(e.stdout, raw)
			}
			fmt.Fprintf(e.stdout, "run %s: %s sent\n", pos[1], signal)
			return nil
		}}
}

func planRetryCommand(how, short string) command {
	name := "plan " + how
	return command{name: name, short: short,
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME RUN [--wait] [-o json]")
			af := addAPIFlags(fs)
			wait := fs.Bool("wait", false, "wait until the new run ends, then print its report")
			pos, err := parseInterspersed(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 2 {
				return usagef("usage: standby %s NAME RUN", name)
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := cl.Do(ctx, "POST", "/v1/plans/"+esc(pos[0])+"/runs/"+esc(pos[1])+"/"+how, map[string]any{}, &raw); err != nil {
				return err
			}
			var r struct {
				Job control.Job `json:"job"`
			}
			json.Unmarshal(raw, &r)
			if *wait {
				return followRun(ctx, e, cl, pos[0], r.Job.ID, *af.output)
			}
			if *af.output == "json" {
				return printJSON(e.stdout, raw)
			}
			fmt.Fprintf(e.stdout, "plan %s: run %s continues run %s\n", pos[0], r.Job.ID, pos[1])
			return nil
		}}
}

// followRun follows the run's job, then prints its report; a failed run
// is an error.
func followRun(ctx context.Context, e *env, cl *client.Client, plan, id, output string) error {
	ferr := followJob(ctx, e, cl, id, "table")
	var raw json.RawMessage
	if err := cl.Do(ctx, "GET", "/v1/plans/"+esc(plan)+"/runs/"+esc(id), nil, &raw); err != nil {
		return err
	}
	if output == "json" {
		printJSON(e.stdout, raw)
	} else {
		printReport(e.stdout, raw)
	}
	return ferr
}

func printDryRun(w io.Writer, run control.PlanRun) error {
	fmt.Fprintf(w, "plan %s: %s, dry run — nothing is done\n", run.Plan, run.Operation)
	var rows [][]string
	var total float64
	for i, st := range run.Steps {
		est := "-"
		if st.EstimateSeconds > 0 {
			est = fmt.Sprintf("%.1fs", st.EstimateSeconds)
			total += st.EstimateSeconds
		}
		rows = append(rows, []string{fmt.Sprint(i + 1), st.Name, st.Kind, orDash(strings.Join(st.Machines, ",")), est})
	}
	if err := table(w, "# STEP KIND MACHINES ESTIMATE", rows); err != nil {
		return err
	}
	fmt.Fprintf(w, "estimated total %.1fs (from earlier runs; manual actions take what the operator takes)\n", total)
	return nil
}

func printConsistentPoints(w io.Writer, raw json.RawMessage) error {
	var cps []struct {
		Label  string            `json:"label"`
		Time   time.Time         `json:"time"`
		Points map[string]uint64 `json:"points"`
	}
	if err := json.Unmarshal(raw, &cps); err != nil {
		return err
	}
	var rows [][]string
	for _, cp := range cps {
		var ps []string
		for m, id := range cp.Points {
			ps = append(ps, fmt.Sprintf("%s:%d", m, id))
		}
		slices.Sort(ps)
		rows = append(rows, []string{cp.Label, cp.Time.UTC().Format(time.RFC3339), strings.Join(ps, " ")})
	}
	return table(w, "LABEL TIME POINTS", rows)
}

func printRuns(w io.Writer, raw json.RawMessage) error {
	var runs []control.PlanRun
	if err := json.Unmarshal(raw, &runs); err != nil {
		return err
	}
	var rows [][]string
	for _, r := range runs {
		took := "-"
		if !r.EndedAt.IsZero() {
			took = r.EndedAt.Sub(r.StartedAt).Round(time.Millisecond).String()
		}
		rows = append(rows, []string{r.ID, string(r.Operation), string(r.State), r.StartedAt.UTC().Format(time.RFC3339), took, orDash(r.RetryOf)})
	}
	return table(w, "RUN OPERATION STATE STARTED TOOK RETRY-OF", rows)
}

func printReport(w io.Writer, raw json.RawMessage) error {
	var r control.PlanRun
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	fmt.Fprintf(w, "plan %s, run %s: %s, %s", r.Plan, r.ID, r.Operation, r.State)
	if r.RetryOf != "" {
		fmt.Fprintf(w, " (retries run %s", r.RetryOf)
		if r.Skip != "" {
			fmt.Fprintf(w, ", skipping %s", r.Skip)
		}
		fmt.Fprint(w, ")")
	}
	if !r.EndedAt.IsZero() {
		fmt.Fprintf(w, " in %s; RTO %.1fs", r.EndedAt.Sub(r.StartedAt).Round(time.Millisecond), r.RTOSeconds)
	}
	fmt.Fprintln(w)
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	var rows [][]string
	for _, st := range r.Steps {
		start, took := "-", "-"
		if !st.StartedAt.IsZero() {
			start = st.StartedAt.UTC().Format("15:04:05.000")
			if !st.EndedAt.IsZero() {
				took = st.EndedAt.Sub(st.StartedAt).Round(time.Millisecond).String()
			}
		}
		res := st.Result
		if st.Error != "" {
			res = st.Error
		}
		if len(res) > 100 {
			res = res[:100] + "…"
		}
		rows = append(rows, []string{st.Name, st.Kind, string(st.State), start, took, orDash(strings.ReplaceAll(res, "\n", " "))})
	}
	if err := table(w, "STEP KIND STATE START TOOK RESULT", rows); err != nil {
		return err
	}
	rows = nil
	for _, m := range r.Machines {
		point, ready := "-", "-"
		if m.PointID > 0 {
			point = fmt.Sprintf("%d (%s)", m.PointID, m.PointTime.UTC().Format(time.RFC3339))
		}
		if !m.ReadyAt.IsZero() {
			ready = m.ReadyAt.UTC().Format("15:04:05.000")
		}
		rows = append(rows, []string{m.Machine, m.Group, point, fmt.Sprintf("%.1fs", m.DataLossSeconds), ready, orDash(m.Job)})
	}
	return table(w, "MACHINE GROUP POINT DATA-LOSS READY JOB", rows)
}
