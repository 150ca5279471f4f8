package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
)

// The failover and commit jobs with the master target simulated by a
// joined component that reads its desired state and reports over gRPC:
// refusals, the epoch raised, the desired states (target: the failover;
// agent: the new epoch and no process server; process server: nothing),
// the target's reports moving the state, failing over again to another
// point, commit and its refusal while a test failover exists.
func TestFailoverJobs(t *testing.T) {
	d := startServer(t)
	ctx := context.Background()
	target, process, agent := d.joinSites()
	report := func(state string) {
		agent.must("POST", "/v1/agent/report", map[string]any{"id": "m-web01", "name": "web01",
			"disks": []map[string]any{{"name": "vda", "size": 1 << 30}}, "replication": map[string]any{"state": state}}, 200)
	}
	report("connecting")

	// Unprotected: failover and commit refused, with what is allowed.
	d.refused(d.admin, "POST", "/v1/machines/web01/failover", map[string]any{}, http.StatusConflict, `event "failover" is not allowed in state unprotected`)
	d.refused(d.admin, "POST", "/v1/machines/web01/commit", map[string]any{}, http.StatusConflict, `event "commit" is not allowed in state unprotected`)
	d.refused(d.admin, "POST", "/v1/machines/web01/failover", map[string]any{"point": "yesterday"}, http.StatusBadRequest, "want latest, latest-app")
	d.refused(d.admin, "POST", "/v1/machines/web01/failover", map[string]any{"network": map[string]string{"bad key": "x"}}, http.StatusBadRequest, "network setting")
	d.refused(d.admin, "POST", "/v1/machines/nope/failover", map[string]any{}, http.StatusNotFound, "nope")

	d.call(d.admin, "POST", "/v1/groups", map[string]any{"name": "web"}, nil)
	d.call(d.admin, "POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, nil)
	report("protected")
	// Commit before a failover: refused.
	d.refused(d.admin, "POST", "/v1/machines/web01/commit", map[string]any{}, http.StatusConflict, `event "commit" is not allowed in state protected`)

	// A test failover exists: the failover goes ahead (a disaster does
	// not wait for a forgotten test), the commit waits for its cleanup.
	var tf testResp
	d.call(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{}, &tf)

	mt, ag, ps := target.client(), agent.client(), process.client()
	des, err := mt.Desired(ctx, "", 0)
	if err != nil || len(des.Machines) != 1 || des.Machines[0].Failover != nil || des.Machines[0].Epoch != 1 {
		t.Fatalf("target's desired state before the failover: %+v, %v", des, err)
	}
	var fo testResp
	d.call(d.admin, "POST", "/v1/machines/web01/failover", map[string]any{"point": "latest", "network": map[string]string{"bridge": "br0"}}, &fo)
	m := fo.Machine
	if fo.Job.Kind != api.JobFailover || fo.Job.Object != "machine/web01/failover" || m.State != control.StateFailoverStarted || m.Epoch != 2 || m.Failover == nil ||
		m.Failover.Epoch != 2 || m.Failover.Replica.Name != "web01" || m.Failover.Point != "latest" {
		t.Fatalf("failover answered %+v (failover %+v)", fo, m.Failover)
	}
	first := m.Failover.ID
	d.refused(d.admin, "POST", "/v1/machines/web01/commit", map[string]any{}, http.StatusConflict, "not allowed in state failover-started")

	des2, err := mt.Desired(ctx, des.Version, 10*time.Second)
	if err != nil || des2.Machines[0].Failover == nil || des2.Machines[0].Test == nil {
		t.Fatalf("target's desired state: %+v, %v", des2, err)
	}
	if f := des2.Machines[0].Failover; f.ID != first || f.Epoch != 2 || f.Point != "latest" || f.Network["bridge"] != "br0" || f.Commit {
		t.Fatalf("desired failover %+v", f)
	}
	// The agent gets the new epoch and no process server; the process
	// server no longer forwards the machine.
	if ad, err := ag.Desired(ctx, "", 0); err != nil || len(ad.Machines) != 1 || ad.Machines[0].Epoch != 2 || ad.Machines[0].Process != nil {
		t.Fatalf("agent's desired state after the failover: %+v, %v", ad, err)
	}
	if pd, err := ps.Desired(ctx, "", 0); err != nil || len(pd.Machines) != 0 {
		t.Fatalf("process server's desired state after the failover: %+v, %v", pd, err)
	}

	// Reports: a stale id and a bad phase are refused; running without
	// the fence done does not end the failover; fenced + exported +
	// running does.
	err = mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: "old", Failover: &control.FailoverReport{Phase: control.FailoverPhaseRunning}})
	wantStatus(t, "stale report", err, http.StatusConflict, "not its current one")
	err = mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: first, Failover: &control.FailoverReport{Phase: "bogus"}})
	wantStatus(t, "bad phase", err, http.StatusBadRequest, "allowed: starting")
	running := control.FailoverReport{Phase: control.FailoverPhaseRunning, Fenced: 1, PointID: 7, PointTime: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Export: "failover-web01", Machine: "web01", MachineState: "running", Hydration: control.Hydration{Done: 1 << 20, Total: 1 << 30}}
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: first, Failover: &running}); err != nil {
		t.Fatal(err)
	}
	if m := d.machine("web01"); m.State != control.StateFailoverStarted {
		t.Fatalf("a report with the replica not fenced moved the state to %s", m.State)
	}
	running.Fenced = 2
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: first, Failover: &running}); err != nil {
		t.Fatal(err)
	}
	j := d.waitJob(fo.Job.ID)
	if j.State != control.JobSucceeded || !strings.Contains(j.Result, "recovery point 7 (2026-11-27T10:00:00Z), export failover-web01") ||
		!strings.Contains(j.Result, "hydration 0% (1048576 of 1073741824 bytes)") {
		t.Fatalf("failover job: %s %q %q", j.State, j.Result, j.Error)
	}
	if m := d.machine("web01"); m.State != control.StateFailedOver || m.Failover.Report.Hydration.Done != 1<<20 {
		t.Fatalf("after the target's report: %s %+v", m.State, m.Failover)
	}
	// Hydration progress keeps arriving after the job.
	running.Hydration = control.Hydration{Done: 1 << 30, Total: 1 << 30, Complete: true, Images: []string{"/d/hydrated/m-web01/vda.img"}}
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: first, Failover: &running}); err != nil {
		t.Fatal(err)
	}
	if m := d.machine("web01"); !m.Failover.Report.Hydration.Complete {
		t.Fatalf("hydration report not recorded: %+v", m.Failover.Report)
	}

	// Failing over again to another point before commit: a new failover,
	// a new epoch; a failed start fails the job with the target's words.
	var fo2 testResp
	d.call(d.admin, "POST", "/v1/machines/web01/failover", map[string]any{"point": "5"}, &fo2)
	if fo2.Machine.State != control.StateFailoverStarted || fo2.Machine.Epoch != 3 || fo2.Machine.Failover.ID == first {
		t.Fatalf("failover again answered %+v", fo2.Machine)
	}
	second := fo2.Machine.Failover.ID
	err = mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: first, Failover: &running})
	wantStatus(t, "the first failover's late report", err, http.StatusConflict, "not its current one")
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: second, Failover: &control.FailoverReport{Phase: control.FailoverPhaseFailed, Fenced: 3, Error: "point 5 is not retained"}}); err != nil {
		t.Fatal(err)
	}
	j = d.waitJob(fo2.Job.ID)
	if j.State != control.JobFailed || !strings.Contains(j.Error, "point 5 is not retained") || !strings.Contains(j.Error, "standby machines failover web01") {
		t.Fatalf("failed failover job: %s %q", j.State, j.Error)
	}
	if m := d.machine("web01"); m.State != control.StateFailoverFailed {
		t.Fatalf("after a failed failover: %s", m.State)
	}
	// Retry: failover-failed --failover--> failover-started.
	var fo3 testResp
	d.call(d.admin, "POST", "/v1/machines/web01/failover", map[string]any{"point": "latest"}, &fo3)
	third := fo3.Machine.Failover.ID
	running.Fenced = 4
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: third, Failover: &running}); err != nil {
		t.Fatal(err)
	}
	if j := d.waitJob(fo3.Job.ID); j.State != control.JobSucceeded {
		t.Fatalf("retried failover job: %s %q", j.State, j.Error)
	}

	// Commit: refused while the test failover exists; then published to
	// the target, and its "committed" report ends it.
	d.refused(d.admin, "POST", "/v1/machines/web01/commit", map[string]any{}, http.StatusConflict, "standby machines test-cleanup web01")
	d.call(d.admin, "POST", "/v1/machines/web01/test-cleanup", map[string]any{}, nil)
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", TestID: tf.Machine.Test.ID, Test: control.TestReport{Phase: control.TestPhaseRemoved}}); err != nil {
		t.Fatal(err)
	}
	var co testResp
	d.call(d.admin, "POST", "/v1/machines/web01/commit", map[string]any{}, &co)
	if co.Job.Kind != api.JobCommit || co.Machine.State != control.StateFailedOver || !co.Machine.Failover.Commit {
		t.Fatalf("commit answered %+v", co.Machine)
	}
	d.refused(d.admin, "POST", "/v1/machines/web01/failover", map[string]any{}, http.StatusConflict, "being committed")
	if des, err := mt.Desired(ctx, "", 0); err != nil || des.Machines[0].Failover == nil || !des.Machines[0].Failover.Commit {
		t.Fatalf("target's desired state after commit: %+v, %v", des, err)
	}
	committed := running
	committed.Phase, committed.Released = control.FailoverPhaseCommitted, 12
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", FailoverID: third, Failover: &committed}); err != nil {
		t.Fatal(err)
	}
	j = d.waitJob(co.Job.ID)
	if j.State != control.JobSucceeded || !strings.Contains(j.Result, "recovery point 7 is final, 12 other points released") {
		t.Fatalf("commit job: %s %q %q", j.State, j.Result, j.Error)
	}
	if m := d.machine("web01"); m.State != control.StateFailoverCommitted {
		t.Fatalf("after commit: %s", m.State)
	}
	d.refused(d.admin, "POST", "/v1/machines/web01/commit", map[string]any{}, http.StatusConflict, "not allowed in state failover-committed")

	var audit []control.AuditEntry
	d.call(d.admin, "GET", "/v1/audit?limit=200", nil, &audit)
	seen := map[string]bool{}
	for _, e := range audit {
		seen[e.Action] = true
	}
	for _, a := range []string{"machine.failover", "machine.failover-done", "machine.failover-failed", "machine.commit"} {
		if !seen[a] {
			t.Errorf("audit log has no %s", a)
		}
	}
}
