package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/standby-dr/standby/internal/control"
)

// machines test-failover and test-cleanup: each submits a job (the API
// moves the machine's test-failover flag first, refusing with the events
// allowed); --wait follows the job as `machines protect --wait` does.

func newTestFailoverCommand() command {
	const name = "machines test-failover"
	return command{name: name, short: "start an isolated replica machine from a recovery point at the master target (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [--point latest|latest-app|ID|TIME] [--replica NAME] [--cpus N] [--memory MIB] [--wait] [-o json]")
			point := fs.String("point", "latest", "the recovery point: latest, latest-app, a point id or an RFC 3339 time")
			var spec control.ReplicaSpec
			fs.StringVar(&spec.Name, "replica", "", "the replica machine's name (default NAME-test)")
			fs.IntVar(&spec.CPUs, "cpus", 0, "the replica machine's CPUs (default: the driver's)")
			fs.IntVar(&spec.MemoryMiB, "memory", 0, "the replica machine's memory in MiB (default: the driver's)")
			return runTestJob(ctx, e, fs, args, name, "test-failover", func() any {
				return map[string]any{"point": *point, "machine": spec}
			})
		}}
}

func newTestCleanupCommand() command {
	const name = "machines test-cleanup"
	return command{name: name, short: "clean up a test failover: stop the replica machine, remove the export and its overlay (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [--wait] [-o json]")
			return runTestJob(ctx, e, fs, args, name, "test-cleanup", func() any { return map[string]any{} })
		}}
}

// runTestJob parses the common flags, makes the call and prints or
// follows the job.
func runTestJob(ctx context.Context, e *env, fs *flag.FlagSet, args []string, name, call string, body func() any) error {
	af := addAPIFlags(fs)
	wait := fs.Bool("wait", false, "wait until the job ends, showing progress")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: standby %s NAME", name)
	}
	cl, err := af.client()
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := cl.Do(ctx, "POST", "/v1/machines/"+esc(pos[0])+"/"+call, body(), &raw); err != nil {
		return err
	}
	var r struct {
		Machine control.Machine `json:"machine"`
		Job     control.Job     `json:"job"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return err
	}
	if *wait {
		return followJob(ctx, e, cl, r.Job.ID, *af.output)
	}
	if *af.output == "json" {
		return printJSON(e.stdout, raw)
	}
	fmt.Fprintf(e.stdout, "machine %s: test failover %s; job %s follows it (standby jobs show %s --wait)\n", r.Machine.Name, r.Machine.TestFailover, r.Job.ID, r.Job.ID)
	return nil
}
