package replica

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/retention"
)

var errCrash = errors.New("simulated crash")

// failAt makes failpoint name fail from its (after+1)th call on, until the
// test ends or noFail.
func failAt(t *testing.T, name string, after int) {
	t.Helper()
	n := 0
	failpoint = func(s string) error {
		if s != name {
			return nil
		}
		if n++; n > after {
			return errCrash
		}
		return nil
	}
	t.Cleanup(noFail)
}

func noFail() { failpoint = func(string) error { return nil } }

// crash drops r's files as a dying process would: no state is written, the
// directory lock is released.
func crash(r *Replica) {
	r.curMu.Lock()
	r.release()
	r.curMu.Unlock()
}

// mustReopen opens dir again after a crash and syncs the model with the
// applied position, which must be at or after the acknowledged record ack:
// nothing acknowledged is lost, and current is exactly the state after
// some record the replica received.
func mustReopen(t *testing.T, o Options, m *model, ack int) *Replica {
	t.Helper()
	noFail()
	r := mustOpen(t, o)
	g, applied := m.g(), r.Status().Applied
	k := -1
	for i := ack; i <= len(g.recs); i++ {
		if g.at(i) == applied {
			k = i
		}
	}
	if k < 0 {
		t.Fatalf("applied %s after the crash is not a position at or after the acknowledged %s", applied, g.at(ack))
	}
	g.sent = k
	mustEqualDisks(t, "current after the crash", currentDisks(t, r), g.stateAt(k))
	mustCheck(t, r, m)
	return r
}

func TestCrashApply(t *testing.T) {
	tests := []struct {
		step  string
		after int
	}{
		{"after-store", 0},
		{"record-applied", 0},
		{"record-applied", 7},
		{"after-apply", 0},
		{"after-fsync", 0},
		{"after-state", 0},
		{"before-rename", 1}, // of state.json
	}
	for _, tt := range tests {
		t.Run(tt.step, func(t *testing.T) {
			ctx := context.Background()
			m := newModel(t, 41, testDisks)
			o := testOptions(mustCreate(t, testDisks, nil))
			r := mustOpen(t, o)
			for range 3 {
				mustApply(t, r, m.next(20), m.g().at(m.g().sent))
			}
			ack := m.g().sent
			failAt(t, tt.step, tt.after)
			seg := m.next(20)
			if _, err := r.Apply(ctx, seg); !errors.Is(err, errCrash) {
				t.Fatalf("apply: %v, want the simulated crash", err)
			}
			if _, err := r.Apply(ctx, seg); !errors.Is(err, ErrBroken) {
				t.Fatalf("apply after a failure: %v, want ErrBroken", err)
			}
			crash(r)
			r = mustReopen(t, o, m, ack)
			if got, want := r.Status().Applied, m.g().at(len(m.g().recs)); got != want {
				t.Errorf("the stored segment was not redone: applied %s, want %s", got, want)
			}
			mustApply(t, r, m.next(10), m.g().at(m.g().sent))
			mustCheck(t, r, m)
		})
	}
}

// TestApplyStoreFails: a segment that could not be stored changed nothing,
// and the same Replica takes it again.
func TestApplyStoreFails(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 45, testDisks)
	dir := mustCreate(t, testDisks, nil)
	r := mustOpen(t, testOptions(dir))
	mustApply(t, r, m.next(20), m.g().at(m.g().sent))
	files := listDir(t, dir)
	failAt(t, "before-rename", 0)
	seg := m.next(20)
	if _, err := r.Apply(ctx, seg); !errors.Is(err, errCrash) {
		t.Fatalf("apply: %v, want the simulated failure", err)
	}
	if got := listDir(t, dir); got != files {
		t.Errorf("files changed:\n got %s\nwant %s", got, files)
	}
	noFail()
	mustApply(t, r, seg, m.g().at(m.g().sent))
	mustCheck(t, r, m)
}

// TestCrashDuringRedo: Open itself may crash while it redoes a segment.
func TestCrashDuringRedo(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 43, testDisks)
	o := testOptions(mustCreate(t, testDisks, nil))
	r := mustOpen(t, o)
	mustApply(t, r, m.next(20), m.g().at(m.g().sent))
	ack := m.g().sent
	failAt(t, "after-apply", 0)
	if _, err := r.Apply(ctx, m.next(30)); !errors.Is(err, errCrash) {
		t.Fatalf("apply: %v, want the simulated crash", err)
	}
	crash(r)
	failAt(t, "record-applied", 4)
	if _, err := Open(ctx, o); !errors.Is(err, errCrash) {
		t.Fatalf("open: %v, want the simulated crash", err)
	}
	mustReopen(t, o, m, ack)
}

func TestCrashPrune(t *testing.T) {
	tests := []struct {
		step    string
		after   int
		reopen  bool // crash and open again; else prune again in the same process
		removed bool // the failed prune removed points
	}{
		{"prune-after-points", 0, true, true},
		{"record-applied", 3, true, true},
		{"prune-after-base", 0, true, true},
		{"prune-after-state", 0, true, true},
		{"record-applied", 3, false, true},
		{"prune-after-base", 0, false, true},
		{"prune-after-state", 0, false, true},
	}
	for _, tt := range tests {
		name := tt.step
		if !tt.reopen {
			name += " in process"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			policy := retention.Policy{KeepAll: 40 * time.Minute, Hourly: 2}
			m, r, dir, now := pruneSetup(t, policy, 30, 8)
			remove := wantRemoved(r, *now)
			if len(remove) == 0 {
				t.Fatal("the policy removes nothing")
			}
			failAt(t, tt.step, tt.after)
			if _, _, err := r.Prune(ctx); !errors.Is(err, errCrash) {
				t.Fatalf("prune: %v, want the simulated crash", err)
			}
			for _, d := range remove {
				m.pruned[d.Time.UnixNano()] = true
			}
			if tt.reopen {
				crash(r)
				o := testOptions(dir)
				o.Retention, o.Now = policy, func() time.Time { return *now }
				r = mustReopen(t, o, m, m.g().sent)
			} else {
				noFail()
				if _, remove, err := r.Prune(ctx); err != nil || len(remove) > 0 {
					t.Fatalf("prune again: removed %d, %v; want 0, nil", len(remove), err)
				}
			}
			mustMatchLog(t, r, true)
			mustCheck(t, r, m)
			mustApply(t, r, m.next(10), m.g().at(m.g().sent))
			mustCheck(t, r, m)
		})
	}
}

// wantRemoved is what the policy removes from r's points now.
func wantRemoved(r *Replica, now time.Time) []retention.Decision {
	var pts []retention.Point
	for _, p := range r.Points() {
		pts = append(pts, retention.Point{Seq: p.ID, Time: p.Time, AppConsistent: p.AppConsistent, InUse: p.InUse, Label: p.Label})
	}
	_, remove := retention.Apply(pts, r.o.Retention, now)
	return remove
}

// TestOpenRepairs: what a crash leaves in the directory, and what Open
// does with it.
func TestOpenRepairs(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, dir string, next []byte)
		wantErr error
	}{
		{"garbage temporary files", func(t *testing.T, dir string, _ []byte) {
			writeFile(t, filepath.Join(dir, segmentsDir, "."+segName(4)+"-123"+tmpExt), []byte("garbage"))
			writeFile(t, filepath.Join(dir, "."+stateName+"-9"+tmpExt), []byte(`{"version": 1, "machine_id`))
			writeFile(t, filepath.Join(dir, currentDir, "x"+tmpExt), nil)
		}, nil},
		{"torn unrecorded segment", func(t *testing.T, dir string, next []byte) {
			writeFile(t, filepath.Join(dir, segmentsDir, segName(4)), next[:len(next)/2])
		}, nil},
		{"garbled unrecorded segment", func(t *testing.T, dir string, next []byte) {
			b := append([]byte(nil), next...)
			b[journal.HeaderSize+3] ^= 0x40
			writeFile(t, filepath.Join(dir, segmentsDir, segName(4)), b)
		}, nil},
		{"unrecorded segment past the next", func(t *testing.T, dir string, next []byte) {
			writeFile(t, filepath.Join(dir, segmentsDir, segName(5)), next)
		}, nil},
		{"released segment left", func(t *testing.T, dir string, next []byte) {
			writeFile(t, filepath.Join(dir, segmentsDir, segName(0)), next)
		}, nil},
		{"recorded segment truncated", func(t *testing.T, dir string, _ []byte) {
			path := filepath.Join(dir, segmentsDir, segName(2))
			if err := os.Truncate(path, 100); err != nil {
				t.Fatal(err)
			}
		}, ErrDamaged},
		{"recorded segment missing", func(t *testing.T, dir string, _ []byte) {
			os.Remove(filepath.Join(dir, segmentsDir, segName(3)))
		}, ErrDamaged},
		{"state garbled", func(t *testing.T, dir string, _ []byte) {
			writeFile(t, filepath.Join(dir, stateName), []byte("{"))
		}, ErrDamaged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, 47, testDisks)
			dir := mustCreate(t, testDisks, nil)
			o := testOptions(dir)
			r := mustOpen(t, o)
			for range 3 {
				mustApply(t, r, m.next(20), m.g().at(m.g().sent))
			}
			ack := m.g().sent
			next := m.next(20)
			m.g().sent = ack
			crash(r)
			tt.damage(t, dir, next)
			if tt.wantErr != nil {
				if _, err := Open(context.Background(), o); !errors.Is(err, tt.wantErr) {
					t.Fatalf("open: %v, want %v", err, tt.wantErr)
				}
				return
			}
			r = mustReopen(t, o, m, ack)
			if got := r.Status().Applied; got != m.g().at(ack) {
				t.Errorf("applied %s, want %s", got, m.g().at(ack))
			}
			mustMatchLog(t, r, false)
			if files := listDir(t, dir); strings.Contains(files, tmpExt) {
				t.Errorf("temporary files left:\n%s", files)
			}
			mustApply(t, r, next, m.g().at(len(m.g().recs)))
			m.g().sent = len(m.g().recs)
			mustCheck(t, r, m)
		})
	}
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

func TestCrashCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	failAt(t, "create-before-rename", 0)
	if err := Create(dir, testMachine, testDisks, nil); !errors.Is(err, errCrash) {
		t.Fatalf("create: %v, want the simulated crash", err)
	}
	ents, _ := os.ReadDir(filepath.Dir(dir))
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	noFail()
	if err := Create(dir, testMachine, testDisks, nil); err != nil {
		t.Fatal(err)
	}
}
