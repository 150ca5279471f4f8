package orchestrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// newRunner returns a runner on st with short intervals, so that retries,
// timeouts and flushes take milliseconds.
func newRunner(st JobStore, planners map[string]Planner) *Runner {
	return &Runner{
		Store: st, Planners: planners, Log: slog.New(slog.DiscardHandler),
		Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Grace: 50 * time.Millisecond,
		FlushInterval: 5 * time.Millisecond, PollInterval: 10 * time.Millisecond,
	}
}

// start runs r until the test ends; kill stops it the way a crash would
// (its context cancelled: nothing more is written) and waits for Run.
func start(t *testing.T, r *Runner) (kill func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	kill = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		ctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_ = r.Close(ctx)
		kill()
	})
	return kill
}

func steps(specs ...StepSpec) Planner {
	return PlannerFunc(func(control.Job) ([]StepSpec, error) { return specs, nil })
}

func ok(name string, calls *atomic.Int32) StepSpec {
	return StepSpec{Name: name, Idempotent: true, Run: func(context.Context, *StepRun) error {
		if calls != nil {
			calls.Add(1)
		}
		return nil
	}}
}

func submit(t *testing.T, r *Runner, kind, object string) control.Job {
	t.Helper()
	j, err := r.Submit(context.Background(), kind, object, nil, "user:test")
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return j
}

func wait(t *testing.T, r *Runner, id string) control.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	j, err := r.Wait(ctx, id)
	if err != nil {
		t.Fatalf("Wait: %v (job %+v)", err, j)
	}
	return j
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func stepStates(j control.Job) string {
	var s []string
	for _, st := range j.Steps {
		s = append(s, fmt.Sprintf("%s=%s/%d", st.Name, st.State, st.Attempts))
	}
	return strings.Join(s, " ")
}

func logHas(j control.Job, sub string) bool {
	for _, l := range j.Log {
		if strings.Contains(l.Message, sub) {
			return true
		}
	}
	return false
}

func TestRunSucceeds(t *testing.T) {
	st := newMemStore()
	r := newRunner(st, map[string]Planner{"protect": steps(
		StepSpec{Name: "a", Run: func(_ context.Context, sr *StepRun) error {
			sr.Progress(0.5)
			sr.Message("half way")
			sr.Logf("copied %d of %d", 1, 2)
			return nil
		}},
		StepSpec{Name: "b", Run: func(_ context.Context, sr *StepRun) error {
			if sr.Attempt() != 1 || sr.Resumed() || sr.JobID() == "" {
				return fmt.Errorf("attempt %d resumed %v job %q", sr.Attempt(), sr.Resumed(), sr.JobID())
			}
			sr.SetResult("replica at 10.0.0.5")
			return nil
		}},
		ok("c", nil),
	)})
	start(t, r)
	j := submit(t, r, "protect", "machine/web01")
	if j.State != control.JobQueued || len(j.Steps) != 3 || j.Version != 1 {
		t.Fatalf("submitted %+v", j)
	}
	j = wait(t, r, j.ID)
	if j.State != control.JobSucceeded || j.Progress != 1 || j.Result != "replica at 10.0.0.5" || j.Error != "" ||
		j.Attempts != 1 || j.Current != 2 || j.EndedAt.IsZero() {
		t.Errorf("job %+v", j)
	}
	if got := stepStates(j); got != "a=succeeded/1 b=succeeded/1 c=succeeded/1" {
		t.Errorf("steps %s", got)
	}
	if j.Steps[0].Message != "half way" || !logHas(j, "a: copied 1 of 2") || !logHas(j, "step c: succeeded") {
		t.Errorf("messages and log: %+v %+v", j.Steps[0], j.Log)
	}
}

func TestProgressIsStoredWhileAStepRuns(t *testing.T) {
	st := newMemStore()
	release := make(chan struct{})
	r := newRunner(st, map[string]Planner{"k": steps(ok("a", nil),
		StepSpec{Name: "b", Run: func(ctx context.Context, sr *StepRun) error {
			sr.Progress(0.5)
			sr.Message("hydrating disk 1 of 2")
			<-release
			return nil
		}}, ok("c", nil))})
	start(t, r)
	j := submit(t, r, "k", "")
	eventually(t, "progress 0.5 of step b in the store", func() bool {
		got, _ := st.GetJob(context.Background(), j.ID)
		return got.Progress == 0.5 && got.Current == 1 && got.Steps[1].State == control.StepRunning &&
			got.Steps[1].Message == "hydrating disk 1 of 2"
	})
	close(release)
	if j = wait(t, r, j.ID); j.State != control.JobSucceeded {
		t.Errorf("job %+v", j)
	}
}

func TestStepFailureFailsTheJob(t *testing.T) {
	var cCalls atomic.Int32
	r := newRunner(newMemStore(), map[string]Planner{"k": steps(ok("a", nil),
		StepSpec{Name: "b", Run: func(context.Context, *StepRun) error { return errors.New("disk full") }},
		ok("c", &cCalls))})
	start(t, r)
	j := wait(t, r, submit(t, r, "k", "").ID)
	if j.State != control.JobFailed || j.Error != "step b: disk full" || j.EndedAt.IsZero() {
		t.Errorf("job %s %q", j.State, j.Error)
	}
	if got := stepStates(j); got != "a=succeeded/1 b=failed/1 c=skipped/0" {
		t.Errorf("steps %s", got)
	}
	if j.Steps[1].Message != "disk full" || cCalls.Load() != 0 || j.Progress < 0.33 || j.Progress > 0.34 {
		t.Errorf("step b %+v, c ran %d times, progress %v", j.Steps[1], cCalls.Load(), j.Progress)
	}
}

func TestRetries(t *testing.T) {
	failing := func(failures int32, calls *atomic.Int32, wrap func(error) error) func(context.Context, *StepRun) error {
		return func(context.Context, *StepRun) error {
			if n := calls.Add(1); n <= failures {
				return wrap(fmt.Errorf("connection refused (%d)", n))
			}
			return nil
		}
	}
	same := func(err error) error { return err }
	tests := []struct {
		name     string
		failures int32
		retries  int
		wrap     func(error) error
		state    control.JobState
		calls    int32
	}{
		{"succeeds on the third attempt", 2, 2, same, control.JobSucceeded, 3},
		{"retries exhausted", 5, 1, same, control.JobFailed, 2},
		{"permanent errors are not retried", 5, 3, Permanent, control.JobFailed, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			r := newRunner(newMemStore(), map[string]Planner{"k": steps(
				StepSpec{Name: "connect", Retries: tt.retries, Idempotent: true, Run: failing(tt.failures, &calls, tt.wrap)})})
			start(t, r)
			j := wait(t, r, submit(t, r, "k", "").ID)
			if j.State != tt.state || calls.Load() != tt.calls || j.Steps[0].Attempts != int(tt.calls) {
				t.Errorf("job %s after %d calls (step attempts %d); want %s after %d", j.State, calls.Load(), j.Steps[0].Attempts, tt.state, tt.calls)
			}
			if tt.calls > 1 && !logHas(j, "attempt 1 failed: connection refused (1); retrying in 5ms") {
				t.Errorf("log lacks the retry: %+v", j.Log)
			}
			if tt.state == control.JobFailed && !strings.Contains(j.Error, fmt.Sprintf("connection refused (%d)", tt.calls)) {
				t.Errorf("error %q", j.Error)
			}
		})
	}
}

func TestStepTimeout(t *testing.T) {
	var calls atomic.Int32
	r := newRunner(newMemStore(), map[string]Planner{"k": steps(StepSpec{
		Name: "hydrate", Timeout: 20 * time.Millisecond, Retries: 1, Idempotent: true,
		Run: func(ctx context.Context, _ *StepRun) error {
			calls.Add(1)
			<-ctx.Done()
			return ctx.Err()
		}})})
	start(t, r)
	j := wait(t, r, submit(t, r, "k", "").ID)
	if j.State != control.JobFailed || calls.Load() != 2 ||
		j.Error != "step hydrate: step timed out after 20ms: context deadline exceeded" {
		t.Errorf("job %s %q after %d calls", j.State, j.Error, calls.Load())
	}
}

// A step that ignores its context does not hang the job: it is abandoned
// after the grace period, and what it reports afterwards is ignored.
func TestStepIgnoringItsContextIsAbandoned(t *testing.T) {
	st := newMemStore()
	release, returned := make(chan struct{}), make(chan struct{})
	r := newRunner(st, map[string]Planner{"k": steps(StepSpec{
		Name: "stuck", Timeout: 10 * time.Millisecond, Retries: 3, Idempotent: true,
		Run: func(_ context.Context, sr *StepRun) error {
			defer close(returned)
			<-release
			sr.SetResult("too late")
			sr.Progress(0.9)
			return nil
		}})})
	start(t, r)
	began := time.Now()
	j := wait(t, r, submit(t, r, "k", "").ID)
	if time.Since(began) > 2*time.Second {
		t.Errorf("took %s", time.Since(began))
	}
	if j.State != control.JobFailed || j.Steps[0].Attempts != 1 ||
		!strings.Contains(j.Error, "step abandoned: it did not return within 50ms after step timed out after 10ms") {
		t.Errorf("job %s %q %s", j.State, j.Error, stepStates(j))
	}
	close(release)
	<-returned
	time.Sleep(20 * time.Millisecond)
	if got, _ := st.GetJob(context.Background(), j.ID); got.Result != "" || got.Version != j.Version {
		t.Errorf("an abandoned step changed the job: %+v", got)
	}
}

func TestCancelRunningJob(t *testing.T) {
	started := make(chan struct{})
	var bCalls atomic.Int32
	r := newRunner(newMemStore(), map[string]Planner{"k": steps(
		StepSpec{Name: "a", Run: func(ctx context.Context, _ *StepRun) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}}, ok("b", &bCalls))})
	start(t, r)
	j := submit(t, r, "k", "machine/web01")
	<-started
	if err := r.Cancel(context.Background(), j.ID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	j = wait(t, r, j.ID)
	if j.State != control.JobCancelled || j.Error != "cancelled" || bCalls.Load() != 0 {
		t.Errorf("job %s %q, b ran %d times", j.State, j.Error, bCalls.Load())
	}
	if got := stepStates(j); got != "a=failed/1 b=skipped/0" || j.Steps[0].Message != "cancelled" {
		t.Errorf("steps %s %q", got, j.Steps[0].Message)
	}
	if err := r.Cancel(context.Background(), j.ID); !errors.Is(err, ErrJobEnded) {
		t.Errorf("Cancel of an ended job: %v; want ErrJobEnded", err)
	}
	if err := r.Cancel(context.Background(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Cancel of an unknown job: %v; want ErrNotFound", err)
	}
}

func TestCancelQueuedJob(t *testing.T) {
	var calls atomic.Int32
	r := newRunner(newMemStore(), map[string]Planner{"k": steps(ok("a", &calls))})
	j := submit(t, r, "k", "")
	if err := r.Cancel(context.Background(), j.ID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	start(t, r)
	j = wait(t, r, j.ID)
	time.Sleep(30 * time.Millisecond) // a few polls of Run
	if j.State != control.JobCancelled || stepStates(j) != "a=skipped/0" || calls.Load() != 0 {
		t.Errorf("job %s %s, ran %d times", j.State, stepStates(j), calls.Load())
	}
}

// crashDuring runs a job of three steps whose middle one, b, blocks on
// its first run; it kills the runner while b runs and returns the job as
// the store has it then.
func crashDuring(t *testing.T, st *memStore, b StepSpec, aCalls, cCalls *atomic.Int32) control.Job {
	t.Helper()
	started := make(chan struct{})
	first := b
	first.Run = func(ctx context.Context, sr *StepRun) error {
		sr.Progress(0.25)
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}
	r1 := newRunner(st, map[string]Planner{"k": steps(ok("a", aCalls), first, ok("c", cCalls))})
	kill := start(t, r1)
	j := submit(t, r1, "k", "machine/web01")
	<-started
	kill()
	j, _ = st.GetJob(context.Background(), j.ID)
	if j.State != control.JobRunning || stepStates(j) != "a=succeeded/1 b=running/1 c=pending/0" {
		t.Fatalf("after the crash the store says %s %s; want the job running in b", j.State, stepStates(j))
	}
	return j
}

func TestResumeRunsAnInterruptedIdempotentStepAgain(t *testing.T) {
	st := newMemStore()
	var aCalls, bCalls, cCalls atomic.Int32
	j := crashDuring(t, st, StepSpec{Name: "b", Idempotent: true}, &aCalls, &cCalls)
	var attempt int
	var resumed bool
	r2 := newRunner(st, map[string]Planner{"k": steps(ok("a", &aCalls),
		StepSpec{Name: "b", Idempotent: true, Run: func(_ context.Context, sr *StepRun) error {
			bCalls.Add(1)
			attempt, resumed = sr.Attempt(), sr.Resumed()
			return nil
		}}, ok("c", &cCalls))})
	n, err := r2.Resume(context.Background())
	if n != 1 || err != nil {
		t.Fatalf("Resume = %d, %v", n, err)
	}
	q, _ := st.GetJob(context.Background(), j.ID)
	if q.State != control.JobQueued || stepStates(q) != "a=succeeded/1 b=pending/1 c=pending/0" || !logHas(q, "step b: interrupted by a restart") {
		t.Errorf("resumed job %s %s", q.State, stepStates(q))
	}
	start(t, r2)
	j = wait(t, r2, j.ID)
	if j.State != control.JobSucceeded || stepStates(j) != "a=succeeded/1 b=succeeded/2 c=succeeded/1" || j.Attempts != 2 {
		t.Errorf("job %s %s attempts %d", j.State, stepStates(j), j.Attempts)
	}
	if aCalls.Load() != 1 || bCalls.Load() != 1 || cCalls.Load() != 1 || attempt != 2 || !resumed {
		t.Errorf("a ran %d, b %d (attempt %d, resumed %v), c %d times; want a done step not run again",
			aCalls.Load(), bCalls.Load(), attempt, resumed, cCalls.Load())
	}
}

func TestResumeFailsAnInterruptedStepThatIsNotIdempotent(t *testing.T) {
	st := newMemStore()
	var aCalls, cCalls atomic.Int32
	j := crashDuring(t, st, StepSpec{Name: "b"}, &aCalls, &cCalls)
	var bCalls atomic.Int32
	r2 := newRunner(st, map[string]Planner{"k": steps(ok("a", &aCalls), StepSpec{Name: "b", Run: func(context.Context, *StepRun) error {
		bCalls.Add(1)
		return nil
	}}, ok("c", &cCalls))})
	if n, err := r2.Resume(context.Background()); n != 0 || err != nil {
		t.Fatalf("Resume = %d, %v", n, err)
	}
	start(t, r2)
	j = wait(t, r2, j.ID)
	if j.State != control.JobFailed || stepStates(j) != "a=succeeded/1 b=failed/1 c=skipped/0" ||
		!strings.Contains(j.Error, `step "b": step interrupted by a restart while it ran; it is not idempotent, so it was not run again: check what it did`) {
		t.Errorf("job %s %s %q", j.State, stepStates(j), j.Error)
	}
	if aCalls.Load() != 1 || bCalls.Load() != 0 || cCalls.Load() != 0 {
		t.Errorf("a ran %d, b %d, c %d times after the crash", aCalls.Load(), bCalls.Load(), cCalls.Load())
	}
}

func TestResumeWithAChangedPlanFails(t *testing.T) {
	st := newMemStore()
	j := crashDuring(t, st, StepSpec{Name: "b", Idempotent: true}, nil, nil)
	r2 := newRunner(st, map[string]Planner{"k": steps(ok("a", nil), ok("b2", nil))})
	if n, err := r2.Resume(context.Background()); n != 0 || err != nil {
		t.Fatalf("Resume = %d, %v", n, err)
	}
	j, _ = st.GetJob(context.Background(), j.ID)
	if j.State != control.JobFailed || !strings.Contains(j.Error, "the job's steps are [a, b, c] but its planner now says [a, b2]; submit it again") {
		t.Errorf("job %s %q", j.State, j.Error)
	}
	r3 := newRunner(st, map[string]Planner{})
	j2 := crashDuring(t, st, StepSpec{Name: "b", Idempotent: true}, nil, nil)
	if _, err := r3.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if j2, _ = st.GetJob(context.Background(), j2.ID); j2.State != control.JobFailed || !strings.Contains(j2.Error, `unknown job kind "k"`) {
		t.Errorf("job of an unknown kind: %s %q", j2.State, j2.Error)
	}
}

func TestSubmitRejectsBadInput(t *testing.T) {
	type params struct {
		Machine string `json:"machine"`
	}
	run := func(context.Context, *StepRun) error { return nil }
	st := newMemStore()
	r := newRunner(st, map[string]Planner{
		"failover": PlannerFunc(func(j control.Job) ([]StepSpec, error) {
			var p params
			if err := json.Unmarshal(j.Params, &p); err != nil || p.Machine == "" {
				return nil, fmt.Errorf("params: want a machine name")
			}
			return []StepSpec{{Name: "fence", Run: run}}, nil
		}),
		"empty":    steps(),
		"dup":      steps(StepSpec{Name: "x", Run: run}, StepSpec{Name: "x", Run: run}),
		"noname":   steps(StepSpec{Name: " ", Run: run}),
		"norun":    steps(StepSpec{Name: "x"}),
		"retries":  steps(StepSpec{Name: "x", Run: run, Retries: 2}),
		"negative": steps(StepSpec{Name: "x", Run: run, Timeout: -time.Second}),
	})
	ctx := context.Background()
	_, err := r.Submit(ctx, "reboot", "", nil, "u")
	if !errors.Is(err, ErrUnknownKind) || !strings.Contains(err.Error(), "(known: dup, empty, failover, negative, noname, norun, retries)") {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := r.Submit(ctx, "failover", "machine/web01", params{}, "u"); err == nil || !strings.Contains(err.Error(), "want a machine name") {
		t.Errorf("bad params: %v", err)
	}
	for _, kind := range []string{"empty", "dup", "noname", "norun", "retries", "negative"} {
		if _, err := r.Submit(ctx, kind, "", nil, "u"); !errors.Is(err, ErrInvalidPlan) {
			t.Errorf("plan %s: %v; want ErrInvalidPlan", kind, err)
		}
	}
	if n := st.writes.Load(); n != 0 {
		t.Errorf("bad input stored %d jobs", n)
	}
	j, err := r.Submit(ctx, "failover", "machine/web01", params{Machine: "web01"}, "u")
	if err != nil || string(j.Params) != `{"machine":"web01"}` {
		t.Errorf("good params: %s, %v", j.Params, err)
	}
}

func TestLogIsBounded(t *testing.T) {
	r := newRunner(newMemStore(), map[string]Planner{"k": steps(StepSpec{Name: "chatty", Run: func(_ context.Context, sr *StepRun) error {
		for i := range 200 {
			sr.Logf("line %d", i)
		}
		return nil
	}})})
	r.MaxLog = 50
	start(t, r)
	j := wait(t, r, submit(t, r, "k", "").ID)
	if len(j.Log) != 50 || !logHas(j, "chatty: line 199") || logHas(j, "chatty: line 150") || j.Log[49].Message != "succeeded" {
		t.Errorf("log of %d lines, last %q", len(j.Log), j.Log[len(j.Log)-1].Message)
	}
}

// Jobs on one object run one at a time, in submission order; jobs on
// other objects run beside them.
func TestOneJobPerObject(t *testing.T) {
	var mu sync.Mutex
	running := map[string]int{}
	var order []string
	overlapOther := false
	r := newRunner(newMemStore(), map[string]Planner{"k": PlannerFunc(func(j control.Job) ([]StepSpec, error) {
		return []StepSpec{{Name: "work", Run: func(context.Context, *StepRun) error {
			mu.Lock()
			running[j.Object]++
			if running[j.Object] > 1 {
				order = append(order, "OVERLAP")
			}
			if len(running) > 1 && running["machine/a"] > 0 && running["machine/b"] > 0 {
				overlapOther = true
			}
			order = append(order, j.Object+":"+string(j.Params))
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			running[j.Object]--
			mu.Unlock()
			return nil
		}}}, nil
	})})
	r.Concurrency = 3
	ctx := context.Background()
	var ids []string
	for i, obj := range []string{"machine/a", "machine/a", "machine/b"} {
		j, err := r.Submit(ctx, "k", obj, i, "u")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	start(t, r)
	for _, id := range ids {
		wait(t, r, id)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, " ") != "machine/a:0 machine/b:2 machine/a:1" && strings.Join(order, " ") != "machine/b:2 machine/a:0 machine/a:1" {
		t.Errorf("order %v", order)
	}
	if !overlapOther {
		t.Errorf("jobs on machine/a and machine/b did not run beside each other")
	}
}

// A store that is away while a step runs delays the job; it does not fail
// it.
func TestStoreOutageDuringAJob(t *testing.T) {
	st := newMemStore()
	release := make(chan struct{})
	r := newRunner(st, map[string]Planner{"k": steps(StepSpec{Name: "a", Run: func(_ context.Context, sr *StepRun) error {
		<-release
		sr.Progress(0.5)
		return nil
	}}, ok("b", nil))})
	start(t, r)
	j := submit(t, r, "k", "")
	eventually(t, "step a running", func() bool {
		got, _ := st.GetJob(context.Background(), j.ID)
		return got.Steps[0].State == control.StepRunning
	})
	st.failWith(errStoreDown)
	close(release)
	time.Sleep(50 * time.Millisecond)
	st.failWith(nil)
	if j = wait(t, r, j.ID); j.State != control.JobSucceeded {
		t.Errorf("job %s %q", j.State, j.Error)
	}
}

func TestClose(t *testing.T) {
	t.Run("waits for running jobs", func(t *testing.T) {
		started := make(chan struct{})
		st := newMemStore()
		r := newRunner(st, map[string]Planner{"k": steps(StepSpec{Name: "a", Run: func(context.Context, *StepRun) error {
			close(started)
			time.Sleep(30 * time.Millisecond)
			return nil
		}})})
		start(t, r)
		j := submit(t, r, "k", "")
		<-started
		if err := r.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if j, _ = st.GetJob(context.Background(), j.ID); j.State != control.JobSucceeded {
			t.Errorf("job %s after Close", j.State)
		}
		if _, err := r.Submit(context.Background(), "k", "", nil, "u"); !errors.Is(err, ErrClosed) {
			t.Errorf("Submit after Close: %v", err)
		}
	})
	t.Run("abandons them when its context ends", func(t *testing.T) {
		started := make(chan struct{})
		st := newMemStore()
		r := newRunner(st, map[string]Planner{"k": steps(StepSpec{Name: "a", Idempotent: true, Run: func(ctx context.Context, _ *StepRun) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}})})
		start(t, r)
		j := submit(t, r, "k", "")
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close: %v; want the deadline", err)
		}
		if j, _ = st.GetJob(context.Background(), j.ID); j.State != control.JobRunning || j.Steps[0].State != control.StepRunning {
			t.Errorf("job %s %s after Close; want it left running for Resume", j.State, stepStates(j))
		}
	})
}

func TestWaitEndsWithItsContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	r := newRunner(newMemStore(), map[string]Planner{"k": steps(StepSpec{Name: "a", Run: func(context.Context, *StepRun) error {
		<-release
		return nil
	}})})
	start(t, r)
	j := submit(t, r, "k", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if got, err := r.Wait(ctx, j.ID); !errors.Is(err, context.DeadlineExceeded) || got.ID != j.ID {
		t.Errorf("Wait = %s, %v", got.State, err)
	}
}
