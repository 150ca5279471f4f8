package replica

import (
	"context"
	"errors"
	"testing"
)

func TestApplyBatch(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 77, testDisks)
	o := testOptions(mustCreate(t, testDisks, nil))
	r := mustOpen(t, o)
	defer r.Close()
	mustApply(t, r, m.next(10), m.g().at(m.g().sent))
	// A retry of the segment just applied, then three new ones with points.
	again := m.encode(m.g(), 0, m.g().sent)
	batch := [][]byte{again, m.withBookmark(15, "one"), m.next(7), m.withBookmark(9, "two")}
	pos, err := r.ApplyBatch(ctx, batch)
	if err != nil || pos != m.g().at(m.g().sent) {
		t.Fatalf("batch: %s, %v; want %s", pos, err, m.g().at(m.g().sent))
	}
	mustCheck(t, r, m)
	if got := r.Status().Segments; got != 4 {
		t.Errorf("%d segments stored, want 4 (the retry is not stored again)", got)
	}
	// A gap in the middle: the segments before it are applied, its error
	// returned with their position.
	good := m.next(5)
	want := m.g().at(m.g().sent)
	m.gen(5)
	m.g().sent = len(m.g().recs) // records never sent: the next segment leaves a gap
	gapped := m.next(5)
	pos, err = r.ApplyBatch(ctx, [][]byte{good, gapped})
	if pos != want || err == nil {
		t.Fatalf("batch with a gap: %s, %v; want %s and a gap error", pos, err, want)
	}
}

func TestCrashApplyBatch(t *testing.T) {
	for _, step := range []struct {
		name  string
		after int
	}{{"after-store", 0}, {"after-store", 2}, {"record-applied", 15}, {"after-apply", 0}, {"after-fsync", 0}, {"after-state", 0}} {
		t.Run(step.name, func(t *testing.T) {
			ctx := context.Background()
			m := newModel(t, 78, testDisks)
			o := testOptions(mustCreate(t, testDisks, nil))
			r := mustOpen(t, o)
			mustApply(t, r, m.next(20), m.g().at(m.g().sent))
			ack := m.g().sent
			failAt(t, step.name, step.after)
			batch := [][]byte{m.next(10), m.withBookmark(10, "p"), m.next(10)}
			if _, err := r.ApplyBatch(ctx, batch); !errors.Is(err, errCrash) {
				t.Fatalf("batch: %v, want the simulated crash", err)
			}
			crash(r)
			r = mustReopen(t, o, m, ack)
			defer r.Close()
			mustApply(t, r, m.next(5), m.g().at(m.g().sent))
			mustCheck(t, r, m)
		})
	}
}
