package twosite

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/loadgen"
)

// TestWritesDuringInitialCopy: initial replication copies the disks
// straight into a new replica while the machine writes (a slow WAN makes
// the copy take seconds). Every recovery point is then a consistent cut of
// the writes, and the latest state equals the source: writes that the copy
// read too early, or not at all, arrive through the journal after it.
func TestWritesDuringInitialCopy(t *testing.T) {
	ctx := context.Background()
	h := Start(t, Options{Disks: []int64{32 << 20, 16 << 20}, Fill: fillHalf(7), Bandwidth: 4 << 20, Logger: testLogger(t)})
	g, err := loadgen.NewGenerator([]loadgen.Disk{h.DialDisk(ctx, 0), h.DialDisk(ctx, 1)}, loadgen.Options{Seed: 9, MaxBlocks: 16, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Slower than the link: the journal holds the writes meanwhile.
		for wctx.Err() == nil {
			if err := g.Run(wctx, 10); err != nil && wctx.Err() == nil {
				runErr = err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// Watch the replica itself (the agent's status may wait behind its
	// capture lock on a loaded machine).
	copying := func() bool {
		r, _, ok := h.Target.Lookup(h.Agent.Machine().ID())
		return ok && r.Status().Copying
	}
	h.WaitFor(60*time.Second, "the copy to start", copying)
	copyStarted := time.Now()
	n0 := len(g.Log().Writes)
	h.WaitFor(60*time.Second, "the copy to end", func() bool { return !copying() })
	n1 := len(g.Log().Writes)
	stop()
	wg.Wait()
	if n1 <= n0 {
		t.Errorf("no write while the replica was copying (%d writes before, %d after)", n0, n1)
	}
	h.WaitProtected(120 * time.Second)
	if runErr != nil {
		t.Fatal(runErr)
	}
	r := h.Replication()
	if r.ResyncMode != "copy" {
		t.Fatalf("initial replication went as %q, want copy", r.ResyncMode)
	}
	if since, err := time.Parse(time.RFC3339Nano, r.StateSince); err != nil || since.Before(copyStarted) || since.After(time.Now()) {
		t.Errorf("protected since %q (%v): want a time after the copy started (%v)", r.StateSince, err, copyStarted)
	}
	last, err := h.Agent.Machine().Bookmark("after-copy", false)
	if err != nil {
		t.Fatal(err)
	}
	h.WaitApplied(60*time.Second, last)
	// The master target seeds the base images from the copy in the
	// background; points stay exact meanwhile and after.
	h.WaitFor(60*time.Second, "the base images seeded", func() bool { return h.Replica().Status().SeedLeft == 0 })
	log := g.Log()
	rep := h.Replica()
	points := rep.Points()
	if len(points) < 2 {
		t.Fatalf("%d points, want resync-complete and after-copy at least", len(points))
	}
	for _, p := range points {
		im, done := images(t, rep, p.ID)
		if _, err := loadgen.Check(log, im); err != nil {
			t.Errorf("point %d (%s): not a consistent cut: %v", p.ID, p.Label, err)
		}
		done()
	}
	mustEqualLatest(t, h)
	st := h.Target.Status()
	if len(st) != 1 || st[0].CopyBytes == 0 {
		t.Errorf("target status %+v: want one machine with copy bytes", st)
	}
	t.Logf("%d writes, %d points, replication %+v", len(log.Writes), len(points), r)
}
