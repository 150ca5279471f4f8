package replica

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/retention"
)

// pruneSetup applies n segments of per records, one minute apart, with
// bookmarks, and returns a replica whose clock is at the last record.
func pruneSetup(t *testing.T, policy retention.Policy, n, per int) (*model, *Replica, string, *time.Time) {
	t.Helper()
	m := newModel(t, 31, testDisks)
	m.step = time.Minute
	dir := mustCreate(t, testDisks, nil)
	now := new(time.Time)
	o := testOptions(dir)
	o.Retention, o.Now = policy, func() time.Time { return *now }
	r := mustOpen(t, o)
	for range n {
		mustApply(t, r, m.next(per), m.g().at(m.g().sent))
	}
	*now = m.clock
	return m, r, dir, now
}

// mustPrune prunes r, checks the decisions against retention.Apply of the
// points, records the removed points in m and checks what is left.
func mustPrune(t *testing.T, r *Replica, m *model, now time.Time) (keep, remove []retention.Decision) {
	t.Helper()
	before := r.Points()
	keep, remove, err := r.Prune(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var pts []retention.Point
	for _, p := range before {
		pts = append(pts, retention.Point{Seq: p.ID, Time: p.Time, AppConsistent: p.AppConsistent, Tags: p.Tags, InUse: p.InUse, Label: p.Label})
	}
	wantKeep, wantRemove := retention.Apply(pts, r.o.Retention, now)
	if len(keep) != len(wantKeep) || len(remove) != len(wantRemove) {
		t.Fatalf("prune kept %d and removed %d, policy says %d and %d", len(keep), len(remove), len(wantKeep), len(wantRemove))
	}
	for _, d := range remove {
		if len(d.Reasons) == 0 {
			t.Errorf("point %d removed without a reason", d.Seq)
		}
		m.pruned[d.Time.UnixNano()] = true
	}
	mustMatchLog(t, r, true)
	mustCheck(t, r, m)
	return keep, remove
}

// mustMatchLog checks the invariants of the base and the stored segments:
// after a prune the base is at the oldest point; every segment in the log is stored and
// ends after the base, and no other segment file is left.
func mustMatchLog(t *testing.T, r *Replica, pruned bool) {
	t.Helper()
	st, _ := r.snapshot(false)
	if st.Roll != nil {
		t.Fatalf("a roll to %+v is still pending", *st.Roll)
	}
	if pruned && len(st.Points) > 0 && st.Base != st.Points[0].at() {
		t.Errorf("base %+v, oldest point at %+v", st.Base, st.Points[0].at())
	}
	var want []string
	for _, e := range st.Log {
		if !st.Base.before(e.end()) {
			t.Errorf("segment %d ends at or before the base %+v", e.Index, st.Base)
		}
		want = append(want, segName(e.Index))
	}
	ents, err := os.ReadDir(filepath.Join(r.dir, segmentsDir))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Errorf("segment files %v, log %v", got, want)
	}
}

func TestPrune(t *testing.T) {
	policy := retention.Policy{KeepAll: 30 * time.Minute, Hourly: 2, KeepAppConsistent: 2}
	m, r, dir, now := pruneSetup(t, policy, 40, 8) // 320 minutes
	segs := r.Status().Segments
	_, remove := mustPrune(t, r, m, *now)
	if len(remove) == 0 {
		t.Fatal("nothing pruned")
	}
	t.Logf("pruned %d points; %d of %d segments left", len(remove), r.Status().Segments, segs)
	if got := r.Status().Segments; got >= segs {
		t.Errorf("%d segments after pruning, %d before", got, segs)
	}
	if _, remove := mustPrune(t, r, m, *now); len(remove) > 0 {
		t.Errorf("second prune removed %d points, want none", len(remove))
	}
	for round := range 3 {
		for range 10 {
			mustApply(t, r, m.next(8), m.g().at(m.g().sent))
		}
		*now = m.clock
		if _, remove := mustPrune(t, r, m, *now); len(remove) == 0 {
			t.Errorf("round %d: nothing pruned", round)
		}
	}
	r.Close()
	r = mustOpen(t, testOptions(dir))
	mustMatchLog(t, r, true)
	mustCheck(t, r, m)
}

func TestPrunePinned(t *testing.T) {
	ctx := context.Background()
	policy := retention.Policy{KeepAll: 20 * time.Minute}
	m, r, _, now := pruneSetup(t, policy, 20, 8)
	pts := r.Points()
	oldest, middle := pts[0], pts[len(pts)/2]
	vOld, err := r.OpenPoint(ctx, oldest.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer vOld.Close()
	vMid, err := r.OpenPoint(ctx, middle.ID)
	if err != nil {
		t.Fatal(err)
	}
	_, remove := mustPrune(t, r, m, *now)
	if len(remove) == 0 {
		t.Fatal("nothing pruned")
	}
	for _, d := range remove {
		if d.Seq == oldest.ID || d.Seq == middle.ID {
			t.Fatalf("pinned point %d removed: %v", d.Seq, d.Reasons)
		}
	}
	for range 5 {
		mustApply(t, r, m.next(8), m.g().at(m.g().sent))
	}
	mustEqualDisks(t, "pinned oldest point", viewReaders(t, vOld), m.marks[oldest.Time.UnixNano()].disks)
	mustEqualDisks(t, "pinned middle point", viewReaders(t, vMid), m.marks[middle.Time.UnixNano()].disks)

	// Released, the oldest goes and the base rolls up to the middle
	// point, which the still-open view of it must survive.
	vOld.Close()
	*now = m.clock
	mustPrune(t, r, m, *now)
	if r.Points()[0].ID != middle.ID {
		t.Fatalf("oldest point %d after releasing the pin, want the pinned %d", r.Points()[0].ID, middle.ID)
	}
	mustEqualDisks(t, "pinned middle point after a roll", viewReaders(t, vMid), m.marks[middle.Time.UnixNano()].disks)
	vMid.Close()
}

func viewReaders(tb testing.TB, v *View) [][]byte {
	var out [][]byte
	for i, d := range v.Disks() {
		out = append(out, readDisk(tb, v.DiskReaderAt(i), d.Size))
	}
	return out
}

func TestPruneNothing(t *testing.T) {
	tests := []struct {
		name    string
		policy  retention.Policy
		marks   int
		wantErr error
	}{
		{"no points", retention.Policy{KeepAll: time.Minute}, 0, nil},
		{"invalid policy", retention.Policy{}, 6, retention.ErrInvalidPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, r, dir, _ := pruneSetup(t, tt.policy, 0, 0)
			m.bookmarkEvery = tt.marks
			for range 10 {
				mustApply(t, r, m.next(10), m.g().at(m.g().sent))
			}
			files := listDir(t, dir)
			keep, remove, err := r.Prune(context.Background())
			if !errors.Is(err, tt.wantErr) || len(remove) > 0 || tt.marks == 0 && len(keep) > 0 {
				t.Fatalf("prune: keep %d remove %d err %v; want nothing, err %v", len(keep), len(remove), err, tt.wantErr)
			}
			if got := listDir(t, dir); got != files {
				t.Errorf("files changed:\n got %s\nwant %s", got, files)
			}
			mustCheck(t, r, m)
		})
	}
}
