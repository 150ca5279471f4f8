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

// The planned-failover job with the agent and the master target simulated
// by joined components: the epoch stays while the agent drains (its
// desired state carries the drain and still the process server), the
// drain's report alone does not fence until the catalogue holds the final
// bookmark's point, then the epoch is raised and the target's desired
// state names that point; a drain the agent reports failed ends in
// failover-failed with the agent's words.
func TestPlannedFailoverJob(t *testing.T) {
	d := startServer(t)
	ctx := context.Background()
	target, process, agent := d.joinSites()
	report := func(state string, drain *control.DrainReport) {
		agent.must("POST", "/v1/agent/report", map[string]any{"id": "m-web01", "name": "web01",
			"disks": []map[string]any{{"name": "vda", "size": 1 << 30}}, "replication": map[string]any{"state": state}, "drain": drain}, 200)
	}
	report("connecting", nil)
	d.call(d.admin, "POST", "/v1/groups", map[string]any{"name": "web"}, nil)
	d.call(d.admin, "POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, nil)
	report("initial-replication", nil)
	d.refused(d.admin, "POST", "/v1/machines/web01/planned-failover", map[string]any{}, http.StatusConflict, `event "planned-failover" is not allowed in state initial-replication`)
	report("protected", nil)

	var fo testResp
	d.call(d.admin, "POST", "/v1/machines/web01/planned-failover", map[string]any{"network": map[string]string{"bridge": "br0"}}, &fo)
	m := fo.Machine
	if fo.Job.Kind != api.JobPlannedFailover || m.State != control.StateFailoverDraining || m.Epoch != 1 || m.Failover == nil || !m.Failover.Planned || m.Failover.Point != "" {
		t.Fatalf("planned failover answered %+v (failover %+v)", fo, m.Failover)
	}
	id := m.Failover.ID
	ag, mt, ps := agent.client(), target.client(), process.client()
	ad, err := ag.Desired(ctx, "", 0)
	if err != nil || len(ad.Machines) != 1 || ad.Machines[0].Drain == nil || ad.Machines[0].Drain.ID != id || ad.Machines[0].Process == nil || ad.Machines[0].Epoch != 1 {
		t.Fatalf("agent's desired state while draining: %+v, %v", ad, err)
	}
	if pd, err := ps.Desired(ctx, "", 0); err != nil || len(pd.Machines) != 1 {
		t.Fatalf("the process server must go on forwarding while draining: %+v, %v", pd, err)
	}
	if td, err := mt.Desired(ctx, "", 0); err != nil || len(td.Machines) != 1 || td.Machines[0].Failover != nil {
		t.Fatalf("the master target gets no failover while draining: %+v, %v", td, err)
	}
	// The drain is done, but the catalogue does not hold the point yet:
	// still draining, epoch 1.
	label := control.DrainLabel(id)
	report("protected", &control.DrainReport{ID: id, SourceStopped: true, SourceState: "stopped", WritesRefused: true, Done: true, BookmarkSeq: 77, Label: label})
	time.Sleep(300 * time.Millisecond)
	if m := d.machine("web01"); m.State != control.StateFailoverDraining || m.Epoch != 1 || m.Failover.Drain == nil || !m.Failover.Drain.Done {
		t.Fatalf("drained but no point yet: %s epoch %d drain %+v", m.State, m.Epoch, m.Failover.Drain)
	}
	// A drain report of another failover is not kept.
	report("protected", &control.DrainReport{ID: "other", Error: "nope"})
	if m := d.machine("web01"); m.Failover.Drain.Error != "" {
		t.Fatalf("another failover's drain report was kept: %+v", m.Failover.Drain)
	}
	target.must("POST", "/v1/target/points", map[string]any{"machine": "m-web01", "points": []map[string]any{
		{"id": 4, "seq": 70, "time": time.Now().Add(-time.Second)},
		{"id": 5, "seq": 77, "time": time.Now(), "label": label, "app_consistent": true},
	}}, 204)
	td, err := mt.Desired(ctx, "", 10*time.Second)
	for err == nil && (len(td.Machines) != 1 || td.Machines[0].Failover == nil) {
		td, err = mt.Desired(ctx, td.Version, 10*time.Second)
	}
	if err != nil || td.Machines[0].Failover.Point != "5" || td.Machines[0].Failover.Epoch != 2 || td.Machines[0].Epoch != 2 {
		t.Fatalf("target's desired state after the drain: %+v, %v", td, err)
	}
	m = d.machine("web01")
	if m.State != control.StateFailoverStarted || m.Epoch != 2 || m.Failover.Point != "5" {
		t.Fatalf("after the drain: %s epoch %d point %q", m.State, m.Epoch, m.Failover.Point)
	}
	// The agent keeps the drain (it goes on refusing writes) with the new
	// epoch and no process server.
	if ad, err := ag.Desired(ctx, "", 0); err != nil || ad.Machines[0].Drain == nil || ad.Machines[0].Process != nil || ad.Machines[0].Epoch != 2 {
		t.Fatalf("agent's desired state after the drain: %+v, %v", ad, err)
	}
	target.must("POST", "/v1/target/recovery", map[string]any{"machine": "m-web01", "failover_id": id, "failover": map[string]any{
		"phase": "running", "fenced": 2, "point_id": 5, "export": "failover-web01", "machine": "web01", "machine_state": "running"}}, 204)
	j := d.waitJob(fo.Job.ID)
	if j.State != control.JobSucceeded || !strings.Contains(j.Result, "no data lost") || !strings.Contains(j.Result, "recovery point 5") {
		t.Fatalf("planned failover job: %s %q %q", j.State, j.Result, j.Error)
	}

	// A drain that fails: failover-failed, with the agent's error.
	agent2 := d.join(control.RoleAgent, "host2", "")
	agent2.must("POST", "/v1/agent/report", map[string]any{"id": "m-db01", "name": "db01", "disks": []map[string]any{{"name": "vda", "size": 1 << 30}}, "replication": map[string]any{"state": "connecting"}}, 200)
	d.call(d.admin, "POST", "/v1/machines/db01/protect", map[string]string{"group": "web"}, nil)
	agent2.must("POST", "/v1/agent/report", map[string]any{"id": "m-db01", "name": "db01", "disks": []map[string]any{{"name": "vda", "size": 1 << 30}}, "replication": map[string]any{"state": "protected"}}, 200)
	var fo2 testResp
	d.call(d.admin, "POST", "/v1/machines/db01/planned-failover", map[string]any{}, &fo2)
	agent2.must("POST", "/v1/agent/report", map[string]any{"id": "m-db01", "name": "db01", "disks": []map[string]any{{"name": "vda", "size": 1 << 30}},
		"replication": map[string]any{"state": "protected"}, "drain": map[string]any{"id": fo2.Machine.Failover.ID, "source_state": "stop failed", "error": "stop the source machine db01: exit status 1"}}, 200)
	j = d.waitJob(fo2.Job.ID)
	if m := d.machine("db01"); j.State != control.JobFailed || !strings.Contains(j.Error, "exit status 1") || m.State != control.StateFailoverFailed || m.Epoch != 1 {
		t.Fatalf("failed drain: job %s %q; machine %s epoch %d", j.State, j.Error, m.State, m.Epoch)
	}
}
