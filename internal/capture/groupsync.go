package capture

import (
	"errors"
	"sync"
)

// groupSync runs sync rounds on one goroutine; callers that arrive while a
// round runs share the next one. A round syncs the disks too when any of
// its callers asked for it (a flush); kicks alone only make the journal
// durable.
type groupSync struct {
	mu       sync.Mutex
	cond     *sync.Cond
	req      uint64
	done     uint64
	disks    bool // a pending request wants the disks synced
	err      error
	stopped  bool
	round    func(disks bool) error
	finished chan struct{}
}

func (g *groupSync) init(round func(disks bool) error) {
	g.cond = sync.NewCond(&g.mu)
	g.round = round
	g.finished = make(chan struct{})
	go g.loop()
}

func (g *groupSync) loop() {
	defer close(g.finished)
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		for g.req == g.done && !g.stopped {
			g.cond.Wait()
		}
		if g.req == g.done && g.stopped {
			return
		}
		target, disks := g.req, g.disks
		g.disks = false
		g.mu.Unlock()
		err := g.round(disks)
		g.mu.Lock()
		g.done = target
		if err != nil && g.err == nil {
			g.err = err
		}
		g.cond.Broadcast()
	}
}

// kick asks for a journal-only round without waiting for it.
func (g *groupSync) kick() {
	g.mu.Lock()
	if !g.stopped {
		g.req++
		g.cond.Broadcast()
	}
	g.mu.Unlock()
}

// wait asks for a round (with the disks when disks is true) and waits
// until one that started after the call has finished.
func (g *groupSync) wait(disks bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return errors.New("capture: machine closed")
	}
	g.req++
	g.disks = g.disks || disks
	ticket := g.req
	g.cond.Broadcast()
	for g.done < ticket {
		g.cond.Wait()
	}
	return g.err
}

func (g *groupSync) stop() {
	g.mu.Lock()
	g.stopped = true
	g.cond.Broadcast()
	g.mu.Unlock()
	<-g.finished
}
