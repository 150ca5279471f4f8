package main

import (
	"context"
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
			return runMachineJob(ctx, e, fs, args, name, "test-failover", func() any {
				return map[string]any{"point": *point, "machine": spec}
			}, testSummary)
		}}
}

func newTestCleanupCommand() command {
	const name = "machines test-cleanup"
	return command{name: name, short: "clean up a test failover: stop the replica machine, remove the export and its overlay (a job; --wait follows it)",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "NAME [--wait] [-o json]")
			return runMachineJob(ctx, e, fs, args, name, "test-cleanup", func() any { return map[string]any{} }, testSummary)
		}}
}

// testSummary is what a test job's call left the machine as.
func testSummary(m control.Machine) string { return fmt.Sprintf("test failover %s", m.TestFailover) }
