package storetest

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

var machineTests = []test{
	{"Machines", testMachines},
	{"MachineUpdate", testMachineUpdate},
	{"MachineFilter", testMachineFilter},
	{"Points", testPoints},
	{"Jobs", testJobs},
	{"JobUpdate", testJobUpdate},
	{"JobFilter", testJobFilter},
}

func sampleMachine(id, name string) control.Machine {
	return control.Machine{
		ID: id, Name: name, Agent: "a1",
		Disks: []control.Disk{{Name: "vda", Size: 10 << 30}, {Name: "vdb", Size: 1 << 20}},
		Group: "g1", Process: "p1", Target: "t1",
		Epoch:         math.MaxUint64 - 1, // beyond int64: the whole range must round-trip
		State:         "protected",
		Health:        control.HealthWarning,
		HealthReasons: []string{"rpo 95s > 90s", "résumé ✓ \t\"quoted\"\n"},
		Replication: control.ReplicationReport{State: "delta", RPOSeconds: 1.25, BacklogBytes: 1 << 33,
			ResyncLeft: 7, LastPointAt: at(time.Second), ReportedAt: at(2 * time.Second), LastError: "none"},
		Version:   42, // ignored by CreateMachine
		UpdatedAt: at(0),
	}
}

func wantMachine(m control.Machine, version int64) control.Machine {
	m.UpdatedAt = um(m.UpdatedAt)
	m.Replication.LastPointAt, m.Replication.ReportedAt = um(m.Replication.LastPointAt), um(m.Replication.ReportedAt)
	if m.Test != nil {
		t := *m.Test
		t.RequestedAt, t.Report.PointTime, t.Report.ReportedAt = um(t.RequestedAt), um(t.Report.PointTime), um(t.Report.ReportedAt)
		m.Test = &t
	}
	if m.Failover != nil {
		f := *m.Failover
		f.RequestedAt, f.Report.PointTime, f.Report.ReportedAt = um(f.RequestedAt), um(f.Report.PointTime), um(f.Report.ReportedAt)
		f.Report.Hydration.CompletedAt = um(f.Report.Hydration.CompletedAt)
		m.Failover = &f
	}
	if m.Reverse != nil {
		r := *m.Reverse
		r.RequestedAt = um(r.RequestedAt)
		if r.Failback != nil {
			f := *r.Failback
			f.RequestedAt = um(f.RequestedAt)
			r.Failback = &f
		}
		m.Reverse = &r
	}
	m.Version = version
	return m
}

func testMachines(t *testing.T, s store.Store) {
	m1 := sampleMachine("m1", "web01")
	got, err := s.CreateMachine(ctx(t), m1)
	must(t, "create", err)
	same(t, "created machine", got, wantMachine(m1, 1))
	// nil and empty slices are kept apart: [] and null mean different things to a client.
	m2 := control.Machine{ID: "m2", Name: "db01", Disks: []control.Disk{}, State: "discovered"}
	_, err = s.CreateMachine(ctx(t), m2)
	must(t, "create", err)
	_, err = s.CreateMachine(ctx(t), control.Machine{ID: "m3", Name: "web01"})
	wantErr(t, "same name", err, store.ErrExists)
	_, err = s.CreateMachine(ctx(t), control.Machine{ID: "m1", Name: "other"})
	wantErr(t, "same id", err, store.ErrExists)

	got, err = s.GetMachine(ctx(t), "m1")
	must(t, "get", err)
	same(t, "m1", got, wantMachine(m1, 1))
	got, err = s.MachineByName(ctx(t), "db01")
	must(t, "by name", err)
	same(t, "m2", got, wantMachine(m2, 1))
	if got.Disks == nil || got.HealthReasons != nil {
		t.Fatalf("m2: disks %#v, health reasons %#v: want empty and nil, as created", got.Disks, got.HealthReasons)
	}
	_, err = s.GetMachine(ctx(t), "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)
	_, err = s.MachineByName(ctx(t), "nope")
	wantErr(t, "unknown name", err, store.ErrNotFound)
}

func testMachineUpdate(t *testing.T, s store.Store) {
	m1, err := s.CreateMachine(ctx(t), sampleMachine("m1", "web01"))
	must(t, "create", err)
	_, err = s.CreateMachine(ctx(t), sampleMachine("m2", "db01"))
	must(t, "create", err)

	u := m1
	u.Name, u.Epoch, u.State, u.Health, u.HealthReasons = "web02", 2, "failed-over", control.HealthCritical, nil
	u.Disks = append(u.Disks, control.Disk{Name: "vdc", Size: 3})
	u.Group, u.UpdatedAt = "", at(time.Hour)
	// A test failover: the flag and its record, with the master target's
	// report, round-trip (migration 0002).
	u.TestFailover = control.TestRunning
	u.Test = &control.TestFailover{ID: "tf-1", Point: "2026-11-27T10:00:00Z",
		Replica: control.ReplicaSpec{Name: "web01-test", CPUs: 2, MemoryMiB: 1024}, RequestedAt: at(3 * time.Second),
		Report: control.TestReport{Phase: control.TestPhaseRunning, PointID: math.MaxUint64, PointTime: at(4 * time.Second),
			Export: "test-web01", Disks: []string{"nbd+unix:///test-web01/vda?socket=%2Frun%2Fx.sock"},
			Machine: "web01-test", MachineState: "running", Error: "résumé ✓", ReportedAt: at(5 * time.Second)}}
	// A failover record with the target's report and hydration progress
	// round-trips (migration 0003).
	u.Failover = &control.Failover{ID: "fo-1", Point: "latest", Epoch: 2, Replica: control.ReplicaSpec{Name: "web01", CPUs: 1},
		Network: map[string]string{"bridge": "br0"}, Commit: true, RequestedAt: at(6 * time.Second),
		Report: control.FailoverReport{Phase: control.FailoverPhaseRunning, Fenced: 2, PointID: 7, PointTime: at(7 * time.Second),
			Export: "failover-web01", Disks: []string{"nbd://x/failover-web01/vda"}, Machine: "web01", MachineState: "running",
			Hydration: control.Hydration{Done: 5, Total: 10, Images: []string{"/d/hydrated/m1/vda.img"}, Complete: true, CompletedAt: at(8 * time.Second)},
			Released:  3, ReportedAt: at(9 * time.Second)}}
	// A reverse direction with a failback round-trips (migration 0004).
	u.Reverse = &control.Reverse{ID: "rv-1", Agent: "mt1", Process: "ps2", Target: "mt2", Seed: []string{"/srv/web01.img"}, Epoch: 2,
		Force: true, Unreplicated: 4096, RequestedAt: at(10 * time.Second),
		Failback: &control.Failback{ID: "fb-1", Epoch: 3, RequestedAt: at(11 * time.Second), Drain: &control.DrainReport{ID: "fb-1", Done: true, BookmarkSeq: 9, Label: "planned-failover-fb-1"}},
		Report:   control.ReverseReport{Ready: true, Seeded: true, SentBytes: 65536, ResyncBytes: 65536, Replication: control.ReplicationReport{State: "protected", Epoch: 2}}}
	got, err := s.UpdateMachine(ctx(t), u)
	must(t, "update", err)
	same(t, "updated machine", got, wantMachine(u, 2))
	stored, err := s.GetMachine(ctx(t), "m1")
	must(t, "get", err)
	same(t, "stored machine", stored, wantMachine(u, 2))
	if stored.Test == u.Test {
		t.Fatal("the stored test failover is the caller's pointer")
	}

	stale := u // still Version 1
	stale.State = "lost"
	_, err = s.UpdateMachine(ctx(t), stale)
	wantErr(t, "update with a stale version", err, store.ErrConflict)
	stored, err = s.GetMachine(ctx(t), "m1")
	must(t, "get", err)
	same(t, "machine after a refused update", stored.State, control.MachineState("failed-over"))

	got.Name = "db01"
	_, err = s.UpdateMachine(ctx(t), got)
	wantErr(t, "rename onto another", err, store.ErrExists)
	_, err = s.UpdateMachine(ctx(t), control.Machine{ID: "zz", Name: "zz", Version: 1})
	wantErr(t, "update unknown", err, store.ErrNotFound)

	got.Name = "web03"
	got, err = s.UpdateMachine(ctx(t), got)
	must(t, "update again", err)
	same(t, "version after two updates", got.Version, int64(3))
}

func testMachineFilter(t *testing.T, s store.Store) {
	for _, m := range []control.Machine{
		{ID: "m1", Name: "e", Agent: "a1", Group: "g1", Process: "p1", Target: "t1"},
		{ID: "m2", Name: "d", Agent: "a1", Group: "g2", Process: "p2", Target: "t1"},
		{ID: "m3", Name: "c", Agent: "a2"},
		{ID: "m4", Name: "b", Agent: "a2", Group: "g1", Process: "p2", Target: "t2"},
		{ID: "m5", Name: "a", Agent: "a3"},
	} {
		_, err := s.CreateMachine(ctx(t), m)
		must(t, "create "+m.ID, err)
	}
	for _, tc := range []struct {
		f    store.MachineFilter
		want []string
	}{
		{store.MachineFilter{}, []string{"m5", "m4", "m3", "m2", "m1"}},
		{store.MachineFilter{Group: "g1"}, []string{"m4", "m1"}},
		{store.MachineFilter{Agent: "a2"}, []string{"m4", "m3"}},
		{store.MachineFilter{Process: "p2"}, []string{"m4", "m2"}},
		{store.MachineFilter{Target: "t1"}, []string{"m2", "m1"}},
		{store.MachineFilter{Protected: true}, []string{"m4", "m2", "m1"}},
		{store.MachineFilter{Agent: "a2", Protected: true}, []string{"m4"}},
		{store.MachineFilter{Agent: "a1", Target: "t2"}, []string{}},
		{store.MachineFilter{Group: "nope"}, []string{}},
	} {
		got, err := s.ListMachines(ctx(t), tc.f)
		must(t, "list", err)
		same(t, fmt.Sprintf("machines for %+v, by name", tc.f), names(got, func(m control.Machine) string { return m.ID }), tc.want)
	}
}

func testPoints(t *testing.T, s store.Store) {
	for _, id := range []string{"m1", "m2"} {
		_, err := s.CreateMachine(ctx(t), control.Machine{ID: id, Name: id})
		must(t, "create", err)
	}
	pt := func(machine string, id uint64, d time.Duration) control.RecoveryPoint {
		return control.RecoveryPoint{Machine: machine, ID: id, Seq: id * 1000, Time: at(d)}
	}
	want := func(p control.RecoveryPoint) control.RecoveryPoint { p.Time = um(p.Time); return p }
	p1 := pt("m1", 1, 0)
	p2 := pt("m1", 2, time.Minute)
	p2.AppConsistent, p2.Label, p2.Tags = true, "before upgrade", []string{"app", "weekly"}
	p3 := pt("", 3, 30*time.Second) // Machine may be left to the argument
	p3.Tags = []string{}
	max := pt("m1", math.MaxUint64, time.Hour)
	max.Seq = math.MaxUint64
	must(t, "replace", s.ReplacePoints(ctx(t), "m1", []control.RecoveryPoint{p1, p2, p3, max}))
	must(t, "replace m2", s.ReplacePoints(ctx(t), "m2", []control.RecoveryPoint{pt("m2", 1, 0)}))
	got, err := s.ListPoints(ctx(t), "m1")
	must(t, "list", err)
	p3.Machine = "m1"
	same(t, "points, newest first", got, []control.RecoveryPoint{want(max), want(p2), want(p3), want(p1)})

	p4 := pt("m1", 4, 2*time.Minute)
	must(t, "replace", s.ReplacePoints(ctx(t), "m1", []control.RecoveryPoint{p2, p4}))
	got, err = s.ListPoints(ctx(t), "m1")
	must(t, "list", err)
	same(t, "points after a replace", got, []control.RecoveryPoint{want(p4), want(p2)})
	got, err = s.ListPoints(ctx(t), "m2")
	must(t, "list m2", err)
	same(t, "m2's points, untouched", len(got), 1)

	wantErr(t, "replace with a duplicate", s.ReplacePoints(ctx(t), "m1", []control.RecoveryPoint{p1, p1}), store.ErrInvalid)
	wantErr(t, "replace naming another machine", s.ReplacePoints(ctx(t), "m1", []control.RecoveryPoint{pt("m2", 9, 0)}), store.ErrInvalid)
	got, err = s.ListPoints(ctx(t), "m1")
	must(t, "list", err)
	same(t, "points after refused replaces", len(got), 2)

	must(t, "replace with none", s.ReplacePoints(ctx(t), "m1", nil))
	got, err = s.ListPoints(ctx(t), "m1")
	must(t, "list", err)
	same(t, "points after replacing with none", len(got), 0)
	wantErr(t, "replace of unknown machine", s.ReplacePoints(ctx(t), "nope", []control.RecoveryPoint{pt("", 1, 0)}), store.ErrNotFound)
	_, err = s.ListPoints(ctx(t), "nope")
	wantErr(t, "points of unknown machine", err, store.ErrNotFound)
}

func sampleJob(id string, created time.Duration) control.Job {
	return control.Job{
		ID: id, Kind: "failover", Object: "machine/web01",
		// Exactly these bytes come back: spacing, key order, numbers.
		Params: json.RawMessage(`{"point": "latest",  "z":1.50, "a":[1, 2, {"x": null}]}`),
		State:  control.JobRunning,
		Steps: []control.Step{
			{Name: "stop source", State: control.StepSucceeded, Progress: 1, StartedAt: at(created), EndedAt: at(created + time.Second), Attempts: 1},
			{Name: "drain journal", State: control.StepRunning, Progress: 0.1, Message: "47 MiB left", StartedAt: at(created + time.Second), Attempts: 2},
			{Name: "start replica", State: control.StepPending},
		},
		Current: 1, Progress: 1.0 / 3, CreatedBy: "user:alice",
		Log: []control.LogLine{
			{At: at(created), Level: "info", Message: "started"},
			{At: at(created + time.Second), Level: "warn", Message: "multi\nline \"quoted\" \\ ünïcode ✓ \t tab \u2028"},
		},
		CreatedAt: at(created), UpdatedAt: at(created + time.Second), Attempts: 1,
	}
}

func wantJob(j control.Job, version int64) control.Job {
	j.CreatedAt, j.UpdatedAt, j.EndedAt = um(j.CreatedAt), um(j.UpdatedAt), um(j.EndedAt)
	steps := make([]control.Step, len(j.Steps))
	for i, s := range j.Steps {
		s.StartedAt, s.EndedAt = um(s.StartedAt), um(s.EndedAt)
		steps[i] = s
	}
	if j.Steps != nil {
		j.Steps = steps
	}
	if j.Log != nil {
		log := append([]control.LogLine(nil), j.Log...)
		for i := range log {
			log[i].At = um(log[i].At)
		}
		j.Log = log
	}
	j.Version = version
	return j
}

func testJobs(t *testing.T, s store.Store) {
	j1 := sampleJob("j1", 0)
	j1.Version = 9 // ignored
	got, err := s.CreateJob(ctx(t), j1)
	must(t, "create", err)
	same(t, "created job", got, wantJob(j1, 1))
	got, err = s.GetJob(ctx(t), "j1")
	must(t, "get", err)
	same(t, "stored job", got, wantJob(j1, 1))
	same(t, "params, byte for byte", string(got.Params), string(j1.Params))

	bare := control.Job{ID: "j2", Kind: "protect", State: control.JobQueued}
	_, err = s.CreateJob(ctx(t), bare)
	must(t, "create bare", err)
	got, err = s.GetJob(ctx(t), "j2")
	must(t, "get bare", err)
	same(t, "bare job", got, wantJob(bare, 1))
	_, err = s.CreateJob(ctx(t), bare)
	wantErr(t, "same id", err, store.ErrExists)
	_, err = s.GetJob(ctx(t), "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)
}

func testJobUpdate(t *testing.T, s store.Store) {
	j, err := s.CreateJob(ctx(t), sampleJob("j1", 0))
	must(t, "create", err)
	j.State, j.Result, j.Error, j.EndedAt = control.JobFailed, "", "drain: link down", at(time.Hour)
	j.Steps[1].State, j.Steps[1].EndedAt = control.StepFailed, at(time.Hour)
	j.Log = append(j.Log, control.LogLine{At: at(time.Hour), Level: "error", Message: "link down"})
	j.Params, j.Attempts, j.Progress = json.RawMessage(`[ ]`), 2, 0.5
	got, err := s.UpdateJob(ctx(t), j)
	must(t, "update", err)
	same(t, "updated job", got, wantJob(j, 2))
	stored, err := s.GetJob(ctx(t), "j1")
	must(t, "get", err)
	same(t, "stored job", stored, wantJob(j, 2))
	_, err = s.UpdateJob(ctx(t), j) // j still has version 1
	wantErr(t, "stale update", err, store.ErrConflict)
	_, err = s.UpdateJob(ctx(t), control.Job{ID: "zz", Kind: "k", State: control.JobQueued, Version: 1})
	wantErr(t, "update unknown", err, store.ErrNotFound)
}

func testJobFilter(t *testing.T, s store.Store) {
	mk := func(id, kind, object string, state control.JobState, created time.Duration) {
		j := control.Job{ID: id, Kind: kind, Object: object, State: state, CreatedAt: at(created)}
		_, err := s.CreateJob(ctx(t), j)
		must(t, "create "+id, err)
	}
	mk("j1", "protect", "machine/a", control.JobSucceeded, 0)
	mk("j2", "failover", "machine/a", control.JobRunning, 3*time.Second)
	mk("j3", "protect", "machine/b", control.JobQueued, time.Second)
	mk("j4", "failover", "plan/p", control.JobFailed, 2*time.Second)
	mk("j5", "protect", "machine/b", control.JobCancelled, 2*time.Second) // same time as j4, created later
	for _, tc := range []struct {
		f    store.JobFilter
		want []string
	}{
		{store.JobFilter{}, []string{"j2", "j5", "j4", "j3", "j1"}},
		{store.JobFilter{Object: "machine/a"}, []string{"j2", "j1"}},
		{store.JobFilter{Kind: "protect"}, []string{"j5", "j3", "j1"}},
		{store.JobFilter{Unfinished: true}, []string{"j2", "j3"}},
		{store.JobFilter{Limit: 2}, []string{"j2", "j5"}},
		{store.JobFilter{Kind: "protect", Object: "machine/b", Limit: 1}, []string{"j5"}},
		{store.JobFilter{Kind: "nope"}, []string{}},
	} {
		got, err := s.ListJobs(ctx(t), tc.f)
		must(t, "list", err)
		same(t, fmt.Sprintf("jobs for %+v, newest first", tc.f), names(got, func(j control.Job) string { return j.ID }), tc.want)
	}
}
