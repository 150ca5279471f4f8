package orchestrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// Planner says the steps of the jobs of one kind. Steps must be a pure
// function of the job (its Kind, Object and Params): the runner calls it
// at Submit, to reject bad input before a job exists, and again whenever
// it starts or resumes the job, and the step names must come out the same
// each time.
type Planner interface {
	Steps(job control.Job) ([]StepSpec, error)
}

// PlannerFunc adapts a function to Planner.
type PlannerFunc func(job control.Job) ([]StepSpec, error)

// Steps calls f.
func (f PlannerFunc) Steps(job control.Job) ([]StepSpec, error) { return f(job) }

// StepSpec is one step of a job, as its planner says it.
type StepSpec struct {
	// Name is unique within the job and stable across restarts: it is
	// how a resumed job finds its steps again.
	Name string
	// Run does the step. It must return when ctx is cancelled (timeout,
	// Cancel, shutdown). An error wrapped with Permanent is not retried.
	Run func(ctx context.Context, r *StepRun) error
	// Timeout bounds one attempt; 0 means Runner.DefaultTimeout.
	Timeout time.Duration
	// Retries is how many more attempts a failed step gets, after a
	// backoff. Only an Idempotent step may have retries.
	Retries int
	// Idempotent says that running the step again after a partial run is
	// harmless. Only an idempotent step is retried, or run again when the
	// runner died while it ran.
	Idempotent bool
}

// plan asks p for job's steps and checks them.
func plan(p Planner, job control.Job) ([]StepSpec, error) {
	specs, err := p.Steps(job)
	if err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("%w: no steps", ErrInvalidPlan)
	}
	seen := make(map[string]bool, len(specs))
	for i, s := range specs {
		switch {
		case strings.TrimSpace(s.Name) == "":
			return nil, fmt.Errorf("%w: step %d has no name", ErrInvalidPlan, i+1)
		case seen[s.Name]:
			return nil, fmt.Errorf("%w: two steps are named %q", ErrInvalidPlan, s.Name)
		case s.Run == nil:
			return nil, fmt.Errorf("%w: step %q has no Run function", ErrInvalidPlan, s.Name)
		case s.Timeout < 0 || s.Retries < 0:
			return nil, fmt.Errorf("%w: step %q: timeout %s and retries %d must not be negative", ErrInvalidPlan, s.Name, s.Timeout, s.Retries)
		case s.Retries > 0 && !s.Idempotent:
			return nil, fmt.Errorf("%w: step %q has %d retries but is not idempotent: a retry could do it twice", ErrInvalidPlan, s.Name, s.Retries)
		}
		seen[s.Name] = true
	}
	return specs, nil
}

// matchSteps checks that the planner still gives the steps stored with
// the job (a newer Standby may plan a kind differently).
func matchSteps(specs []StepSpec, steps []control.Step) error {
	same := len(specs) == len(steps)
	for i := 0; same && i < len(specs); i++ {
		same = specs[i].Name == steps[i].Name
	}
	if same {
		return nil
	}
	names := func(n int, name func(int) string) string {
		s := make([]string, n)
		for i := range s {
			s[i] = name(i)
		}
		return strings.Join(s, ", ")
	}
	return fmt.Errorf("%w: the job's steps are [%s] but its planner now says [%s]; submit it again",
		ErrInvalidPlan, names(len(steps), func(i int) string { return steps[i].Name }),
		names(len(specs), func(i int) string { return specs[i].Name }))
}
