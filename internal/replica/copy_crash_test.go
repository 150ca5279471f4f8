package replica

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/retention"
)

// TestCrashBeginCopy crashes at each of BeginCopy's durable steps, over a
// base that is not lazy and over a lazy one with seeded blocks. After Open
// the copy has begun whole (empty base and bitmaps of the new generation,
// no segments) or not at all, and the agent's next BeginCopy, copy and
// segments make exact points.
func TestCrashBeginCopy(t *testing.T) {
	tests := []struct {
		step  string
		after int
		begun bool // state.json was written
	}{
		{"before-rename", 0, false}, // of state.json
		{"copy-after-state", 0, true},
		{"copy-after-reset", 0, true},
		{"before-rename", 1, true}, // of the first bitmap
		{"before-rename", 2, true}, // of the second bitmap
		{"copy-after-maps", 0, true},
	}
	for _, lazy := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s %d lazy %v", tt.step, tt.after, lazy), func(t *testing.T) {
				ctx := context.Background()
				o := testOptions(mustCreate(t, testDisks, nil))
				r := mustOpen(t, o)
				var pre *model
				if lazy { // a copy, then segments that seed blocks
					pre = copyModel(t, 70, testDisks, journal.Pos{Seq: 50, Chain: 5})
					mustCopy(t, r, pre)
				} else {
					pre = newModel(t, 70, testDisks)
				}
				pre.bookmarkEvery = 0
				for range 3 {
					mustApply(t, r, pre.next(20), pre.g().at(pre.g().sent))
				}
				if n := seededBlocks(r); lazy && n[0] == 0 {
					t.Fatal("nothing seeded before the second copy")
				}
				before := r.Status()
				s, _ := r.snapshot(false)
				gen := s.BaseGen
				failAt(t, tt.step, tt.after)
				if err := r.BeginCopy(ctx, copyPos, 1); !errors.Is(err, errCrash) {
					t.Fatalf("begin copy: %v, want the simulated crash", err)
				}
				if err := r.BeginCopy(ctx, copyPos, 1); !errors.Is(err, ErrBroken) {
					t.Fatalf("begin copy after a failure: %v, want ErrBroken", err)
				}
				crash(r)
				noFail()
				r = mustOpen(t, o)
				st := r.Status()
				if !tt.begun {
					if !sameStatus(before, st) || st.Copying {
						t.Fatalf("after the crash:\n got %+v\nwant %+v", st, before)
					}
					mustEqualDisks(t, "current", currentDisks(t, r), pre.g().stateAt(pre.g().sent))
				} else {
					if !st.Copying || st.Segments != 0 || st.Applied != copyPos || st.Points != 0 {
						t.Fatalf("after the crash: %+v, want a copy begun at %s", st, copyPos)
					}
					mustBeEmptyBase(t, r)
				}
				mustMatchLog(t, r, false)
				// The agent begins again.
				m := copyModel(t, 71, testDisks, copyPos)
				mustCopy(t, r, m)
				if tt.begun {
					gen++ // the one that crashed, then this one
				}
				if s, _ := r.snapshot(false); s.BaseGen != gen+1 {
					t.Errorf("base_gen %d after the second BeginCopy, want %d", s.BaseGen, gen+1)
				}
				mustApply(t, r, m.withBookmark(20, "a"), m.g().at(m.g().sent))
				for range 3 {
					mustApply(t, r, m.next(20), m.g().at(m.g().sent))
				}
				mustCheck(t, r, m)
			})
		}
	}
}

// lazySetup makes a replica that a copy filled, with points after it
// and few blocks seeded.
func lazySetup(t *testing.T, seed uint64) (*model, *Replica, Options) {
	t.Helper()
	m := copyModel(t, seed, testDisks, copyPos)
	m.step = time.Minute
	o := testOptions(mustCreate(t, testDisks, nil))
	r := mustOpen(t, o)
	mustCopy(t, r, m)
	m.bookmarkEvery = 3
	mustApply(t, r, m.withBookmark(4, "first"), m.g().at(m.g().sent))
	mustApply(t, r, m.next(4), m.g().at(m.g().sent))
	if n := seededBlocks(r); n[0]+n[1] > 20 {
		t.Fatalf("seeded blocks %v: too many for the crash to seed more", n)
	}
	return m, r, o
}

// TestCrashSeed crashes Apply and ApplyBatch over a lazy base at each
// step, seeding's included. After Open nothing acknowledged is lost,
// current is the state after some record received, and every point (whose
// views read the seeded blocks from the base) is exact; a redo does not
// copy blocks again that current has since changed.
func TestCrashSeed(t *testing.T) {
	tests := []struct {
		step  string
		after int
		batch bool
	}{
		{"after-store", 0, false},
		{"after-seed-data", 0, false},
		{"after-seed-map", 0, false},
		{"record-applied", 0, false},
		{"record-applied", 9, false},
		{"after-apply", 0, false},
		{"after-fsync", 0, false},
		{"after-state", 0, false},
		{"after-store", 1, true},
		{"after-seed-data", 0, true},
		{"after-seed-map", 0, true},
		{"record-applied", 3, true},
		{"record-applied", 15, true},
		{"after-apply", 0, true},
		{"after-state", 0, true},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s %d", tt.step, tt.after)
		if tt.batch {
			name += " batch"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			m, r, o := lazySetup(t, 72)
			ack := m.g().sent
			failAt(t, tt.step, tt.after)
			var err error
			if tt.batch {
				_, err = r.ApplyBatch(ctx, [][]byte{m.next(12), m.withBookmark(12, "b"), m.next(12)})
			} else {
				_, err = r.Apply(ctx, m.withBookmark(20, "b"))
			}
			if !errors.Is(err, errCrash) {
				t.Fatalf("apply: %v, want the simulated crash", err)
			}
			crash(r)
			r = mustReopen(t, o, m, ack)
			if got, want := r.Status().Applied, m.g().at(len(m.g().recs)); !tt.batch && got != want {
				t.Errorf("the stored segments were not redone: applied %s, want %s", got, want)
			}
			for range 4 {
				mustApply(t, r, m.next(15), m.g().at(m.g().sent))
			}
			mustCheck(t, r, m)
			r.o.Retention = retention.Policy{KeepAll: 10 * time.Minute}
			r.o.Now = func() time.Time { return m.clock }
			mustPrune(t, r, m, m.clock)
		})
	}
}

// TestCrashDuringSeedRedo: Open may crash while it seeds for, and applies,
// a stored segment; the next Open finishes.
func TestCrashDuringSeedRedo(t *testing.T) {
	for _, step := range []struct {
		name  string
		after int
	}{{"after-seed-data", 0}, {"after-seed-map", 0}, {"record-applied", 6}} {
		t.Run(step.name, func(t *testing.T) {
			ctx := context.Background()
			m, r, o := lazySetup(t, 73)
			ack := m.g().sent
			failAt(t, "after-store", 0)
			if _, err := r.Apply(ctx, m.withBookmark(25, "b")); !errors.Is(err, errCrash) {
				t.Fatalf("apply: %v, want the simulated crash", err)
			}
			crash(r)
			failAt(t, step.name, step.after)
			if _, err := Open(ctx, o); !errors.Is(err, errCrash) {
				t.Fatalf("open: %v, want the simulated crash", err)
			}
			r = mustReopen(t, o, m, ack)
			mustApply(t, r, m.next(10), m.g().at(m.g().sent))
			mustCheck(t, r, m)
		})
	}
}

// TestCrashEndCopy: a copy whose end was not recorded is still under way
// after Open; the agent starts again with a Rebase. A state.json that
// could not be written leaves the copy under way in the same process,
// and EndCopy may be retried.
func TestCrashEndCopy(t *testing.T) {
	ctx := context.Background()
	t.Run("copy-after-sync", func(t *testing.T) {
		m := copyModel(t, 74, testDisks, copyPos)
		o := testOptions(mustCreate(t, testDisks, nil))
		r := mustOpen(t, o)
		if err := r.BeginCopy(ctx, copyPos, 1); err != nil {
			t.Fatal(err)
		}
		writeCopy(t, r, m.live)
		failAt(t, "copy-after-sync", 0)
		if err := r.EndCopy(ctx); !errors.Is(err, errCrash) {
			t.Fatalf("end copy: %v, want the simulated crash", err)
		}
		crash(r)
		noFail()
		r = mustOpen(t, o)
		if st := r.Status(); !st.Copying || st.Consistent {
			t.Fatalf("after the crash: copying %v consistent %v, want true false", st.Copying, st.Consistent)
		}
		seg := m.next(5)
		if _, err := r.Apply(ctx, seg); !errors.Is(err, ErrCopying) {
			t.Fatalf("apply: %v, want ErrCopying", err)
		}
		if err := r.Rebase(ctx, copyPos, 1); err != nil {
			t.Fatal(err)
		}
		mustApply(t, r, seg, m.g().at(m.g().sent))
		mustApply(t, r, m.withBookmark(20, "a"), m.g().at(m.g().sent))
		mustCheck(t, r, m)
	})
	t.Run("state not written", func(t *testing.T) {
		m := copyModel(t, 75, testDisks, copyPos)
		r := mustOpen(t, testOptions(mustCreate(t, testDisks, nil)))
		if err := r.BeginCopy(ctx, copyPos, 1); err != nil {
			t.Fatal(err)
		}
		writeCopy(t, r, m.live)
		failAt(t, "before-rename", 0)
		if err := r.EndCopy(ctx); !errors.Is(err, errCrash) {
			t.Fatalf("end copy: %v, want the simulated failure", err)
		}
		noFail()
		if !r.Status().Copying {
			t.Fatal("not copying after a failed EndCopy")
		}
		if err := r.EndCopy(ctx); err != nil {
			t.Fatal(err)
		}
		mustApply(t, r, m.withBookmark(20, "a"), m.g().at(m.g().sent))
		mustCheck(t, r, m)
	})
}
