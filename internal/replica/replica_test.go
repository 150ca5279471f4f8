package replica

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/testutil"
)

// TestRebase: after a Rebase the next segment continues from the new
// position, points resume at the first bookmark, and the points from
// before stay exact even where sequence numbers repeat.
func TestRebase(t *testing.T) {
	tests := []struct {
		name   string
		before int // segments applied before the rebase
		lose   int // records the agent made that never reach the replica
		to     func(m *model, applied journal.Pos) journal.Pos
	}{
		{"initial replication", 0, 7, func(m *model, _ journal.Pos) journal.Pos { return m.g().at(len(m.g().recs)) }},
		{"after a gap", 3, 10, func(m *model, _ journal.Pos) journal.Pos { return m.g().at(len(m.g().recs)) }},
		{"journal restarted", 3, 5, func(*model, journal.Pos) journal.Pos { return journal.Pos{} }},
		{"fork", 3, 0, func(_ *model, a journal.Pos) journal.Pos { return journal.Pos{Seq: a.Seq - 3, Chain: 0x1234} }},
		{"same position", 3, 0, func(_ *model, a journal.Pos) journal.Pos { return a }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			m := newModel(t, 21, testDisks)
			dir := mustCreate(t, testDisks, nil)
			r := mustOpen(t, testOptions(dir))
			for range tt.before {
				mustApply(t, r, m.withBookmark(20, "before"), m.g().at(m.g().sent))
			}
			m.gen(tt.lose)
			m.g().sent = len(m.g().recs) // sent, but lost on the way
			pos := tt.to(m, r.Status().Applied)
			if tt.lose > 0 && tt.before > 0 {
				_, err := r.Apply(ctx, m.next(3))
				wantMismatch(true, false)(t, err)
			}
			m.rebase(pos)
			npoints := len(r.Points())
			if err := r.Rebase(ctx, pos, 1); err != nil {
				t.Fatal(err)
			}
			if st := r.Status(); st.Applied != pos || st.Consistent {
				t.Fatalf("after rebase: applied %s consistent %v, want %s false", st.Applied, st.Consistent, pos)
			}
			m.bookmarkEvery = 0
			m.gen(5)
			m.resyncAll()
			m.gen(5)
			mustApply(t, r, m.next(0), m.g().at(m.g().sent))
			if _, err := r.OpenPoint(ctx, 0); !errors.Is(err, ErrNotConsistent) {
				t.Fatalf("open latest while resynchronising: %v, want ErrNotConsistent", err)
			}
			if got := len(r.Points()); got != npoints {
				t.Fatalf("%d points before the first bookmark, want %d", got, npoints)
			}
			mustApply(t, r, m.withBookmark(3, "resync-complete"), m.g().at(m.g().sent))
			if st := r.Status(); !st.Consistent || st.Points != npoints+1 {
				t.Fatalf("after the bookmark: consistent %v, %d points; want true, %d", st.Consistent, st.Points, npoints+1)
			}
			m.bookmarkEvery = 6
			for range 3 {
				mustApply(t, r, m.next(15), m.g().at(m.g().sent))
			}
			mustCheck(t, r, m)
			r.Close()
			mustCheck(t, mustOpen(t, testOptions(dir)), m)
		})
	}
}

// TestResyncRecords: resync records in a continuing journal (the agent's
// journal overflowed) make the replica inconsistent until the next bookmark.
func TestResyncRecords(t *testing.T) {
	m := newModel(t, 5, testDisks)
	m.bookmarkEvery = 0
	r := mustOpen(t, testOptions(mustCreate(t, testDisks, nil)))
	mustApply(t, r, m.withBookmark(10, "first"), m.g().at(m.g().sent))
	m.resyncAll()
	mustApply(t, r, m.next(4), m.g().at(m.g().sent))
	if st := r.Status(); st.Consistent || st.Points != 1 {
		t.Fatalf("during resync: consistent %v, %d points; want false, 1", st.Consistent, st.Points)
	}
	mustApply(t, r, m.withBookmark(2, "done"), m.g().at(m.g().sent))
	if st := r.Status(); !st.Consistent || st.Points != 2 {
		t.Fatalf("after the bookmark: consistent %v, %d points; want true, 2", st.Consistent, st.Points)
	}
	mustCheck(t, r, m)
}

func TestEpochs(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 9, testDisks)
	r := mustOpen(t, testOptions(mustCreate(t, testDisks, nil)))
	mustApply(t, r, m.next(10), m.g().at(m.g().sent))
	m.epoch = 3
	mustApply(t, r, m.next(10), m.g().at(m.g().sent))
	if got := r.Status().Epoch; got != 3 {
		t.Fatalf("epoch %d, want 3", got)
	}
	m.epoch = 2
	m.gen(5)
	if _, err := r.Apply(ctx, m.encode(m.g(), m.g().sent, len(m.g().recs))); !errors.Is(err, ErrFenced) {
		t.Fatalf("segment of epoch 2: %v, want ErrFenced", err)
	}
	if err := r.Rebase(ctx, m.g().at(m.g().sent), 2); !errors.Is(err, ErrFenced) {
		t.Fatalf("rebase with epoch 2: %v, want ErrFenced", err)
	}
	if err := r.Rebase(ctx, r.Status().Applied, 4); err != nil {
		t.Fatal(err)
	}
	m.epoch = 3
	if _, err := r.Apply(ctx, m.encode(m.g(), m.g().sent, len(m.g().recs))); !errors.Is(err, ErrFenced) {
		t.Fatalf("segment of epoch 3 after a rebase with epoch 4: %v, want ErrFenced", err)
	}
}

func TestCreateSeeded(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	var seed []string
	var want [][]byte
	for i, d := range testDisks {
		path := filepath.Join(tmp, d.Name+".seed")
		testutil.WriteImage(t, path, d.Size-int64(i)*4096, 100<<10, uint64(i+1)) // the second seed is short
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		seed, want = append(seed, path), append(want, append(b, make([]byte, d.Size-int64(len(b)))...))
	}
	dir := mustCreate(t, testDisks, seed)
	r := mustOpen(t, testOptions(dir))
	mustEqualDisks(t, "current", currentDisks(t, r), want)
	for i, d := range testDisks {
		mustEqualDisks(t, "base", [][]byte{readFile(t, filepath.Join(dir, baseDir, d.Name+imageExt))}, want[i:i+1])
		mustHaveHole(t, filepath.Join(dir, currentDir, d.Name+imageExt))
	}
	if st := r.Status(); st.Consistent || st.Applied != (journal.Pos{}) || st.Points != 0 {
		t.Fatalf("new replica: %+v, want not consistent at the start", st)
	}
	if _, err := r.OpenPoint(ctx, 0); !errors.Is(err, ErrNotConsistent) {
		t.Fatalf("open latest of a new replica: %v, want ErrNotConsistent", err)
	}
	m := newModel(t, 3, testDisks)
	m.live = clone2(want)
	m.gens[0].start = clone2(want)
	m.gens[0].prev = journal.Pos{Seq: 1000, Chain: 77}
	if err := r.Rebase(ctx, m.gens[0].prev, 1); err != nil {
		t.Fatal(err)
	}
	mustApply(t, r, m.withBookmark(30, "seeded"), m.g().at(m.g().sent))
	mustCheck(t, r, m)
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// mustHaveHole fails unless the image at path has a hole (it was copied
// sparsely).
func mustHaveHole(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b, err := nbd.NewFileBackend(f)
	if err != nil {
		tb.Fatal(err)
	}
	exts, err := b.Extents(context.Background(), 0, b.Size())
	if err != nil {
		tb.Fatal(err)
	}
	if !slices.ContainsFunc(exts, func(e nbd.Extent) bool { return e.Hole }) {
		tb.Errorf("%s has no hole: %+v", path, exts)
	}
}

func TestCreateErrors(t *testing.T) {
	tmp := t.TempDir()
	existing := mustCreate(t, testDisks, nil)
	notEmpty := filepath.Join(tmp, "full")
	os.MkdirAll(filepath.Join(notEmpty, "x"), 0o700)
	big := filepath.Join(tmp, "big.img")
	testutil.WriteImage(t, big, testDisks[0].Size+1, 10, 1)
	tests := []struct {
		name  string
		dir   string
		id    string
		disks []DiskInfo
		seed  []string
		want  error
	}{
		{"exists", existing, testMachine, testDisks, nil, ErrExists},
		{"not empty", notEmpty, testMachine, testDisks, nil, ErrExists},
		{"bad id", filepath.Join(tmp, "a"), "web01", testDisks, nil, ErrMachineID},
		{"no disks", filepath.Join(tmp, "b"), testMachine, nil, nil, nil},
		{"same name twice", filepath.Join(tmp, "c"), testMachine, []DiskInfo{{"a", 512}, {"a", 512}}, nil, nil},
		{"path in name", filepath.Join(tmp, "d"), testMachine, []DiskInfo{{"../a", 512}}, nil, nil},
		{"size 0", filepath.Join(tmp, "e"), testMachine, []DiskInfo{{"a", 0}}, nil, nil},
		{"seed count", filepath.Join(tmp, "f"), testMachine, testDisks, []string{big}, nil},
		{"seed too large", filepath.Join(tmp, "g"), testMachine, testDisks[:1], []string{big}, nil},
		{"seed missing", filepath.Join(tmp, "h"), testMachine, testDisks[:1], []string{filepath.Join(tmp, "nope")}, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Create(tt.dir, tt.id, tt.disks, tt.seed)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if tt.want != ErrExists {
				if _, err := os.Stat(tt.dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind: %v", tt.dir, err)
				}
			}
		})
	}
	if ents, _ := filepath.Glob(filepath.Join(tmp, ".*creating*")); len(ents) > 0 {
		t.Errorf("temporary directories left behind: %v", ents)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	dir := mustCreate(t, testDisks, nil)
	r := mustOpen(t, testOptions(dir))
	if _, err := Open(ctx, testOptions(dir)); !errors.Is(err, ErrLocked) {
		t.Errorf("second open: %v, want ErrLocked", err)
	}
	if _, err := Open(ctx, testOptions(t.TempDir())); !errors.Is(err, ErrNoReplica) {
		t.Errorf("open of an empty directory: %v, want ErrNoReplica", err)
	}
	if _, err := Open(ctx, Options{}); err == nil {
		t.Error("open without a directory: no error")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("apply after close: %v, want ErrClosed", err)
	}
	os.Remove(filepath.Join(dir, currentDir, testDisks[1].Name+imageExt))
	if _, err := Open(ctx, testOptions(dir)); !errors.Is(err, ErrDamaged) {
		t.Errorf("open without an image: %v, want ErrDamaged", err)
	}
}

func TestBlockMap(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 13, testDisks)
	r := mustOpen(t, testOptions(mustCreate(t, testDisks, nil)))
	for range 5 {
		mustApply(t, r, m.next(40), m.g().at(m.g().sent))
	}
	for _, bs := range []int{4096, 64 << 10} {
		for i, d := range testDisks {
			got, err := r.BlockMap(ctx, i, bs)
			if err != nil {
				t.Fatal(err)
			}
			want, err := blockmap.Hasher{BlockSize: bs}.Hash(ctx, bytes.NewReader(m.live[i]), d.Size, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Size != want.Size || !slices.Equal(got.Hashes, want.Hashes) {
				t.Errorf("disk %d, block size %d: block maps differ", i, bs)
			}
		}
	}
	if _, err := r.BlockMap(ctx, 2, 0); err == nil {
		t.Error("block map of disk 2 of 2: no error")
	}
}

func TestTag(t *testing.T) {
	m := newModel(t, 17, testDisks)
	dir := mustCreate(t, testDisks, nil)
	r := mustOpen(t, testOptions(dir))
	mustApply(t, r, m.withBookmark(5, "a"), m.g().at(m.g().sent))
	id := r.Points()[0].ID
	for _, tag := range []string{"tested", "tested", "multi-machine"} {
		if err := r.Tag(id, tag); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Tag(id+1000, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("tag of a missing point: %v, want ErrNotFound", err)
	}
	r.Close()
	r = mustOpen(t, testOptions(dir))
	if got, want := r.Points()[0].Tags, []string{"tested", "multi-machine"}; !slices.Equal(got, want) {
		t.Errorf("tags %q, want %q", got, want)
	}
}
