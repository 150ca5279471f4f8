package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

func TestApplyPoints(t *testing.T) {
	tests := []struct {
		name          string
		seed          uint64
		disks         []DiskInfo
		segments, per int
		bookmarkEvery int
	}{
		{"one disk, few bookmarks", 1, testDisks[:1], 8, 20, 15},
		{"two disks", 2, testDisks, 12, 25, 6},
		{"bookmark-dense", 3, testDisks, 6, 40, 2},
		{"single-record segments", 4, testDisks, 40, 1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, tt.seed, tt.disks)
			m.bookmarkEvery = tt.bookmarkEvery
			dir := mustCreate(t, tt.disks, nil)
			r := mustOpen(t, testOptions(dir))
			var bytesWant int64
			for range tt.segments {
				seg := m.next(tt.per)
				mustApply(t, r, seg, m.g().at(m.g().sent))
				bytesWant += int64(len(seg))
			}
			mustCheck(t, r, m)
			st := r.Status()
			if st.Segments != tt.segments || st.Bytes != bytesWant || st.Points != len(m.wantPoints()) {
				t.Errorf("status: %d segments, %d bytes, %d points; want %d, %d, %d", st.Segments, st.Bytes, st.Points, tt.segments, bytesWant, len(m.wantPoints()))
			}
			last := m.g().recs[len(m.g().recs)-1]
			if !st.LastRecordTime.Equal(timeOf(last.Time)) || st.Applied != m.g().at(m.g().sent) || st.Epoch != 1 {
				t.Errorf("status %+v: want last record time %v, applied %s, epoch 1", st, timeOf(last.Time), m.g().at(m.g().sent))
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			mustCheck(t, mustOpen(t, testOptions(dir)), m)
		})
	}
}

// TestApplyRetries: a segment the replica has, in whole or in part, is
// accepted again; only its new records are applied.
func TestApplyRetries(t *testing.T) {
	tests := []struct {
		name       string
		first      [2]int // records of the first segment applied
		again      [2]int // records of the segment applied next
		wantStored int    // segments stored after both
	}{
		{"same segment twice", [2]int{0, 30}, [2]int{0, 30}, 1},
		{"overlapping", [2]int{0, 30}, [2]int{10, 50}, 2},
		{"entirely before", [2]int{0, 30}, [2]int{5, 20}, 1},
		{"ends at applied", [2]int{0, 30}, [2]int{20, 30}, 1},
		{"empty at applied", [2]int{0, 30}, [2]int{30, 30}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, 7, testDisks)
			m.bookmarkEvery = 5
			m.gen(50)
			g := m.g()
			r := mustOpen(t, testOptions(mustCreate(t, testDisks, nil)))
			mustApply(t, r, m.encode(g, tt.first[0], tt.first[1]), g.at(tt.first[1]))
			want := g.at(max(tt.first[1], tt.again[1]))
			mustApply(t, r, m.encode(g, tt.again[0], tt.again[1]), want)
			g.sent = max(tt.first[1], tt.again[1])
			if got := r.Status().Segments; got != tt.wantStored {
				t.Errorf("%d segments stored, want %d", got, tt.wantStored)
			}
			mustEqualDisks(t, "current", currentDisks(t, r), g.stateAt(g.sent))
			mustCheck(t, r, m)
		})
	}
}

// TestApplyRejects: a segment that does not fit changes nothing.
func TestApplyRejects(t *testing.T) {
	tests := []struct {
		name  string
		seg   func(m *model) []byte
		check func(t *testing.T, err error)
	}{
		{"gap", func(m *model) []byte { return m.encode(m.g(), 25, 30) }, wantMismatch(true, false)},
		{"fork at the applied position", func(m *model) []byte {
			g := forked(m)
			return m.encode(g, 20, 25)
		}, wantMismatch(false, true)},
		{"fork further back", func(m *model) []byte {
			g := forked(m)
			return m.encode(g, 10, 25)
		}, wantMismatch(false, true)},
		{"older epoch", func(m *model) []byte { return withEpoch(m, 1) }, wantIs(ErrFenced)},
		{"other machine", func(m *model) []byte {
			m.id[0] ^= 0xff
			return m.encode(m.g(), 20, 25)
		}, wantIs(ErrMachineID)},
		{"record past the disk", func(m *model) []byte { return outside(m, 0, testDisks[0].Size-10, 11) }, wantIs(ErrDiskRange)},
		{"record on a missing disk", func(m *model) []byte { return outside(m, 5, 0, 1) }, wantIs(ErrDiskRange)},
		{"corrupt", func(m *model) []byte {
			seg := m.encode(m.g(), 20, 25)
			seg[len(seg)/2] ^= 1
			return seg
		}, wantIs(journal.ErrCorrupt)},
		{"not sealed", func(m *model) []byte {
			seg := m.encode(m.g(), 20, 25)
			return seg[:len(seg)-journal.TrailerSize]
		}, wantIs(journal.ErrNotSealed)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t, 11, testDisks)
			m.gen(30)
			m.epoch = 2
			dir := mustCreate(t, testDisks, nil)
			r := mustOpen(t, testOptions(dir))
			mustApply(t, r, m.encode(m.g(), 0, 20), m.g().at(20))
			m.g().sent = 20
			before, files := r.Status(), listDir(t, dir)
			_, err := r.Apply(context.Background(), tt.seg(m))
			tt.check(t, err)
			if after := r.Status(); !sameStatus(before, after) {
				t.Errorf("status changed:\n got %+v\nwant %+v", after, before)
			}
			if got := listDir(t, dir); got != files {
				t.Errorf("files changed:\n got %s\nwant %s", got, files)
			}
			mustEqualDisks(t, "current", currentDisks(t, r), m.g().stateAt(20))
		})
	}
}

func wantMismatch(gap, fork bool) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var pm *journal.PosMismatchError
		if !errors.As(err, &pm) {
			t.Fatalf("error %v, want a *journal.PosMismatchError", err)
		}
		if pm.Gap() != gap || pm.Fork() != fork {
			t.Fatalf("%v: gap %v fork %v, want %v %v", pm, pm.Gap(), pm.Fork(), gap, fork)
		}
	}
}

func wantIs(target error) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Fatalf("error %v, want %v", err, target)
		}
	}
}

// forked returns a generation that shares the first 10 records of m's
// journal and then differs.
func forked(m *model) *gen {
	g := m.g()
	f := &gen{prev: g.prev, recs: append([]journal.Record(nil), g.recs[:10]...), pos: append([]journal.Pos(nil), g.pos[:10]...)}
	m.gens = append(m.gens, f)
	m.gen(20)
	m.gens = m.gens[:len(m.gens)-1]
	return f
}

func withEpoch(m *model, epoch uint64) []byte {
	m.epoch = epoch
	return m.encode(m.g(), 20, 25)
}

// outside returns a segment continuing at record 20 whose only record
// writes n bytes at off of disk.
func outside(m *model, disk uint16, off int64, n int) []byte {
	g := m.g()
	bad := &gen{prev: g.at(20)}
	m.gens = append(m.gens, bad)
	defer func() { m.gens = m.gens[:len(m.gens)-1] }()
	rec := journal.Record{Kind: journal.KindWrite, Disk: disk, Offset: uint64(off), Length: uint64(n), Data: bytes.Repeat([]byte{1}, n)}
	prev := bad.at(0)
	rec.Seq = prev.Seq + 1
	_, crc := journal.AppendRecord(nil, &rec)
	bad.recs, bad.pos = append(bad.recs, rec), append(bad.pos, prev.Next(crc))
	return m.encode(bad, 0, 1)
}

func sameStatus(a, b Status) bool {
	return a.Applied == b.Applied && a.Epoch == b.Epoch && a.Segments == b.Segments && a.Bytes == b.Bytes &&
		a.Points == b.Points && a.Consistent == b.Consistent && a.AppliedAt.Equal(b.AppliedAt)
}

// listDir describes every file of a replica directory with its size.
func listDir(tb testing.TB, dir string) string {
	tb.Helper()
	var out bytes.Buffer
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&out, "%s %d\n", rel, fi.Size())
		if rel == stateName {
			b, err := os.ReadFile(path)
			out.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out.String()
}
