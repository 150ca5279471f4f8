package capture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/testutil"
)

func mustImage(tb testing.TB, dir, name string, size int64, seed uint64) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	testutil.WriteImage(tb, path, size, size/2, seed)
	return path
}

func mustCopy(tb testing.TB, src, dst string) { testutil.CopyFile(tb, src, dst) }

func mustBackend(tb testing.TB, path string) *nbd.FileBackend {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	b, err := nbd.NewFileBackend(f)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

type rig struct {
	dir   string
	disks []string // disk image paths
	bases []string // copies of the starting images
}

func newRig(tb testing.TB, sizes ...int64) *rig {
	tb.Helper()
	r := &rig{dir: tb.TempDir()}
	for i, size := range sizes {
		p := mustImage(tb, r.dir, "disk"+string(rune('a'+i))+".img", size, uint64(i+1))
		r.disks = append(r.disks, p)
		base := p + ".base"
		mustCopy(tb, p, base)
		r.bases = append(r.bases, base)
	}
	return r
}

func (r *rig) open(tb testing.TB, o Options) *Machine {
	tb.Helper()
	o.Dir = filepath.Join(r.dir, "state")
	for i, p := range r.disks {
		o.Disks = append(o.Disks, DiskSpec{Name: filepath.Base(p), Backend: mustBackend(tb, p)})
		_ = i
	}
	m, err := Open(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// checkReplay replays the journal in journalDir onto fresh copies of the
// base images and requires them to equal the disks.
func (r *rig) checkReplay(tb testing.TB, journalDir string) journal.Pos {
	tb.Helper()
	var backs []nbd.Backend
	var replicas []string
	for i, base := range r.bases {
		p := filepath.Join(tb.TempDir(), "replica"+string(rune('a'+i)))
		mustCopy(tb, base, p)
		replicas = append(replicas, p)
		backs = append(backs, mustBackend(tb, p))
	}
	pos, err := Replay(context.Background(), journalDir, backs, ReplayOptions{})
	if err != nil {
		tb.Fatalf("replay: %v", err)
	}
	for i := range r.disks {
		testutil.MustEqualFiles(tb, r.disks[i], replicas[i])
	}
	return pos
}

// workload drives random changes at the machine's disks from several
// goroutines until n operations are done.
func workload(tb testing.TB, m *Machine, seed uint64, workers, n int) {
	tb.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			buf := make([]byte, 256<<10)
			for i := 0; i < n/workers; i++ {
				d := m.Disks()[r.IntN(len(m.Disks()))]
				size := d.Size()
				length := int64(1 + r.IntN(64<<10))
				if r.IntN(10) == 0 {
					length = int64(1 + r.IntN(len(buf)))
				}
				off := r.Int64N(size - length + 1)
				if r.IntN(2) == 0 {
					off &^= 4095
				}
				var err error
				switch op := r.IntN(20); {
				case op < 14:
					p := buf[:length]
					for j := range p {
						p[j] = byte(r.Uint32())
					}
					err = d.WriteAt(ctx, p, off, r.IntN(30) == 0)
				case op < 16:
					err = d.Zero(ctx, off, length, r.IntN(2) == 0, false)
				case op < 18:
					err = d.Trim(ctx, off, length, false)
				case op < 19:
					err = d.Flush(ctx)
				default:
					_, err = m.Bookmark("test", r.IntN(2) == 0)
					if err == ErrNotConsistent {
						err = nil
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func TestReplayEquality(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		r := newRig(t, 8<<20, 3<<20+512)
		// A tiny activity log with small extents for one seed: writes must
		// wait for syncs to recycle slots.
		o := Options{SegmentSize: 256 << 10, BookmarkInterval: 5 * time.Millisecond}
		if seed == 2 {
			o.ActivityExtents, o.ExtentSize, o.MaxRange = 12, 64<<10, 128<<10
		}
		m := r.open(t, o)
		workload(t, m, seed, 4, 600)
		st := m.Stats()
		if err := m.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.State != StateJournaling || st.Writes == 0 || st.Segments < 2 {
			t.Fatalf("stats after workload: %+v", st)
		}
		pos := r.checkReplay(t, filepath.Join(r.dir, "state", "journal"))
		if end := m.Stats().Pos; pos != end {
			t.Fatalf("replay reached %s, machine was at %s", pos, end)
		}
	}
}

func TestReopenContinues(t *testing.T) {
	r := newRig(t, 4<<20)
	m := r.open(t, Options{SegmentSize: 64 << 10})
	workload(t, m, 9, 2, 200)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := m.ID()
	m = r.open(t, Options{SegmentSize: 64 << 10})
	if m.ID() != id {
		t.Fatalf("machine id changed: %s -> %s", id, m.ID())
	}
	if st := m.Stats(); st.Recovered != "" {
		t.Fatalf("clean reopen recovered: %s", st.Recovered)
	}
	workload(t, m, 10, 2, 200)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.checkReplay(t, filepath.Join(r.dir, "state", "journal"))
}

// crash abandons the machine as a SIGKILL would: no seal, no sync, no
// clean-shutdown mark. The page cache keeps what was written.
func crash(m *Machine) {
	m.cancel()
	m.wg.Wait()
	// The group-sync goroutine may be in a round (fsyncs only: what it
	// syncs is in the page cache either way); let it end before the files
	// close under it, as the process's end would.
	m.sync.stop()
	m.mu.Lock()
	m.failed = io.ErrClosedPipe
	m.closeFiles()
	m.mu.Unlock()
}

func TestUncleanRestartTornTail(t *testing.T) {
	r := newRig(t, 4<<20, 2<<20)
	m := r.open(t, Options{SegmentSize: 128 << 10})
	workload(t, m, 11, 3, 300)
	active := m.Segments()[len(m.Segments())-1]
	crash(m)
	// The agent died in the middle of appending a record, and the write it
	// was journaling never reached the disk.
	f, err := os.OpenFile(active.Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{1, 0, 0, 0, 0, 16, 0, 0, 9, 9, 9})
	f.Close()

	m = r.open(t, Options{SegmentSize: 128 << 10})
	st := m.Stats()
	if st.Recovered == "" {
		t.Fatal("unclean stop not detected")
	}
	workload(t, m, 12, 3, 300)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.checkReplay(t, filepath.Join(r.dir, "state", "journal"))
}

func TestRedoAppliesJournaledWrite(t *testing.T) {
	r := newRig(t, 1<<20)
	m := r.open(t, Options{})
	ctx := context.Background()
	d := m.Disks()[0]
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{0xAB}, 4096), 8192, false); err != nil {
		t.Fatal(err)
	}
	crash(m)
	// The journal record was appended but the disk write was lost.
	disk := mustBackend(t, r.disks[0])
	if err := disk.WriteAt(ctx, make([]byte, 4096), 8192, false); err != nil {
		t.Fatal(err)
	}
	m = r.open(t, Options{})
	got := make([]byte, 4096)
	if err := m.Disks()[0].ReadAt(ctx, got, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{0xAB}, 4096)) {
		t.Fatal("redo did not re-apply the journaled write")
	}
	m.Close(ctx)
	r.checkReplay(t, filepath.Join(r.dir, "state", "journal"))
}

func TestPowerLossMarksActivityLog(t *testing.T) {
	r := newRig(t, 64<<20)
	o := Options{ExtentSize: 1 << 20, ChunkSize: 64 << 10}
	m := r.open(t, o)
	ctx := context.Background()
	d := m.Disks()[0]
	write := func(off int64) {
		if err := d.WriteAt(ctx, []byte("x"), off, false); err != nil {
			t.Fatal(err)
		}
	}
	write(10 << 20)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	write(20 << 20)
	write(30<<20 + 5)
	crash(m)
	// A new boot: the page cache is gone, the activity log says where
	// writes may have been lost.
	var st state
	b, _ := os.ReadFile(filepath.Join(r.dir, "state", "state.json"))
	json.Unmarshal(b, &st)
	st.BootID = "another-boot"
	if err := saveState(filepath.Join(r.dir, "state"), &st); err != nil {
		t.Fatal(err)
	}
	m = r.open(t, o)
	defer m.Close(ctx)
	dirty := m.DirtyExtents()
	covered := func(off int64) bool {
		for _, e := range dirty {
			if e.Disk == 0 && off >= e.Offset && off < e.Offset+e.Length {
				return true
			}
		}
		return false
	}
	for _, off := range []int64{20 << 20, 30<<20 + 5} {
		if !covered(off) {
			t.Errorf("write at %d not covered by dirty extents %v", off, dirty)
		}
	}
	if s := m.Stats(); s.State == StateJournaling {
		t.Errorf("state %s after power loss with dirty extents", s.State)
	}
}

func TestOverflowToBitmapAndResync(t *testing.T) {
	r := newRig(t, 8<<20)
	archive := t.TempDir() // stands in for what a shipper took away
	o := Options{SegmentSize: 32 << 10, JournalLimit: 128 << 10, ChunkSize: 64 << 10, BookmarkInterval: -1}
	m := r.open(t, o)
	ctx := context.Background()
	d := m.Disks()[0]
	rnd := rand.New(rand.NewPCG(5, 5))
	type w struct{ off, n int64 }
	var overflowed []w
	buf := make([]byte, 16<<10)
	for i := 0; i < 200; i++ {
		n := int64(1 + rnd.IntN(len(buf)))
		off := rnd.Int64N(d.Size() - n)
		if err := d.WriteAt(ctx, buf[:n], off, false); err != nil {
			t.Fatalf("write %d while overflowed: %v", i, err)
		}
		if m.Stats().State == StateOverflow {
			overflowed = append(overflowed, w{off, n})
		}
	}
	if len(overflowed) < 100 {
		t.Fatalf("only %d writes while overflowed", len(overflowed))
	}
	if _, err := m.Bookmark("x", false); err != ErrNotConsistent {
		t.Fatalf("bookmark while overflowed: %v", err)
	}
	dirty := m.DirtyExtents()
	for _, x := range overflowed {
		for b := x.off; b < x.off+x.n; b += 512 {
			found := false
			for _, e := range dirty {
				if b >= e.Offset && b < e.Offset+e.Length {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("byte %d of an overflowed write is not in the dirty bitmap", b)
			}
		}
	}
	// Ship and release repeatedly: resync drains the bitmap into the journal.
	deadline := time.Now().Add(20 * time.Second)
	for m.Stats().DirtyBytes > 0 || m.Stats().State != StateJournaling {
		if time.Now().After(deadline) {
			t.Fatalf("resync did not finish: %+v", m.Stats())
		}
		if err := m.SealActive(); err != nil {
			t.Fatal(err)
		}
		if err := m.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, s := range m.Segments() {
			if s.Synced {
				mustCopy(t, s.Path, filepath.Join(archive, filepath.Base(s.Path)))
				if err := m.Release(s.LastSeq); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := m.Bookmark("after resync", false); err != nil {
		t.Fatalf("bookmark after resync: %v", err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Segments() {
		mustCopy(t, s.Path, filepath.Join(archive, filepath.Base(s.Path)))
	}
	r.checkReplay(t, archive)
}

func TestGroupCommit(t *testing.T) {
	r := newRig(t, 4<<20)
	m := r.open(t, Options{})
	defer m.Close(context.Background())
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.Disks()[0].WriteAt(context.Background(), []byte("fua"), int64(i)*4096, true); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	st := m.Stats()
	if st.SyncRounds >= 64 {
		t.Fatalf("%d sync rounds for 64 concurrent FUA writes: no group commit", st.SyncRounds)
	}
	t.Logf("64 FUA writes took %d sync rounds", st.SyncRounds)
}

func TestDiskLayoutChangeRefused(t *testing.T) {
	r := newRig(t, 1<<20)
	m := r.open(t, Options{})
	m.Close(context.Background())
	if err := os.Truncate(r.disks[0], 2<<20); err != nil {
		t.Fatal(err)
	}
	o := Options{Dir: filepath.Join(r.dir, "state"), Disks: []DiskSpec{{Name: filepath.Base(r.disks[0]), Backend: mustBackend(t, r.disks[0])}}}
	if _, err := Open(context.Background(), o); err == nil {
		t.Fatal("a resized disk was accepted against the old journal")
	}
}

// TestOverlappingWritesKeepJournalOrder hammers one small region from many
// goroutines: the disk must end up as the journal says, so overlapping
// writes reach the disk in journal order even though disk writes run
// outside the lock.
func TestOverlappingWritesKeepJournalOrder(t *testing.T) {
	r := newRig(t, 1<<20)
	m := r.open(t, Options{BookmarkInterval: -1})
	var jitter atomic.Uint64
	m.beforeApply = func() {
		if jitter.Add(1)%3 == 0 {
			time.Sleep(time.Duration(jitter.Load()%200) * time.Microsecond)
		}
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 3))
			buf := make([]byte, 16<<10)
			for range 400 {
				n := int64(1 + rnd.IntN(len(buf)))
				off := rnd.Int64N(64<<10 - n)
				for j := range buf[:n] {
					buf[j] = byte(g)
				}
				var err error
				if rnd.IntN(8) == 0 {
					err = m.Disks()[0].Zero(ctx, off, n, rnd.IntN(2) == 0, false)
				} else {
					err = m.Disks()[0].WriteAt(ctx, buf[:n], off, false)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r.checkReplay(t, filepath.Join(r.dir, "state", "journal"))
}

// TestActivityLogSurvivesFailedRecovery: opening the log does not clear it,
// so a recovery that dies before recording the hot extents finds them again.
func TestActivityLogSurvivesFailedRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "activity.log")
	a, hot, err := openActivityLog(path, 1<<20, 8)
	if err != nil || len(hot) != 0 {
		t.Fatalf("fresh log: %v %v", hot, err)
	}
	if err := a.reset(); err != nil {
		t.Fatal(err)
	}
	if err := a.touch(0, 5<<20, 10, 1, 0); err != nil {
		t.Fatal(err)
	}
	a.close()
	for attempt := range 2 {
		a, hot, err = openActivityLog(path, 1<<20, 8)
		if err != nil {
			t.Fatal(err)
		}
		if len(hot) != 1 || hot[0] != (alKey{0, 5}) {
			t.Fatalf("attempt %d: hot extents %v, want [{0 5}]", attempt, hot)
		}
		a.close() // the recovery "dies" here, before reset
	}
}

// A frozen machine refuses writes, zeroing and trims with an error that
// NBD maps to EPERM, journals nothing of them and leaves the disk as it
// was; reads and bookmarks go on; after Thaw writes are accepted again.
func TestFreezeRefusesWrites(t *testing.T) {
	r := newRig(t, 1<<20)
	m := r.open(t, Options{SegmentSize: 64 << 10})
	defer m.Close(context.Background())
	d := m.Disks()[0]
	ctx := context.Background()
	if err := d.WriteAt(ctx, []byte("before"), 0, true); err != nil {
		t.Fatal(err)
	}
	m.Freeze("planned failover f1")
	before := m.Stats()
	for name, op := range map[string]func() error{
		"write": func() error { return d.WriteAt(ctx, []byte("after"), 0, false) },
		"zero":  func() error { return d.Zero(ctx, 0, 4096, true, false) },
		"trim":  func() error { return d.Trim(ctx, 0, 4096, false) },
	} {
		err := op()
		var fe *FrozenError
		if !errors.As(err, &fe) || !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), "planned failover f1") {
			t.Errorf("%s on a frozen machine: %v; want a FrozenError matching EROFS", name, err)
		}
	}
	after := m.Stats()
	if after.Pos != before.Pos || after.Frozen != "planned failover f1" {
		t.Fatalf("frozen: journal moved %v -> %v, Frozen %q", before.Pos, after.Pos, after.Frozen)
	}
	buf := make([]byte, 6)
	if err := d.ReadAt(ctx, buf, 0); err != nil || string(buf) != "before" {
		t.Fatalf("read on a frozen machine: %q, %v", buf, err)
	}
	if _, err := m.Bookmark("final", true); err != nil {
		t.Fatalf("bookmark on a frozen machine: %v", err)
	}
	m.Thaw()
	if err := d.WriteAt(ctx, []byte("thawed"), 0, false); err != nil || m.Stats().Frozen != "" {
		t.Fatalf("write after Thaw: %v", err)
	}
}
