package orchestrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// execution is one job as a runner drives it. Only the goroutine that
// drives it writes it to the store; StepRun changes it in memory (under
// mu) and the driver flushes.
type execution struct {
	r     *Runner
	base  context.Context // cancelled: write nothing more
	specs []StepSpec
	retry bool // persist retries store errors (for running jobs)

	mu    sync.Mutex
	job   control.Job
	dirty bool // progress or log changed since the last write
}

// logf appends a line to the job's log, keeping the newest MaxLog lines.
// The caller holds mu or owns ex alone.
func (ex *execution) logf(level, format string, args ...any) {
	ex.job.Log = append(ex.job.Log, control.LogLine{At: ex.r.now(), Level: level, Message: fmt.Sprintf(format, args...)})
	if n := ex.r.maxLog(); len(ex.job.Log) > n {
		ex.job.Log = append(ex.job.Log[:0:0], ex.job.Log[len(ex.job.Log)-n:]...)
	}
	ex.dirty = true
}

// progress recomputes the job's progress: finished steps count 1, the
// running one its own progress. The caller holds mu.
func (ex *execution) progress() {
	var sum float64
	for _, st := range ex.job.Steps {
		switch st.State {
		case control.StepSucceeded, control.StepSkipped:
			sum++
		case control.StepRunning:
			sum += st.Progress
		}
	}
	if len(ex.job.Steps) > 0 {
		ex.job.Progress = sum / float64(len(ex.job.Steps))
	}
}

// persistOnce writes the job without retrying.
func (ex *execution) persistOnce() error {
	retry := ex.retry
	ex.retry = false
	defer func() { ex.retry = retry }()
	return ex.persist()
}

// persist writes the job. A conflict (someone else changed the job) and a
// cancelled base context end the execution; other store errors are
// retried with a backoff when ex.retry, since a job must not fail because
// the store was briefly away.
func (ex *execution) persist() error {
	for attempt := 1; ; attempt++ {
		if err := ex.base.Err(); err != nil {
			return err
		}
		ex.mu.Lock()
		ex.job.UpdatedAt = ex.r.now()
		j := ex.job
		j.Steps = append([]control.Step(nil), ex.job.Steps...)
		j.Log = append([]control.LogLine(nil), ex.job.Log...)
		ex.dirty = false
		ex.mu.Unlock()
		saved, err := ex.r.Store.UpdateJob(ex.base, j)
		if err == nil {
			ex.mu.Lock()
			ex.job.Version = saved.Version
			ex.mu.Unlock()
			if attempt > 1 {
				ex.r.log().Info("job stored again", "job", j.ID)
			}
			return nil
		}
		ex.mu.Lock()
		ex.dirty = true
		ex.mu.Unlock()
		if !ex.retry || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) || ex.base.Err() != nil {
			if ex.base.Err() == nil {
				ex.r.log().Warn("job runner: cannot store job; leaving it", "job", j.ID, "err", err)
			}
			return fmt.Errorf("store job %s: %w", j.ID, err)
		}
		if attempt == 1 {
			ex.r.log().Warn("job runner: cannot store job; retrying", "job", j.ID, "err", err)
		}
		if !sleep(ex.base, ex.r.backoff(attempt)) {
			return ex.base.Err()
		}
	}
}

// finish ends the job in state with err (nil for success), skips the
// steps that did not run, and writes it.
func (ex *execution) finish(state control.JobState, err error) error {
	ex.mu.Lock()
	now := ex.r.now()
	ex.job.State, ex.job.EndedAt = state, now
	for i := range ex.job.Steps {
		if st := &ex.job.Steps[i]; st.State == control.StepPending {
			st.State = control.StepSkipped
		}
	}
	switch {
	case err == nil:
		ex.job.Progress = 1
		ex.logf("info", "succeeded")
	case state == control.JobCancelled:
		ex.job.Error = "cancelled"
		ex.logf("warn", "cancelled")
	default:
		ex.job.Error = err.Error()
		ex.logf("error", "failed: %v", err)
	}
	ex.mu.Unlock()
	if perr := ex.persist(); perr != nil {
		return perr
	}
	ex.r.log().Info("job ended", "job", ex.job.ID, "kind", ex.job.Kind, "object", ex.job.Object,
		"state", state, "error", ex.job.Error)
	return nil
}

// run drives the job's steps in order, skipping those that succeeded
// before (a resumed job). It reports whether the job ended (false when
// the runner was stopped or lost the job: the store keeps it running).
func (ex *execution) run(jobCtx context.Context) bool {
	ex.retry = true
	for i := range ex.specs {
		if st := ex.job.Steps[i].State; st == control.StepSucceeded || st == control.StepSkipped {
			continue
		}
		state, err := ex.runStep(jobCtx, i)
		switch state {
		case "":
			return false
		case control.JobSucceeded:
			continue
		default:
			return ex.finish(state, err) == nil
		}
	}
	return ex.finish(control.JobSucceeded, nil) == nil
}

// runStep runs step i with its retries. It returns JobSucceeded when the
// step succeeded, JobFailed or JobCancelled with the error to end the job
// with, or "" when the runner stopped or lost the job.
func (ex *execution) runStep(jobCtx context.Context, i int) (control.JobState, error) {
	spec := ex.specs[i]
	ex.mu.Lock()
	resumed := ex.job.Steps[i].Attempts > 0
	ex.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if ex.base.Err() != nil {
			return "", nil
		}
		if jobCtx.Err() != nil { // cancelled between attempts
			return control.JobCancelled, ErrCancelled
		}
		ex.mu.Lock()
		st := &ex.job.Steps[i]
		st.State, st.StartedAt, st.EndedAt = control.StepRunning, ex.r.now(), time.Time{}
		st.Attempts++
		st.Progress, st.Message = 0, ""
		ex.job.Current = i
		ex.progress()
		ex.logf("info", "step %s: started (attempt %d)", spec.Name, st.Attempts)
		run := &StepRun{ex: ex, jobID: ex.job.ID, step: i, attempt: st.Attempts, resumed: resumed && attempt == 1}
		ex.mu.Unlock()
		if ex.persist() != nil {
			return "", nil
		}

		err := ex.call(jobCtx, spec, run)

		ex.mu.Lock()
		st = &ex.job.Steps[i]
		if err == nil {
			st.State, st.Progress, st.EndedAt = control.StepSucceeded, 1, ex.r.now()
			ex.progress()
			ex.logf("info", "step %s: succeeded", spec.Name)
			ex.mu.Unlock()
			if ex.persist() != nil {
				return "", nil
			}
			return control.JobSucceeded, nil
		}
		if ex.base.Err() != nil {
			ex.mu.Unlock()
			return "", nil // stopped: write nothing, Resume decides
		}
		if errors.Is(context.Cause(jobCtx), ErrCancelled) {
			st.State, st.EndedAt, st.Message = control.StepFailed, ex.r.now(), "cancelled"
			ex.logf("warn", "step %s: cancelled: %v", spec.Name, err)
			ex.mu.Unlock()
			return control.JobCancelled, ErrCancelled
		}
		if attempt > spec.Retries || IsPermanent(err) {
			st.State, st.EndedAt, st.Message = control.StepFailed, ex.r.now(), err.Error()
			ex.progress()
			ex.mu.Unlock()
			return control.JobFailed, fmt.Errorf("step %s: %w", spec.Name, err)
		}
		delay := ex.r.backoff(attempt)
		st.State, st.EndedAt = control.StepPending, ex.r.now()
		st.Message = fmt.Sprintf("attempt %d failed: %v; retrying in %s", st.Attempts, err, delay)
		ex.progress()
		ex.logf("warn", "step %s: %s", spec.Name, st.Message)
		ex.mu.Unlock()
		if ex.persist() != nil {
			return "", nil
		}
		sleep(jobCtx, delay)
	}
}

// call runs one attempt of spec in its own goroutine, bounded by its
// timeout, flushing progress and log lines meanwhile. A step that does not
// return within Grace after its context ended is abandoned.
func (ex *execution) call(jobCtx context.Context, spec StepSpec, run *StepRun) error {
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = cmp.Or(ex.r.DefaultTimeout, DefaultTimeout)
	}
	errTimeout := fmt.Errorf("%w after %s", ErrStepTimeout, timeout)
	ctx, cancel := context.WithTimeoutCause(jobCtx, timeout, errTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- Permanent(fmt.Errorf("step panicked: %v", p))
			}
		}()
		done <- spec.Run(ctx, run)
	}()
	flush := time.NewTicker(cmp.Or(ex.r.FlushInterval, DefaultFlushInterval))
	defer flush.Stop()
	result := func(err error) error {
		run.end()
		if err != nil && errors.Is(context.Cause(ctx), ErrStepTimeout) && !errors.Is(err, ErrStepTimeout) {
			return fmt.Errorf("%w: %v", errTimeout, err)
		}
		return err
	}
	for {
		select {
		case err := <-done:
			return result(err)
		case <-flush.C:
			ex.mu.Lock()
			dirty := ex.dirty
			ex.mu.Unlock()
			if dirty {
				// No retry here: a store away must not hold up the
				// timeout; the step's end writes again.
				_ = ex.persistOnce()
			}
		case <-ctx.Done():
			grace := time.NewTimer(ex.r.grace())
			defer grace.Stop()
			select {
			case err := <-done:
				return result(err)
			case <-grace.C:
				run.end()
				return fmt.Errorf("%w: it did not return within %s after %v", ErrStepAbandoned, ex.r.grace(), context.Cause(ctx))
			}
		}
	}
}

// sleep waits d or until ctx ends, and says whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// StepRun is what a running step reports through: progress, a message, log
// lines and the job's result. Its methods are safe for concurrent use and
// do nothing once the attempt has ended (a step abandoned after its
// timeout cannot change the job any more).
type StepRun struct {
	ex      *execution
	jobID   string
	step    int
	attempt int
	resumed bool
	ended   bool // guarded by ex.mu
}

// JobID is the job's ID.
func (r *StepRun) JobID() string { return r.jobID }

// Attempt counts the runs of this step, 1 for the first; retries and runs
// after a restart count.
func (r *StepRun) Attempt() int { return r.attempt }

// Resumed says whether the step may have run partly before (the runner
// died while it ran, or between its attempts): it should look at what is
// there before acting.
func (r *StepRun) Resumed() bool { return r.resumed }

// Progress reports the step's progress, 0..1 (clamped).
func (r *StepRun) Progress(f float64) {
	r.update(func(st *control.Step) { st.Progress = min(max(f, 0), 1) })
}

// Message sets the step's one-line status, e.g. "hydrating disk 2 of 3".
func (r *StepRun) Message(s string) { r.update(func(st *control.Step) { st.Message = s }) }

// Logf appends an info line to the job's log.
func (r *StepRun) Logf(format string, args ...any) { r.line("info", format, args...) }

// Warnf appends a warning line to the job's log.
func (r *StepRun) Warnf(format string, args ...any) { r.line("warn", format, args...) }

// SetResult sets the job's result, e.g. the replica machine's address.
func (r *StepRun) SetResult(s string) {
	r.ex.mu.Lock()
	defer r.ex.mu.Unlock()
	if !r.ended {
		r.ex.job.Result, r.ex.dirty = s, true
	}
}

func (r *StepRun) update(f func(*control.Step)) {
	r.ex.mu.Lock()
	defer r.ex.mu.Unlock()
	if r.ended {
		return
	}
	f(&r.ex.job.Steps[r.step])
	r.ex.progress()
	r.ex.dirty = true
}

func (r *StepRun) line(level, format string, args ...any) {
	r.ex.mu.Lock()
	defer r.ex.mu.Unlock()
	if !r.ended {
		r.ex.logf(level, "%s: %s", r.ex.job.Steps[r.step].Name, fmt.Sprintf(format, args...))
	}
}

func (r *StepRun) end() {
	r.ex.mu.Lock()
	r.ended = true
	r.ex.mu.Unlock()
}
