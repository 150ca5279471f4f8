package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/standby-dr/standby/internal/control"
)

// machines failover and commit: each submits a job (the API moves the
// machine's protection state first, refusing with the events allowed);
// --wait follows the job as `machines protect --wait` does.

func newFailoverCommand() command {
	const name = "machines failover"
	return command{name: name, short: "fail a machine over to the master target: fence the old primary, export the point, start the replica machine, hydrate (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [--point latest|latest-app|ID|TIME] [--replica NAME] [--cpus N] [--memory MIB] [--net KEY=VALUE]... [--wait] [-o json]")
			point := fs.String("point", "latest", "the recovery point: latest, latest-app, a point id or an RFC 3339 time")
			spec, network := replicaFlags(fs)
			return runFailoverJob(ctx, e, fs, args, name, "failover", func() any {
				return map[string]any{"point": *point, "machine": spec, "network": network}
			})
		}}
}

func newPlannedFailoverCommand() command {
	const name = "machines planned-failover"
	return command{name: name, short: "fail a machine over with no data loss: the agent stops the source machine and drains its journal to a final bookmark, then the failover runs to that point (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [--replica NAME] [--cpus N] [--memory MIB] [--net KEY=VALUE]... [--wait] [-o json]")
			spec, network := replicaFlags(fs)
			return runFailoverJob(ctx, e, fs, args, name, "planned-failover", func() any {
				return map[string]any{"machine": spec, "network": network}
			})
		}}
}

func newReprotectCommand() command {
	const name = "machines reprotect"
	return command{name: name, short: "protect a failed-over machine back to the primary site: the old primary's disks are the seed, only what differs is sent (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME --target MASTER-TARGET [--process PROCESS-SERVER] [--force] [--wait] [-o json]")
			target := fs.String("target", "", "the master target at the primary site that receives (name or id; standby servers list)")
			process := fs.String("process", "", "the process server the reverse direction goes through (default: the machine's)")
			force := fs.Bool("force", false, "discard writes of the old primary that never reached the secondary")
			return runFailoverJob(ctx, e, fs, args, name, "reprotect", func() any {
				return map[string]any{"target": *target, "process": *process, "force": *force}
			})
		}}
}

func newFailbackCommand() command {
	const name = "machines failback"
	return command{name: name, short: "fail a machine protected in reverse back to the primary site with no data loss, then protect it in the original direction (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [--wait] [-o json]")
			return runFailoverJob(ctx, e, fs, args, name, "failback", func() any { return map[string]any{} })
		}}
}

// replicaFlags are the replica machine's flags of the failover commands.
func replicaFlags(fs *flag.FlagSet) (*control.ReplicaSpec, map[string]string) {
	var spec control.ReplicaSpec
	fs.StringVar(&spec.Name, "replica", "", "the replica machine's name (default NAME)")
	fs.IntVar(&spec.CPUs, "cpus", 0, "the replica machine's CPUs (default: the driver's)")
	fs.IntVar(&spec.MemoryMiB, "memory", 0, "the replica machine's memory in MiB (default: the driver's)")
	network := map[string]string{}
	fs.Func("net", "a network setting of the driver, KEY=VALUE (qemu: mode, bridge, ...; exec: STANDBY_NET_KEY); repeatable", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want KEY=VALUE, got %q", s)
		}
		network[k] = v
		return nil
	})
	return &spec, network
}

func newCommitCommand() command {
	const name = "machines commit"
	return command{name: name, short: "commit a failover: the failed-over point becomes final, every other point is released (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [--wait] [-o json]")
			return runFailoverJob(ctx, e, fs, args, name, "commit", func() any { return map[string]any{} })
		}}
}

// runFailoverJob is runMachineJob, printing the machine's state and epoch.
func runFailoverJob(ctx context.Context, e *env, fs *flag.FlagSet, args []string, name, call string, body func() any) error {
	return runMachineJob(ctx, e, fs, args, name, call, body, func(m control.Machine) string {
		return fmt.Sprintf("%s, epoch %d", m.State, m.Epoch)
	})
}

// runMachineJob parses the common flags of a machine operation, makes the
// call and prints (summary says what the call left the machine as) or
// follows the job.
func runMachineJob(ctx context.Context, e *env, fs *flag.FlagSet, args []string, name, call string, body func() any, summary func(control.Machine) string) error {
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
	fmt.Fprintf(e.stdout, "machine %s: %s; job %s follows it (standby jobs show %s --wait)\n", r.Machine.Name, summary(r.Machine), r.Job.ID, r.Job.ID)
	return nil
}
