package replica

import (
	"context"
	"errors"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/retention"
)

// TestFence: after Fence the old epoch's segments and rebases are refused,
// the replica is unchanged by them, and the epoch survives a reopen; the
// new epoch applies.
func TestFence(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 41, testDisks)
	dir := mustCreate(t, testDisks, nil)
	r := mustOpen(t, testOptions(dir))
	mustApply(t, r, m.next(20), m.g().at(m.g().sent))
	if err := r.Fence(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := r.Fence(ctx, 1); err != nil { // lower: nothing, no error
		t.Fatal(err)
	}
	applied := r.Status().Applied
	before := currentDisks(t, r)
	if _, err := r.Apply(ctx, m.next(5)); !errors.Is(err, ErrFenced) {
		t.Fatalf("apply of epoch 1 after fencing to 2: %v, want ErrFenced", err)
	}
	if err := r.Rebase(ctx, journal.Pos{}, 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("rebase of epoch 1 after fencing to 2: %v, want ErrFenced", err)
	}
	mustEqualDisks(t, "after refused segments", currentDisks(t, r), before)
	if got := r.Status().Applied; got != applied {
		t.Fatalf("applied %v after refused segments, want %v", got, applied)
	}
	r.Close()
	r = mustOpen(t, testOptions(dir))
	defer r.Close()
	if got := r.Status().Epoch; got != 2 {
		t.Fatalf("epoch after reopen %d, want 2", got)
	}
	if _, err := r.Apply(ctx, m.next(0)); !errors.Is(err, ErrFenced) {
		t.Fatalf("apply of epoch 1 after reopen: %v, want ErrFenced", err)
	}
	// The new epoch (a re-protection's) is taken.
	m.epoch = 2
	g := m.g()
	g.sent = 20 // the 5 refused records are sent again in epoch 2
	mustApply(t, r, m.next(3), g.at(g.sent))
}

// TestKeepOnly: a commit keeps the chosen point and the points in use,
// removes the others, releases the history before the point, and the
// chosen point still reads as it did.
func TestKeepOnly(t *testing.T) {
	ctx := context.Background()
	m, r, _, _ := pruneSetup(t, retention.Policy{KeepAll: 1 << 40}, 12, 6)
	defer r.Close()
	pts := r.Points()
	if len(pts) < 4 {
		t.Fatalf("%d points, want at least 4", len(pts))
	}
	chosen, used := pts[len(pts)/2].ID, pts[1].ID
	want := viewDisks(t, r, chosen)
	v, err := r.OpenPoint(ctx, used) // an export holds it
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	segs := r.Status().Segments
	if _, _, err := r.KeepOnly(ctx, 1<<60); !errors.Is(err, ErrNotFound) {
		t.Fatalf("keep only an unknown point: %v, want ErrNotFound", err)
	}
	if got := len(r.Points()); got != len(pts) {
		t.Fatalf("a refused keep-only changed the points: %d, want %d", got, len(pts))
	}
	keep, remove, err := r.KeepOnly(ctx, chosen)
	if err != nil {
		t.Fatal(err)
	}
	if len(keep) != 2 || len(remove) != len(pts)-2 {
		t.Fatalf("kept %d, removed %d of %d points; want 2 kept", len(keep), len(remove), len(pts))
	}
	var left []uint64
	for _, p := range r.Points() {
		left = append(left, p.ID)
	}
	if len(left) != 2 || left[0] != used || left[1] != chosen {
		t.Fatalf("points left %v, want [%d %d]", left, used, chosen)
	}
	mustEqualDisks(t, "chosen point after keep-only", viewDisks(t, r, chosen), want)
	v.Close()
	if _, remove, err = r.KeepOnly(ctx, chosen); err != nil || len(remove) != 1 {
		t.Fatalf("keep only again once the export is gone: removed %d, %v; want the released point", len(remove), err)
	}
	mustMatchLog(t, r, true)
	if got := r.Status().Segments; got >= segs {
		t.Errorf("%d segments after keep-only, %d before: no history released", got, segs)
	}
	mustEqualDisks(t, "chosen point after release", viewDisks(t, r, chosen), want)
	_ = m
}
