package orchestrate

import "errors"

// Errors of the runner, wrapped with context; test them with errors.Is.
var (
	// ErrUnknownKind: no planner is registered for the job's kind.
	ErrUnknownKind = errors.New("unknown job kind")
	// ErrInvalidPlan: a planner returned steps the runner cannot run
	// (no steps, a step without a name or a Run function, two steps with
	// one name, retries of a step that is not idempotent, negative
	// timeouts or retries), or steps that differ from the job's stored
	// ones.
	ErrInvalidPlan = errors.New("invalid job plan")
	// ErrJobEnded: the job already succeeded, failed or was cancelled.
	ErrJobEnded = errors.New("job already ended")
	// ErrClosed: the runner was closed.
	ErrClosed = errors.New("job runner closed")
	// ErrRunning: Run was called while it already runs.
	ErrRunning = errors.New("job runner already running")
	// ErrCancelled is the cause of a job's context when Cancel cancelled
	// it.
	ErrCancelled = errors.New("job cancelled")
	// ErrStepTimeout: a step ran longer than its timeout. It is transient:
	// the step is retried when it has retries left.
	ErrStepTimeout = errors.New("step timed out")
	// ErrStepAbandoned: a step did not return within the grace period
	// after its context was cancelled; the runner stopped waiting for it.
	// It is permanent: the step may still be running.
	ErrStepAbandoned = errors.New("step abandoned")
	// ErrInterrupted: a step that is not idempotent was running when the
	// runner died; it is not run again.
	ErrInterrupted = errors.New("step interrupted by a restart")
	// ErrPermanent is wrapped by Permanent: the step failed in a way a
	// retry cannot fix.
	ErrPermanent = errors.New("permanent")
)

// permanentError marks err permanent while keeping its message.
type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// Permanent marks err as permanent: the runner does not retry the step
// that returned it, whatever its Retries. Nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent says whether err was marked with Permanent (or is
// ErrStepAbandoned or ErrInterrupted).
func IsPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) || errors.Is(err, ErrStepAbandoned) || errors.Is(err, ErrInterrupted)
}
