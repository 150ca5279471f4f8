package server

import (
	"context"
	"sync"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// changes wakes the jobs that wait for a machine to change (waitMachine):
// the store the server hands to the API is wrapped so that every machine
// written through it closes the current channel. Jobs then see an agent's
// or a master target's report at once, not at their next poll.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

func (c *changes) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *changes) notify() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// notifyingStore is a store.Store that tells changes when a machine is
// written.
type notifyingStore struct {
	store.Store
	c *changes
}

func (n notifyingStore) CreateMachine(ctx context.Context, m control.Machine) (control.Machine, error) {
	m, err := n.Store.CreateMachine(ctx, m)
	if err == nil {
		n.c.notify()
	}
	return m, err
}

func (n notifyingStore) UpdateMachine(ctx context.Context, m control.Machine) (control.Machine, error) {
	m, err := n.Store.UpdateMachine(ctx, m)
	if err == nil {
		n.c.notify()
	}
	return m, err
}

func (n notifyingStore) UpdateJob(ctx context.Context, j control.Job) (control.Job, error) {
	j, err := n.Store.UpdateJob(ctx, j)
	if err == nil {
		n.c.notify() // a plan run waits for its machines' jobs
	}
	return j, err
}

func (n notifyingStore) UpdatePlanRun(ctx context.Context, r control.PlanRun) (control.PlanRun, error) {
	r, err := n.Store.UpdatePlanRun(ctx, r)
	if err == nil {
		n.c.notify() // an operator answered a manual step
	}
	return r, err
}
