package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
)

// testResp is the answer of test-failover and test-cleanup.
type testResp struct {
	Machine control.Machine `json:"machine"`
	Job     control.Job     `json:"job"`
}

// refused fails unless the user call is refused with status and text.
func (d *deployment) refused(c *client.Client, method, path string, body any, status int, text string) {
	d.t.Helper()
	err := c.Do(context.Background(), method, path, body, nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != status || !strings.Contains(ce.Message, text) {
		d.t.Fatalf("%s %s: %v; want %d saying %q", method, path, err, status, text)
	}
}

// waitJob waits for a job to end and returns it.
func (d *deployment) waitJob(id string) control.Job {
	d.t.Helper()
	var j control.Job
	waitFor(d.t, "job "+id+" to end", func() bool {
		d.call(d.admin, "GET", "/v1/jobs/"+id, nil, &j)
		return j.State.Done()
	})
	return j
}

// joinSites joins a master target, a process server and an agent (host1)
// that have heartbeated with their addresses.
func (d *deployment) joinSites() (target, process, agent *component) {
	target = d.join(control.RoleTarget, "mt1", "127.0.0.1:9830")
	process = d.join(control.RoleProcess, "ps1", "127.0.0.1:9821")
	agent = d.join(control.RoleAgent, "host1", "")
	for _, c := range []*component{target, process, agent} {
		c.must("POST", "/v1/heartbeat", map[string]any{"version": "t", "address": map[control.Role]string{control.RoleTarget: "127.0.0.1:9830", control.RoleProcess: "127.0.0.1:9821"}[c.id.Role]}, 204)
	}
	return target, process, agent
}

// The test failover jobs with the master target simulated by a joined
// component that reads its desired state and reports over gRPC: the flag's
// transitions and refusals, the desired state the target gets, the jobs'
// results, and cleanup.
func TestTestFailoverJobs(t *testing.T) {
	d := startServer(t)
	ctx := context.Background()
	target, process, agent := d.joinSites()
	report := func(state string) {
		agent.must("POST", "/v1/agent/report", map[string]any{"id": "m-web01", "name": "web01",
			"disks": []map[string]any{{"name": "vda", "size": 1 << 30}}, "replication": map[string]any{"state": state}}, 200)
	}
	report("connecting")

	// Unprotected: refused, with what is allowed.
	d.refused(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{}, http.StatusConflict, "a test failover needs recovery points")
	d.refused(d.admin, "POST", "/v1/machines/web01/test-cleanup", map[string]any{}, http.StatusConflict, `event "test-cleanup" is not allowed`)
	d.refused(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{"point": "yesterday"}, http.StatusBadRequest, "want latest, latest-app")
	d.refused(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{"machine": map[string]any{"cpus": -1}}, http.StatusBadRequest, "machine.cpus")
	d.refused(d.admin, "POST", "/v1/machines/nope/test-failover", map[string]any{}, http.StatusNotFound, "nope")

	d.call(d.admin, "POST", "/v1/groups", map[string]any{"name": "web"}, nil)
	d.call(d.admin, "POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, nil)
	d.refused(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{}, http.StatusConflict, "in state enabling")
	report("protected")

	// A viewer may not.
	var vw struct {
		Token string `json:"token"`
	}
	d.call(d.admin, "POST", "/v1/users", map[string]string{"name": "eve", "role": "viewer"}, &vw)
	d.refused(d.user(vw.Token), "POST", "/v1/machines/web01/test-failover", map[string]any{}, http.StatusForbidden, "")

	mt := target.client()
	des, err := mt.Desired(ctx, "", 0)
	if err != nil || len(des.Machines) != 1 || des.Machines[0].Test != nil {
		t.Fatalf("target's desired state before the test failover: %+v, %v", des, err)
	}
	var tf testResp
	d.call(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{"point": "latest-app", "machine": map[string]any{"cpus": 2}}, &tf)
	if tf.Job.Kind != api.JobTestFailover || tf.Job.Object != "machine/web01" || tf.Machine.TestFailover != control.TestRunning ||
		tf.Machine.Test == nil || tf.Machine.Test.Point != "latest-app" || tf.Machine.Test.Replica != (control.ReplicaSpec{Name: "web01-test", CPUs: 2}) {
		t.Fatalf("test-failover answered %+v", tf)
	}
	testID := tf.Machine.Test.ID
	// A second one while it exists is refused; so are disable and a
	// second start.
	d.refused(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{}, http.StatusConflict, "allowed: test-cleanup")
	d.refused(d.admin, "POST", "/v1/machines/web01/unprotect", map[string]any{}, http.StatusConflict, "standby machines test-cleanup web01")
	if m := d.machine("web01"); m.State != control.StateProtected {
		t.Fatalf("the test failover moved the protection state to %s", m.State)
	}

	// The master target's desired state carries it (long poll woken).
	des2, err := mt.Desired(ctx, des.Version, 10*time.Second)
	if err != nil || len(des2.Machines) != 1 || des2.Machines[0].Test == nil {
		t.Fatalf("target's desired state: %+v, %v", des2, err)
	}
	want := api.DesiredTest{ID: testID, Point: "latest-app", Replica: control.ReplicaSpec{Name: "web01-test", CPUs: 2}}
	if got := *des2.Machines[0].Test; got != want {
		t.Fatalf("desired test %+v, want %+v", got, want)
	}
	// Agents and process servers do not see it.
	if ad, err := agent.client().Desired(ctx, "", 0); err != nil || ad.Machines[0].Test != nil {
		t.Fatalf("agent's desired state: %+v, %v", ad, err)
	}

	// Reports: a stale test id is refused; a bad phase too.
	err = mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", TestID: "old", Test: control.TestReport{Phase: control.TestPhaseRunning}})
	wantStatus(t, "stale report", err, http.StatusConflict, "not its current one")
	err = mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", TestID: testID, Test: control.TestReport{Phase: "bogus"}})
	wantStatus(t, "bad phase", err, http.StatusBadRequest, "allowed: starting")
	// Another component may not report.
	code, _ := process.do("POST", "/v1/target/recovery", api.RecoveryReport{Machine: "m-web01", TestID: testID, Test: control.TestReport{Phase: control.TestPhaseRunning}})
	if code != http.StatusForbidden {
		t.Fatalf("a process server's recovery report: HTTP %d", code)
	}

	// starting (over HTTP/JSON), then running (over gRPC): the job ends with the point.
	target.must("POST", "/v1/target/recovery", api.RecoveryReport{Machine: "m-web01", TestID: testID, Test: control.TestReport{Phase: control.TestPhaseStarting}}, 204)
	pointAt := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", TestID: testID, Test: control.TestReport{Phase: control.TestPhaseRunning,
		PointID: 7, PointTime: pointAt, Export: "test-web01", Disks: []string{"nbd+unix:///test-web01/vda?socket=%2Fs"}, Machine: "web01-test", MachineState: "running"}}); err != nil {
		t.Fatal(err)
	}
	j := d.waitJob(tf.Job.ID)
	if j.State != control.JobSucceeded || !strings.Contains(j.Result, "recovery point 7 (2026-11-27T10:00:00Z), export test-web01") {
		t.Fatalf("test-failover job: %s %q %q", j.State, j.Result, j.Error)
	}
	if m := d.machine("web01"); m.Test.Report.Export != "test-web01" || m.Test.Report.ReportedAt.IsZero() || m.TestFailover != control.TestRunning {
		t.Fatalf("machine after the report: %+v", m.Test)
	}

	// Cleanup: the desired state says remove; the target's "removed" ends it.
	var tc testResp
	d.call(d.admin, "POST", "/v1/machines/web01/test-cleanup", map[string]any{}, &tc)
	if tc.Job.Kind != api.JobTestCleanup || tc.Machine.TestFailover != control.TestCleaningUp {
		t.Fatalf("test-cleanup answered %+v", tc)
	}
	des3, err := mt.Desired(ctx, des2.Version, 10*time.Second)
	if err != nil || des3.Machines[0].Test == nil || !des3.Machines[0].Test.Remove {
		t.Fatalf("target's desired state during cleanup: %+v, %v", des3, err)
	}
	d.refused(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{}, http.StatusConflict, "allowed: test-cleanup, test-cleanup-done")
	// A cleanup interrupted may be asked again (a new job, same test).
	var tc2 testResp
	d.call(d.admin, "POST", "/v1/machines/web01/test-cleanup", map[string]any{}, &tc2)
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", TestID: testID, Test: control.TestReport{Phase: control.TestPhaseRemoved, PointID: 7, Export: "test-web01"}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{tc.Job.ID, tc2.Job.ID} {
		if j := d.waitJob(id); j.State != control.JobSucceeded || !strings.Contains(j.Result, "cleaned up") {
			t.Fatalf("test-cleanup job %s: %s %q %q", id, j.State, j.Result, j.Error)
		}
	}
	m := d.machine("web01")
	if m.TestFailover != control.TestNone || m.Test == nil || m.Test.Report.Phase != control.TestPhaseRemoved {
		t.Fatalf("after cleanup: flag %q, test %+v", m.TestFailover, m.Test)
	}
	if des4, err := mt.Desired(ctx, "", 0); err != nil || des4.Machines[0].Test != nil {
		t.Fatalf("target's desired state after cleanup: %+v, %v", des4, err)
	}

	// A failed start fails the job with the target's words and a hint;
	// the flag stays (a cleanup is needed).
	d.call(d.admin, "POST", "/v1/machines/web01/test-failover", map[string]any{}, &tf)
	if err := mt.Recovery(ctx, api.RecoveryReport{Machine: "m-web01", TestID: tf.Machine.Test.ID, Test: control.TestReport{Phase: control.TestPhaseFailed, Error: "no retained recovery point matches"}}); err != nil {
		t.Fatal(err)
	}
	j = d.waitJob(tf.Job.ID)
	if j.State != control.JobFailed || !strings.Contains(j.Error, "no retained recovery point matches") || !strings.Contains(j.Error, "standby machines test-cleanup web01") {
		t.Fatalf("failed test failover job: %s %q", j.State, j.Error)
	}
	if m := d.machine("web01"); m.TestFailover != control.TestRunning {
		t.Fatalf("after a failed start the flag is %q, want running", m.TestFailover)
	}

	// The audit log has them.
	var audit []control.AuditEntry
	d.call(d.admin, "GET", "/v1/audit?limit=100", nil, &audit)
	seen := map[string]bool{}
	for _, e := range audit {
		seen[e.Action] = true
	}
	for _, a := range []string{"machine.test-failover", "machine.test-cleanup", "machine.test-cleanup-done"} {
		if !seen[a] {
			t.Errorf("audit log has no %s", a)
		}
	}
}
