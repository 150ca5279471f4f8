package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
)

// The commands that start or follow a job: machines protect and
// unprotect, jobs show (--wait follows a job to its end with a progress
// bar), jobs cancel.

func jobCommands() []command {
	return []command{newProtectCommand(), newJobsShowCommand(), newTestFailoverCommand(), newTestCleanupCommand(), newFailoverCommand(), newPlannedFailoverCommand(), newCommitCommand(), newReprotectCommand(), newFailbackCommand()}
}

func newProtectCommand() command {
	const name = "machines protect"
	return command{name: name, short: "enable protection of a machine in a protection group (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME --group GROUP [--process PS] [--target MT] [--wait] [-o json]")
			af := addAPIFlags(fs)
			group := fs.String("group", "", "the protection group whose policy applies")
			process := fs.String("process", "", "the process server (name or id; default: the one with the most room)")
			target := fs.String("target", "", "the master target (name or id; default: the one with the most room)")
			wait := fs.Bool("wait", false, "wait until the machine is protected, showing progress")
			pos, err := parseInterspersed(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 1 || *group == "" {
				return usagef("usage: standby %s NAME --group GROUP", name)
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			var r struct {
				Machine control.Machine `json:"machine"`
				Job     control.Job     `json:"job"`
			}
			var raw json.RawMessage
			if err := cl.Do(ctx, "POST", "/v1/machines/"+esc(pos[0])+"/protect", map[string]string{"group": *group, "process": *process, "target": *target}, &raw); err != nil {
				return err
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			if !*wait {
				if *af.output == "json" {
					return printJSON(e.stdout, raw)
				}
				fmt.Fprintf(e.stdout, "machine %s: %s; job %s follows it (standby jobs show %s --wait)\n", r.Machine.Name, r.Machine.State, r.Job.ID, r.Job.ID)
				return nil
			}
			return followJob(ctx, e, cl, r.Job.ID, *af.output)
		}}
}

var unprotectCommand = apiCommand{name: "machines unprotect", short: "disable protection of a machine (the replica is kept unless --delete-replica)", usage: "NAME [--delete-replica] [-o json]", nargs: 1,
	flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
		del := fs.Bool("delete-replica", false, "also delete the replica and its recovery points at the master target")
		return func(args []string) (url.Values, any, error) { return nil, map[string]bool{"delete_replica": *del}, nil }
	},
	method: "POST", path: func(a []string) string { return "/v1/machines/" + esc(a[0]) + "/unprotect" }, text: printMachine}

func newJobsShowCommand() command {
	const name = "jobs show"
	return command{name: name, short: "one job: steps, progress, log and result (--wait follows it to its end)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "ID [--wait] [-o json]")
			af := addAPIFlags(fs)
			wait := fs.Bool("wait", false, "wait until the job ends, showing progress")
			pos, err := parseInterspersed(fs, args)
			if err != nil {
				return err
			}
			if len(pos) != 1 {
				return usagef("usage: standby %s ID [--wait]", name)
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			if *wait {
				return followJob(ctx, e, cl, pos[0], *af.output)
			}
			var raw json.RawMessage
			if err := cl.Do(ctx, "GET", "/v1/jobs/"+esc(pos[0]), nil, &raw); err != nil {
				return err
			}
			if *af.output == "json" {
				return printJSON(e.stdout, raw)
			}
			var j control.Job
			if err := json.Unmarshal(raw, &j); err != nil {
				return err
			}
			printJob(e.stdout, j)
			return nil
		}}
}

var jobsCancelCommand = apiCommand{name: "jobs cancel", short: "cancel a queued or running job", usage: "ID [-o json]", nargs: 1,
	method: "POST", path: func(a []string) string { return "/v1/jobs/" + esc(a[0]) + "/cancel" },
	text: func(w io.Writer, raw json.RawMessage) error {
		var j control.Job
		if err := json.Unmarshal(raw, &j); err != nil {
			return err
		}
		printJob(w, j)
		return nil
	}}

// followJob polls a job until it ends, drawing a progress bar on a
// terminal-like output (text) or printing the final job (json). A job
// that did not succeed is an error (exit code 1).
func followJob(ctx context.Context, e *env, cl *client.Client, id, output string) error {
	var j control.Job
	var raw json.RawMessage
	last := ""
	start := time.Now()
	for {
		if err := cl.Do(ctx, "GET", "/v1/jobs/"+esc(id), nil, &raw); err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &j); err != nil {
			return err
		}
		if output == "text" {
			line := progressLine(j)
			if line != last {
				fmt.Fprintf(e.stderr, "\r%-100s", line)
				last = line
			}
		}
		if j.State.Done() {
			break
		}
		// Often at first (most jobs that end quickly end within seconds),
		// then every half second.
		every := 500 * time.Millisecond
		if time.Since(start) < 5*time.Second {
			every = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	if output == "json" {
		printJSON(e.stdout, raw)
	} else {
		fmt.Fprintln(e.stderr)
		printJob(e.stdout, j)
	}
	if j.State != control.JobSucceeded {
		return fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
	}
	return nil
}

func progressLine(j control.Job) string {
	const width = 30
	n := int(j.Progress * width)
	n = min(max(n, 0), width)
	step := ""
	if j.Current < len(j.Steps) {
		s := j.Steps[j.Current]
		step = s.Name
		if s.Message != "" {
			step += ": " + s.Message
		}
	}
	return fmt.Sprintf("[%s%s] %3.0f%% %s %s", strings.Repeat("#", n), strings.Repeat(".", width-n), 100*j.Progress, j.State, step)
}

func printJob(w io.Writer, j control.Job) {
	fmt.Fprintf(w, "job       %s (%s %s)\nstate     %s, %.0f%%\n", j.ID, j.Kind, j.Object, j.State, 100*j.Progress)
	for i, s := range j.Steps {
		fmt.Fprintf(w, "step %d    %-10s %s", i+1, s.State, s.Name)
		if s.Message != "" {
			fmt.Fprintf(w, " — %s", s.Message)
		}
		fmt.Fprintln(w)
	}
	if j.Result != "" {
		fmt.Fprintf(w, "result    %s\n", j.Result)
	}
	if j.Error != "" {
		fmt.Fprintf(w, "error     %s\n", j.Error)
	}
	for _, l := range j.Log[max(0, len(j.Log)-10):] {
		fmt.Fprintf(w, "log       %s %s %s\n", l.At.Local().Format(time.TimeOnly), l.Level, l.Message)
	}
}
