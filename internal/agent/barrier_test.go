package agent

import (
	"context"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/nbd"
)

// The agent's part of a consistency barrier: at hold, a write through the
// agent's export waits (nothing is journaled); at bookmark, the bookmark
// comes before the held write, which then goes on; a bookmark phase of a
// barrier not held is an error, not a bookmark.
func TestBarrierHoldsWritesUntilTheBookmark(t *testing.T) {
	ta := startTestAgent(t, []int64{4 << 20}, nil)
	b := &barrier{c: &controller{a: ta.Agent, kick: make(chan struct{}, 1)}}
	c, err := nbd.Dial(context.Background(), "unix", ta.cfg.Listen.Unix, "disk0", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := ta.Machine()

	b.set(&api.DesiredBarrier{ID: "consistent-p-1", Phase: api.BarrierHold})
	if r := b.report(); r == nil || !r.Held || r.Done || !m.Held() {
		t.Fatalf("after hold: %+v, held %v", r, m.Held())
	}
	before := m.Stats().Pos.Seq
	wrote := make(chan error, 1)
	go func() { _, err := c.WriteAt([]byte("held write"), 0); wrote <- err }()
	select {
	case err := <-wrote:
		t.Fatalf("a write returned while the barrier held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if m.Stats().Pos.Seq != before {
		t.Fatal("something was journaled while held")
	}
	b.set(&api.DesiredBarrier{ID: "consistent-p-1", Phase: api.BarrierBookmark})
	r := b.report()
	if r == nil || !r.Done || r.Seq != before+1 || r.Error != "" {
		t.Fatalf("after bookmark: %+v (journal was at %d)", r, before)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if s := m.Stats().Pos.Seq; s != r.Seq+1 || m.Held() {
		t.Fatalf("the held write is at %d, the bookmark at %d; held %v", s, r.Seq, m.Held())
	}
	// Asked to bookmark a barrier it never held: an error, no bookmark.
	b.set(&api.DesiredBarrier{ID: "consistent-p-2", Phase: api.BarrierBookmark})
	if r := b.report(); r == nil || r.Done || r.Error == "" {
		t.Fatalf("a bookmark without a hold: %+v", r)
	}
	b.set(nil)
	if b.report() != nil || m.Held() {
		t.Fatal("the barrier went away but its report or hold stayed")
	}
}
