package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/driver"
)

// demoPlan adds a second machine, db01, and runs a two-group recovery
// plan through the server: database first, then the app (web01), a
// script before the app group and a manual check after the database
// group, which the demo continues as an operator would. The plan's test
// failover uses its newest multi-machine consistent point; then the
// cleanup. db01 stays protected (its agent stops at the end of the demo).
func demoPlan(ctx context.Context, w io.Writer, admin *client.Client, dir string, src driver.Driver,
	startAgent func(machine, host, disk string) (*agent.Agent, string, func() error, error)) (stop func() error, err error) {
	step := func(format string, a ...any) { fmt.Fprintf(w, "==> "+format+"\n", a...) }
	step("A second machine, db01 (the shop's database): its own agent, protected in group \"demo\" to master target mt1")
	disk := filepath.Join(dir, "db01-root.img")
	if err := makeDemoDisk(disk, 64<<20); err != nil {
		return nil, err
	}
	if _, err := src.Start(ctx, driver.Machine{Name: "db01-src", Disks: []driver.Disk{{Name: "root", Path: disk}}}); err != nil {
		return nil, fmt.Errorf("start the source machine db01: %w", err)
	}
	_, _, stop, err = startAgent("db01", "host2", disk)
	if err != nil {
		return nil, err
	}
	if err := waitDemo(ctx, time.Minute, func() bool { return admin.Do(ctx, "GET", "/v1/machines/db01", nil, nil) == nil }); err != nil {
		return stop, fmt.Errorf("the agent did not report db01: %w", err)
	}
	var pr struct {
		Job controlJob `json:"job"`
	}
	if err := admin.Do(ctx, "POST", "/v1/machines/db01/protect", map[string]string{"group": "demo", "target": "mt1"}, &pr); err != nil {
		return stop, err
	}
	if err := demoWaitJob(ctx, admin, pr.Job.ID); err != nil {
		return stop, fmt.Errorf("protect db01: %w", err)
	}

	step("Recovery plan \"shop\": group db [db01], then group app [web01]; a script before app, a manual check after db")
	plan := control.Plan{Name: "shop", Description: "the demo's two tiers", Groups: []control.PlanGroup{
		{Name: "db", Machines: []string{"db01"}, After: []control.PlanAction{{Name: "check-db",
			Manual: &control.ManualAction{Instructions: "check that the database accepts connections"}}}},
		{Name: "app", Machines: []string{"web01"}, Before: []control.PlanAction{{Name: "repoint",
			Script: &control.ScriptAction{Command: []string{"/bin/sh", "-c", "echo repointing the app at the database: $STANDBY_OPERATION of $STANDBY_MACHINES at the $STANDBY_SITE site"}}}}},
	}}
	var applied struct {
		Diff []string `json:"diff"`
	}
	if err := admin.Do(ctx, "PUT", "/v1/plans/shop", plan, &applied); err != nil {
		return stop, err
	}
	for _, l := range applied.Diff {
		fmt.Fprintf(w, "    %s\n", l)
	}
	var cps []struct {
		Label string `json:"label"`
	}
	if err := waitDemo(ctx, time.Minute, func() bool {
		return admin.Do(ctx, "GET", "/v1/plans/shop/points", nil, &cps) == nil && len(cps) > 0
	}); err != nil {
		return stop, fmt.Errorf("no multi-machine consistent point: %w", err)
	}
	fmt.Fprintf(w, "    the agents of db01 and web01 bookmark together every 2s: newest consistent point %s\n", cps[0].Label)

	for _, op := range []struct{ op, point string }{{"test-failover", "latest-consistent"}, {"test-cleanup", ""}} {
		step("Plan shop: %s, group by group", op.op)
		var rr struct {
			Job controlJob `json:"job"`
		}
		if err := admin.Do(ctx, "POST", "/v1/plans/shop/run", map[string]any{"operation": op.op, "point": op.point}, &rr); err != nil {
			return stop, err
		}
		var raw json.RawMessage
		var run control.PlanRun
		continued := false
		if err := waitDemo(ctx, 5*time.Minute, func() bool {
			if admin.Do(ctx, "GET", "/v1/plans/shop/runs/"+rr.Job.ID, nil, &raw) != nil || json.Unmarshal(raw, &run) != nil {
				return false
			}
			for _, st := range run.Steps {
				if st.Kind == "manual" && st.State == control.JobRunning && !continued {
					fmt.Fprintf(w, "    the plan waits at %s; the demo continues it, as an operator would (standby plan continue shop %s)\n", st.Name, run.ID)
					continued = admin.Do(ctx, "POST", "/v1/plans/shop/runs/"+run.ID+"/continue", map[string]any{}, nil) == nil
				}
			}
			return run.State.Done()
		}); err != nil {
			return stop, fmt.Errorf("plan run %s: %w", op.op, err)
		}
		printReport(newIndent(w), raw)
		if run.State != control.JobSucceeded {
			return stop, fmt.Errorf("plan run %s %s: %s", op.op, run.State, run.Error)
		}
	}
	return stop, nil
}

// demoWaitJob waits for a job to succeed.
func demoWaitJob(ctx context.Context, admin *client.Client, id string) error {
	var j controlJob
	if err := waitDemo(ctx, 5*time.Minute, func() bool {
		return admin.Do(ctx, "GET", "/v1/jobs/"+id, nil, &j) == nil && j.State.Done()
	}); err != nil {
		return err
	}
	if j.State != control.JobSucceeded {
		return fmt.Errorf("job %s %s: %s", j.ID, j.State, j.Error)
	}
	return nil
}
