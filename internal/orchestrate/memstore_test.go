package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// memStore is an in-memory JobStore with the real store's contract:
// versions (ErrConflict), ErrNotFound, ErrExists, copies in and out, a
// cancelled context refused. The real stores are tested elsewhere; this
// one exists because the runner must be tested without them.
type memStore struct {
	mu   sync.Mutex
	jobs map[string]control.Job
	// fail, when set, is returned by the next writes (a store away).
	fail atomic.Pointer[error]
	// writes counts successful writes.
	writes atomic.Int64
}

func newMemStore() *memStore { return &memStore{jobs: map[string]control.Job{}} }

func clone(j control.Job) control.Job {
	j.Steps = slices.Clone(j.Steps)
	j.Log = slices.Clone(j.Log)
	j.Params = slices.Clone(j.Params)
	return j
}

func (s *memStore) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if e := s.fail.Load(); e != nil {
		return *e
	}
	return nil
}

func (s *memStore) CreateJob(ctx context.Context, j control.Job) (control.Job, error) {
	if err := s.check(ctx); err != nil {
		return control.Job{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.jobs[j.ID]; ok {
		return control.Job{}, fmt.Errorf("job %s: %w", j.ID, store.ErrExists)
	}
	j.Version = 1
	s.jobs[j.ID] = clone(j)
	s.writes.Add(1)
	return clone(j), nil
}

func (s *memStore) GetJob(ctx context.Context, id string) (control.Job, error) {
	if err := ctx.Err(); err != nil {
		return control.Job{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return control.Job{}, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	return clone(j), nil
}

func (s *memStore) UpdateJob(ctx context.Context, j control.Job) (control.Job, error) {
	if err := s.check(ctx); err != nil {
		return control.Job{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.jobs[j.ID]
	if !ok {
		return control.Job{}, fmt.Errorf("job %s: %w", j.ID, store.ErrNotFound)
	}
	if old.Version != j.Version {
		return control.Job{}, fmt.Errorf("job %s version %d, stored %d: %w", j.ID, j.Version, old.Version, store.ErrConflict)
	}
	j.Version++
	s.jobs[j.ID] = clone(j)
	s.writes.Add(1)
	return clone(j), nil
}

func (s *memStore) ListJobs(ctx context.Context, f store.JobFilter) ([]control.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []control.Job
	for _, j := range s.jobs {
		if (f.Object != "" && j.Object != f.Object) || (f.Kind != "" && j.Kind != f.Kind) || (f.Unfinished && j.State.Done()) {
			continue
		}
		out = append(out, clone(j))
	}
	slices.SortFunc(out, func(a, b control.Job) int { return b.CreatedAt.Compare(a.CreatedAt) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// failWith makes writes fail with err until failWith(nil).
func (s *memStore) failWith(err error) {
	if err == nil {
		s.fail.Store(nil)
		return
	}
	s.fail.Store(&err)
}

var errStoreDown = errors.New("store unavailable")
