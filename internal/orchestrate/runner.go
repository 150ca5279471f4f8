package orchestrate

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// JobStore is the part of store.Store the runner uses. UpdateJob refuses a
// job whose Version is not the stored one with store.ErrConflict, which is
// how two writers of one job find out about each other.
type JobStore interface {
	CreateJob(ctx context.Context, j control.Job) (control.Job, error)
	GetJob(ctx context.Context, id string) (control.Job, error)
	UpdateJob(ctx context.Context, j control.Job) (control.Job, error)
	ListJobs(ctx context.Context, f store.JobFilter) ([]control.Job, error)
}

// Defaults of the Runner's optional fields.
const (
	DefaultConcurrency   = 2
	DefaultTimeout       = time.Hour
	DefaultBackoff       = time.Second
	DefaultMaxBackoff    = time.Minute
	DefaultGrace         = 5 * time.Second
	DefaultFlushInterval = time.Second
	DefaultPollInterval  = time.Second
	DefaultMaxLog        = 500
)

// Runner runs jobs: it persists them in Store and runs the steps their
// kind's Planner says. Set the fields, then call Resume once (at start,
// before any other runner uses the store), then Run in a goroutine, and
// Close at the end. Only one Runner may use a store at a time. Zero
// optional fields take the defaults above.
type Runner struct {
	Store    JobStore
	Planners map[string]Planner // by job kind, registered by cmd/
	Log      *slog.Logger       // nil: slog.Default()
	Now      func() time.Time   // nil: time.Now

	Concurrency    int           // jobs running at once
	DefaultTimeout time.Duration // of a step without a Timeout
	Backoff        time.Duration // before the first retry of a step; doubles
	MaxBackoff     time.Duration // cap of the backoff
	// Grace is how long a step whose context was cancelled is waited for
	// before the runner abandons it (it fails with ErrStepAbandoned).
	Grace time.Duration
	// FlushInterval is how often progress and log lines of a running
	// step are written to the store.
	FlushInterval time.Duration
	// PollInterval is how often Run looks for queued jobs and Wait for
	// the end of a job it was not told about.
	PollInterval time.Duration
	MaxLog       int           // log lines kept per job (the newest)
	NewID        func() string // nil: 16 random hex digits

	once    sync.Once
	mu      sync.Mutex
	active  map[string]*activeJob // jobs this runner runs, by ID
	wake    chan struct{}         // a job was submitted
	changed chan struct{}         // closed and replaced when a job ends
	closing chan struct{}         // closed by Close
	runDone chan struct{}         // closed when Run returns
	running bool
	closed  bool
	abandon context.CancelFunc // cancels Run's context: stop without writing
	listErr bool               // the last ListJobs failed (logged once)
}

// activeJob is a job this runner claimed.
type activeJob struct {
	object string
	cancel context.CancelCauseFunc
}

func (r *Runner) init() {
	r.once.Do(func() {
		r.active = map[string]*activeJob{}
		r.wake = make(chan struct{}, 1)
		r.changed = make(chan struct{})
		r.closing = make(chan struct{})
		r.runDone = make(chan struct{})
	})
}

func (r *Runner) log() *slog.Logger    { return cmp.Or(r.Log, slog.Default()) }
func (r *Runner) concurrency() int     { return cmp.Or(max(r.Concurrency, 0), DefaultConcurrency) }
func (r *Runner) grace() time.Duration { return cmp.Or(r.Grace, DefaultGrace) }
func (r *Runner) poll() time.Duration  { return cmp.Or(r.PollInterval, DefaultPollInterval) }
func (r *Runner) maxLog() int          { return cmp.Or(r.MaxLog, DefaultMaxLog) }

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) newID() string {
	if r.NewID != nil {
		return r.NewID()
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// backoff is the delay before retry number attempt (1, 2, ...).
func (r *Runner) backoff(attempt int) time.Duration {
	d, limit := cmp.Or(r.Backoff, DefaultBackoff), cmp.Or(r.MaxBackoff, DefaultMaxBackoff)
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (r *Runner) planner(kind string) (Planner, error) {
	if p, ok := r.Planners[kind]; ok && p != nil {
		return p, nil
	}
	known := slices.Sorted(maps.Keys(r.Planners))
	return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownKind, kind, strings.Join(known, ", "))
}

// notify wakes every Wait: a job ended.
func (r *Runner) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Submit creates a queued job of kind on object (e.g. "machine/web01")
// with params (marshalled to JSON; nil for none) and returns it. The
// kind's planner sees the job first: bad params are an error here and no
// job is made.
func (r *Runner) Submit(ctx context.Context, kind, object string, params any, createdBy string) (control.Job, error) {
	r.init()
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return control.Job{}, fmt.Errorf("submit %s job: %w", kind, ErrClosed)
	}
	p, err := r.planner(kind)
	if err != nil {
		return control.Job{}, fmt.Errorf("submit job: %w", err)
	}
	now := r.now()
	job := control.Job{
		ID: r.newID(), Kind: kind, Object: object, State: control.JobQueued,
		CreatedBy: createdBy, CreatedAt: now, UpdatedAt: now,
	}
	if params != nil {
		if job.Params, err = json.Marshal(params); err != nil {
			return control.Job{}, fmt.Errorf("submit %s job: params: %w", kind, err)
		}
	}
	specs, err := plan(p, job)
	if err != nil {
		return control.Job{}, fmt.Errorf("submit %s job on %s: %w", kind, object, err)
	}
	for _, s := range specs {
		job.Steps = append(job.Steps, control.Step{Name: s.Name, State: control.StepPending})
	}
	job.Log = []control.LogLine{{At: now, Level: "info", Message: "submitted by " + createdBy}}
	created, err := r.Store.CreateJob(ctx, job)
	if err != nil {
		return control.Job{}, fmt.Errorf("submit %s job: %w", kind, err)
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return created, nil
}

// Run executes queued jobs, oldest first, Concurrency at a time and one
// per object at a time, until Close or until ctx is cancelled. A cancelled
// ctx stops the runner where it is without writing anything more (what a
// crash does); Resume picks the jobs up at the next start. Run returns nil
// when stopped, ErrRunning or ErrClosed when it cannot start.
func (r *Runner) Run(ctx context.Context) error {
	r.init()
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case r.running:
		r.mu.Unlock()
		return ErrRunning
	}
	base, cancel := context.WithCancel(ctx)
	r.running, r.abandon = true, cancel
	r.mu.Unlock()
	defer close(r.runDone)
	defer cancel()

	var wg sync.WaitGroup
	tick := time.NewTicker(r.poll())
	defer tick.Stop()
	for {
		r.claim(base, &wg)
		select {
		case <-base.Done():
		case <-r.closing:
		case <-r.wake:
			continue
		case <-tick.C:
			continue
		}
		break
	}
	wg.Wait()
	return nil
}

// claim starts queued jobs while there is room.
func (r *Runner) claim(base context.Context, wg *sync.WaitGroup) {
	r.mu.Lock()
	room := r.concurrency() - len(r.active)
	r.mu.Unlock()
	if room <= 0 {
		return
	}
	jobs, err := r.Store.ListJobs(base, store.JobFilter{Unfinished: true})
	if err != nil {
		if base.Err() == nil && !r.listErr {
			r.log().Warn("job runner: cannot list jobs; retrying", "err", err)
			r.listErr = true
		}
		return
	}
	if r.listErr {
		r.log().Info("job runner: listing jobs works again")
		r.listErr = false
	}
	slices.SortStableFunc(jobs, func(a, b control.Job) int { return a.CreatedAt.Compare(b.CreatedAt) })
	busy := map[string]bool{}
	r.mu.Lock()
	for _, a := range r.active {
		busy[a.object] = true
	}
	r.mu.Unlock()
	for _, j := range jobs {
		if j.State == control.JobRunning && j.Object != "" {
			busy[j.Object] = true // ours, or left by a dead runner until Resume
		}
	}
	for _, j := range jobs {
		if room == 0 || base.Err() != nil {
			return
		}
		if j.State != control.JobQueued || (j.Object != "" && busy[j.Object]) {
			continue
		}
		busy[j.Object] = true // later jobs on the object wait for this one
		if r.start(base, wg, j) {
			room--
		}
	}
}

// start claims queued job j (stores it running) and runs it in a
// goroutine. It reports whether the job runs.
func (r *Runner) start(base context.Context, wg *sync.WaitGroup, j control.Job) bool {
	// Reserve the job before the store says it is running, so that Cancel
	// and Resume never see it running without an owner.
	jobCtx, cancel := context.WithCancelCause(base)
	r.mu.Lock()
	if _, dup := r.active[j.ID]; dup {
		r.mu.Unlock()
		cancel(nil)
		return false
	}
	r.active[j.ID] = &activeJob{object: j.Object, cancel: cancel}
	r.mu.Unlock()
	release := func() {
		r.mu.Lock()
		delete(r.active, j.ID)
		r.mu.Unlock()
		cancel(nil)
	}

	ex := &execution{r: r, base: base, job: j}
	ex.job.State = control.JobRunning
	ex.job.Attempts++
	ex.logf("info", "started (attempt %d)", ex.job.Attempts)
	if err := ex.persist(); err != nil {
		release()
		return false
	}
	p, err := r.planner(j.Kind)
	if err == nil {
		ex.specs, err = plan(p, ex.job)
	}
	if err == nil {
		err = matchSteps(ex.specs, ex.job.Steps)
	}
	if err != nil {
		ex.finish(control.JobFailed, fmt.Errorf("plan: %w", err))
		release()
		r.notify()
		return false
	}
	r.log().Info("job started", "job", j.ID, "kind", j.Kind, "object", j.Object, "attempt", ex.job.Attempts)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ended := ex.run(jobCtx)
		release()
		if ended {
			r.notify()
		}
	}()
	return true
}

// Resume prepares the jobs a dead runner left running for Run: each is
// queued again at the step it was in, unless that step is not idempotent,
// in which case the job fails with ErrInterrupted and a message that says
// what to check. Steps that succeeded are not run again. Call it once at
// start, before Run; it returns how many jobs were queued again.
func (r *Runner) Resume(ctx context.Context) (int, error) {
	r.init()
	jobs, err := r.Store.ListJobs(ctx, store.JobFilter{Unfinished: true})
	if err != nil {
		return 0, fmt.Errorf("resume jobs: %w", err)
	}
	n := 0
	var errs []error
	for _, j := range jobs {
		r.mu.Lock()
		_, ours := r.active[j.ID]
		r.mu.Unlock()
		if j.State != control.JobRunning || ours {
			continue
		}
		ok, err := r.resume(ctx, j)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			n++
		}
	}
	if n > 0 {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return n, errors.Join(errs...)
}

// resume queues or fails one job left running.
func (r *Runner) resume(ctx context.Context, j control.Job) (bool, error) {
	ex := &execution{r: r, base: ctx, job: j}
	p, err := r.planner(j.Kind)
	if err == nil {
		ex.specs, err = plan(p, j)
	}
	if err == nil {
		err = matchSteps(ex.specs, j.Steps)
	}
	if err != nil {
		return false, ex.finish(control.JobFailed, fmt.Errorf("resume after a restart: %w", err))
	}
	for i := range ex.job.Steps {
		st := &ex.job.Steps[i]
		if st.State != control.StepRunning {
			continue
		}
		if !ex.specs[i].Idempotent {
			st.State, st.EndedAt = control.StepFailed, r.now()
			st.Message = "interrupted by a restart"
			err := fmt.Errorf("step %q: %w while it ran; it is not idempotent, so it was not run again: "+
				"check what it did (the job's log says how far it got), then submit the job again", st.Name, ErrInterrupted)
			r.log().Warn("job interrupted", "job", j.ID, "kind", j.Kind, "step", st.Name)
			return false, ex.finish(control.JobFailed, err)
		}
		st.State = control.StepPending
		st.Message = "interrupted by a restart; runs again"
		ex.logf("warn", "step %s: interrupted by a restart; it is idempotent and runs again", st.Name)
	}
	ex.job.State = control.JobQueued
	ex.logf("info", "queued again after a restart")
	if err := ex.persist(); err != nil {
		return false, fmt.Errorf("resume job %s: %w", j.ID, err)
	}
	r.log().Info("job resumed", "job", j.ID, "kind", j.Kind, "object", j.Object)
	return true, nil
}

// Cancel cancels job id. A job this runner runs has its context cancelled
// (its running step returns, the job ends cancelled; Wait for it); a
// queued job, or one a dead runner left, is recorded cancelled at once. A
// job that ended gives ErrJobEnded.
func (r *Runner) Cancel(ctx context.Context, id string) error {
	r.init()
	for range 5 {
		r.mu.Lock()
		a, ok := r.active[id]
		r.mu.Unlock()
		if ok {
			a.cancel(ErrCancelled)
			return nil
		}
		j, err := r.Store.GetJob(ctx, id)
		if err != nil {
			return fmt.Errorf("cancel job %s: %w", id, err)
		}
		if j.State.Done() {
			return fmt.Errorf("cancel job %s: %w (%s)", id, ErrJobEnded, j.State)
		}
		ex := &execution{r: r, base: ctx, job: j}
		for i := range ex.job.Steps {
			if st := &ex.job.Steps[i]; st.State == control.StepRunning {
				// Left by a dead runner: it may have been half done.
				st.State, st.EndedAt, st.Message = control.StepFailed, r.now(), "interrupted by a restart, then cancelled"
			}
		}
		err = ex.finish(control.JobCancelled, ErrCancelled)
		if errors.Is(err, store.ErrConflict) {
			continue // claimed meanwhile: cancel it where it runs
		}
		if err != nil {
			return fmt.Errorf("cancel job %s: %w", id, err)
		}
		r.notify()
		return nil
	}
	return fmt.Errorf("cancel job %s: %w: it kept changing; try again", id, store.ErrConflict)
}

// Wait returns job id once it has ended (whatever its state), or the job
// as last read and ctx's error.
func (r *Runner) Wait(ctx context.Context, id string) (control.Job, error) {
	r.init()
	tick := time.NewTicker(r.poll())
	defer tick.Stop()
	var last control.Job
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		j, err := r.Store.GetJob(ctx, id)
		if err != nil {
			return last, fmt.Errorf("wait for job %s: %w", id, err)
		}
		if last = j; j.State.Done() {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("wait for job %s: %w", id, ctx.Err())
		case <-changed:
		case <-tick.C:
		}
	}
}

// Close stops Run from starting jobs and waits for the running ones to
// end. If ctx ends first, it abandons them without writing anything more
// (Resume picks them up at the next start) and returns ctx's error.
func (r *Runner) Close(ctx context.Context) error {
	r.init()
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.closing)
	}
	running, abandon := r.running, r.abandon
	r.mu.Unlock()
	if !running {
		return nil
	}
	select {
	case <-r.runDone:
		return nil
	case <-ctx.Done():
		abandon()
		<-r.runDone
		return fmt.Errorf("close job runner: %w; running jobs were left for resumption", ctx.Err())
	}
}
