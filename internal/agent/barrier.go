package agent

import (
	"sync"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
)

// The agent's part of a multi-machine consistency barrier
// (internal/api/consistency.go): on hold it holds the machine's writes
// (they wait; capture.Machine.Hold, released by itself after
// api.HoldMax) and reports held; on bookmark it takes a bookmark
// labelled with the barrier's id, releases the writes and reports the
// bookmark's sequence. A barrier that goes away releases.
type barrier struct {
	c  *controller
	mu sync.Mutex
	r  *control.BarrierReport // the current barrier's report
}

// set acts on the desired barrier (nil: none).
func (b *barrier) set(d *api.DesiredBarrier) {
	m := b.c.a.machine
	b.mu.Lock()
	defer b.mu.Unlock()
	if d == nil {
		if b.r != nil {
			m.Unhold()
			b.r = nil
		}
		return
	}
	if b.r == nil || b.r.ID != d.ID {
		if b.r != nil {
			m.Unhold()
		}
		b.r = &control.BarrierReport{ID: d.ID}
	}
	r := b.r
	switch {
	case d.Phase == api.BarrierHold && !r.Held && !r.Done:
		m.Hold(api.HoldMax)
		r.Held = true
	case d.Phase == api.BarrierBookmark && r.Held && !r.Done:
		seq, err := m.Bookmark(d.ID, false)
		m.Unhold()
		if err != nil {
			r.Error = "bookmark: " + err.Error()
		} else {
			r.Seq, r.Done = seq, true
		}
	case d.Phase == api.BarrierBookmark && !r.Held:
		r.Error = "asked to bookmark a barrier it did not hold"
	default:
		return
	}
	b.c.reportSoon()
}

// report is the current barrier's report, nil when none.
func (b *barrier) report() *control.BarrierReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.r == nil {
		return nil
	}
	r := *b.r
	return &r
}
