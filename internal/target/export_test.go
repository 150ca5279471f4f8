package target

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/retention"
)

const exportMachine = "00112233-4455-6677-8899-aabbccddeeff"

var exportStart = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

// source is the agent side of an export test: the machine's disks in
// memory and the journal that changes them.
type source struct {
	tb    testing.TB
	rnd   *rand.Rand
	disks [][]byte
	pos   journal.Pos
	clock time.Time
}

func newSource(tb testing.TB, sizes ...int64) *source {
	s := &source{tb: tb, rnd: rand.New(rand.NewPCG(5, 9)), clock: exportStart}
	for _, n := range sizes {
		s.disks = append(s.disks, make([]byte, n))
	}
	return s
}

// segment makes a segment of n random writes and a bookmark, applies it
// to the source's disks and returns it with their content at the bookmark.
func (s *source) segment(n int, app bool) ([]byte, [][]byte) {
	s.tb.Helper()
	id, _ := hex.DecodeString(strings.ReplaceAll(exportMachine, "-", ""))
	var buf bytes.Buffer
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: [16]byte(id), Epoch: 1, FirstSeq: s.pos.Seq + 1, PrevChain: s.pos.Chain, Created: s.clock.UnixNano()})
	if err != nil {
		s.tb.Fatal(err)
	}
	add := func(rec journal.Record) {
		rec.Seq, rec.Time = s.pos.Seq+1, s.clock.UnixNano()
		s.clock = s.clock.Add(time.Second)
		_, crc := journal.AppendRecord(nil, &rec)
		s.pos = s.pos.Next(crc)
		if err := w.Append(&rec); err != nil {
			s.tb.Fatal(err)
		}
	}
	for range n {
		d := s.rnd.IntN(len(s.disks))
		size := int64(len(s.disks[d]))
		ln := 1 + s.rnd.Int64N(20000)
		off := s.rnd.Int64N(size - ln + 1)
		data := make([]byte, ln)
		for i := range data {
			data[i] = byte(s.rnd.Uint32() | 1)
		}
		copy(s.disks[d][off:], data)
		add(journal.Record{Kind: journal.KindWrite, Disk: uint16(d), Offset: uint64(off), Length: uint64(ln), Data: data})
	}
	bm := journal.Record{Kind: journal.KindBookmark, Data: []byte("interval")}
	if app {
		bm.Flags, bm.Data = journal.FlagAppConsistent, []byte("app")
	}
	add(bm)
	if _, err := w.Seal(s.clock.UnixNano()); err != nil {
		s.tb.Fatal(err)
	}
	at := make([][]byte, len(s.disks))
	for i := range s.disks {
		at[i] = bytes.Clone(s.disks[i])
	}
	return buf.Bytes(), at
}

// exportTarget is a target with exports on a TCP port and a unix socket,
// holding a replica of exportMachine with the given disks.
type exportTarget struct {
	*Target
	o   Options
	rep *replica.Replica
	now time.Time
}

func newExportTarget(tb testing.TB, sizes ...int64) *exportTarget {
	tb.Helper()
	dir := tb.TempDir()
	var disks []replica.DiskInfo
	for i, n := range sizes {
		disks = append(disks, replica.DiskInfo{Name: "sd" + string(rune('a'+i)), Size: n})
	}
	if err := replica.Create(filepath.Join(dir, "machines", exportMachine), exportMachine, disks, nil); err != nil {
		tb.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "machines", exportMachine, "name"), []byte("web01\n"), 0o644)
	et := &exportTarget{now: exportStart.Add(time.Hour)}
	et.o = Options{
		DataDir: dir, PruneInterval: time.Hour, Now: func() time.Time { return et.now },
		Retention: retention.Policy{KeepAll: time.Minute},
		Exports:   ExportsOptions{Listen: "127.0.0.1:0", Unix: filepath.Join(dir, "run", "exports.sock")},
	}
	et.start(tb)
	return et
}

func (et *exportTarget) start(tb testing.TB) {
	tb.Helper()
	t, err := New(context.Background(), et.o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { t.Close() })
	et.Target = t
	rep, _, ok := t.Lookup("web01")
	if !ok {
		tb.Fatal("no replica of web01")
	}
	et.rep = rep
}

func (et *exportTarget) apply(tb testing.TB, seg []byte) {
	tb.Helper()
	if _, err := et.rep.Apply(context.Background(), seg); err != nil {
		tb.Fatal(err)
	}
}

func mustExport(tb testing.TB, t *Target, point string) Export {
	tb.Helper()
	x, err := t.Export(context.Background(), ExportRequest{Machine: "web01", Point: point})
	if err != nil {
		tb.Fatal(err)
	}
	return x
}

func dialDisk(tb testing.TB, x Export, disk int) *nbd.Client {
	tb.Helper()
	c, err := nbd.Dial(context.Background(), "unix", x.Unix, x.Disks[disk].Export, nbd.ClientOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// nbdcopyDisk reads a whole disk of an export with nbdcopy (libnbd), a
// client that is not ours.
func nbdcopyDisk(tb testing.TB, uri string) []byte {
	tb.Helper()
	if _, err := exec.LookPath("nbdcopy"); err != nil {
		tb.Skip("nbdcopy (libnbd-bin) not installed")
	}
	out := filepath.Join(tb.TempDir(), "disk.img")
	if b, err := exec.Command("nbdcopy", uri, out).CombinedOutput(); err != nil {
		tb.Fatalf("nbdcopy %s: %v\n%s", uri, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func readAll(tb testing.TB, c *nbd.Client) []byte {
	tb.Helper()
	b := make([]byte, c.Size())
	if _, err := c.ReadAt(b, 0); err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustEqual(tb testing.TB, what string, got, want []byte) {
	tb.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		tb.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			tb.Fatalf("%s: differs first at byte %d: %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

// TestExportPoint exports a point, reads it with nbdcopy and our client,
// writes through it; the writes are in that export only, not in the
// replica nor in a second export of the point. Replication goes on
// meanwhile without changing the export; pruning keeps the exported point
// until it is unexported.
func TestExportPoint(t *testing.T) {
	ctx := context.Background()
	src := newSource(t, 1<<20, 300<<10+512)
	et := newExportTarget(t, 1<<20, 300<<10+512)
	seg1, at1 := src.segment(40, false)
	et.apply(t, seg1)
	seg2, at2 := src.segment(40, true)
	et.apply(t, seg2)
	pts := et.rep.Points()
	if len(pts) != 2 {
		t.Fatalf("%d points, want 2", len(pts))
	}

	a := mustExport(t, et.Target, "1")
	if a.Point.ID != pts[0].ID || len(a.Disks) != 2 || a.Disks[1].Export != a.Name+"/sdb" {
		t.Fatalf("export %+v", a)
	}
	for i, d := range a.Disks {
		mustEqual(t, "nbdcopy over TCP of "+d.Export, nbdcopyDisk(t, d.URI), at1[i])
		mustEqual(t, "nbdcopy over unix of "+d.Export, nbdcopyDisk(t, d.UnixURI), at1[i])
	}
	if latest := mustExport(t, et.Target, "latest-app"); latest.Point.ID != pts[1].ID {
		t.Fatalf("latest-app exported point %d, want %d", latest.Point.ID, pts[1].ID)
	} else {
		mustEqual(t, "latest-app disk 0", readAll(t, dialDisk(t, latest, 0)), at2[0])
		if err := et.Unexport(ctx, latest.Name); err != nil {
			t.Fatal(err)
		}
	}

	// Writes through export a, on two connections (partial blocks too).
	ca := dialDisk(t, a, 0)
	ca2 := dialDisk(t, a, 0)
	want := bytes.Clone(at1[0])
	for i, c := range []*nbd.Client{ca, ca2} {
		p := bytes.Repeat([]byte{0xa0 + byte(i)}, 10000)
		off := int64(1000 + i*50000)
		if _, err := c.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	if err := ca.Flush(); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "export a after writes", readAll(t, ca2), want)
	if x, _ := et.ExportByName(a.Name); x.Disks[0].OverlayBytes == 0 {
		t.Fatalf("export a reports an empty overlay after writes: %+v", x.Disks[0])
	}

	b := mustExport(t, et.Target, "1")
	mustEqual(t, "export b of the same point", readAll(t, dialDisk(t, b, 0)), at1[0])
	mustEqual(t, "the point in the replica", viewDisk(t, et.rep, pts[0].ID, 0), at1[0])

	// Replication goes on: the export does not move.
	seg3, at3 := src.segment(40, false)
	et.apply(t, seg3)
	mustEqual(t, "export a after more segments", readAll(t, ca), want)
	mustEqual(t, "latest after more segments", viewDisk(t, et.rep, 0, 0), at3[0])

	// Pruning keeps the exported point while an export uses it.
	et.now = exportStart.Add(100 * time.Hour)
	if _, _, err := et.rep.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if !hasPoint(et.rep, pts[0].ID) {
		t.Fatal("prune removed an exported point")
	}
	mustEqual(t, "export a after prune", readAll(t, ca), want)
	if err := et.Unexport(ctx, a.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.ReadAt(make([]byte, 512), 0); err == nil {
		t.Fatal("a connection to an unexported export still reads")
	}
	mustEqual(t, "export b after a's unexport", readAll(t, dialDisk(t, b, 1)), at1[1])
	if _, _, err := et.rep.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if !hasPoint(et.rep, pts[0].ID) {
		t.Fatal("prune removed a point export b uses")
	}
	if err := et.Unexport(ctx, b.Name); err != nil {
		t.Fatal(err)
	}
	if _, _, err := et.rep.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if hasPoint(et.rep, pts[0].ID) {
		t.Fatal("the point was kept after its exports ended")
	}
	if ents, _ := os.ReadDir(filepath.Join(et.o.DataDir, "exports")); len(ents) != 0 {
		t.Fatalf("overlays left after unexport: %v", ents)
	}
	if err := et.Unexport(ctx, b.Name); !errors.Is(err, ErrNoExport) {
		t.Fatalf("unexport twice: %v", err)
	}
}

func viewDisk(tb testing.TB, rep *replica.Replica, id uint64, disk int) []byte {
	tb.Helper()
	v, err := rep.OpenPoint(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	defer v.Close()
	b := make([]byte, v.Size(disk))
	if _, err := v.DiskReaderAt(disk).ReadAt(b, 0); err != nil {
		tb.Fatal(err)
	}
	return b
}

func hasPoint(rep *replica.Replica, id uint64) bool {
	for _, p := range rep.Points() {
		if p.ID == id {
			return true
		}
	}
	return false
}

// TestExportSurvivesRestart: an export and what was written to it are
// there after the target restarts; the point stays pinned.
func TestExportSurvivesRestart(t *testing.T) {
	src := newSource(t, 256<<10)
	et := newExportTarget(t, 256<<10)
	seg, at := src.segment(20, false)
	et.apply(t, seg)
	x := mustExport(t, et.Target, "latest")
	c := dialDisk(t, x, 0)
	if _, err := c.WriteAt([]byte("written before the restart"), 4097); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := et.Close(); err != nil {
		t.Fatal(err)
	}
	et.start(t)
	got, err := et.ExportByName(x.Name)
	if err != nil {
		t.Fatalf("after restart: %v (exports %+v)", err, et.Exports())
	}
	want := bytes.Clone(at[0])
	copy(want[4097:], "written before the restart")
	mustEqual(t, "export after restart", readAll(t, dialDisk(t, got, 0)), want)
	if pts := et.rep.Points(); len(pts) != 1 || !pts[0].InUse {
		t.Fatalf("points after restart %+v: want the exported one in use", pts)
	}
}

// TestExportIsConstantTime exports a point of a 64 GiB disk: the call
// allocates two sparse files' headers, not the disk, and qemu-img sees
// the size.
func TestExportIsConstantTime(t *testing.T) {
	const size = 64 << 30
	src := newSource(t, 1<<20) // writes land in the first MiB
	et := newExportTarget(t, size)
	seg, _ := src.segment(5, false)
	et.apply(t, seg)
	start := time.Now()
	x := mustExport(t, et.Target, "latest")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("exporting a 64 GiB disk took %v", d)
	}
	var alloc int64
	files, _ := filepath.Glob(filepath.Join(et.o.DataDir, "exports", x.Name, "*"))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			alloc += st.Blocks * 512
		}
	}
	if alloc > 256<<10 {
		t.Fatalf("exporting a 64 GiB disk allocated %d bytes in %v", alloc, files)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		out, err := exec.Command("qemu-img", "info", "--output=json", x.Disks[0].URI).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"virtual-size": 68719476736`) {
			t.Fatalf("qemu-img info %s: %v\n%s", x.Disks[0].URI, err, out)
		}
	}
	c := dialDisk(t, x, 0)
	if err := c.WriteFUA([]byte("tail"), size-4); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := c.ReadAt(b, size-4); err != nil || string(b) != "tail" {
		t.Fatalf("read back %q, %v", b, err)
	}
}

// TestSelectPoint covers the selectors and their errors.
func TestSelectPoint(t *testing.T) {
	pts := []replica.Point{
		{ID: 3, Time: exportStart, AppConsistent: true},
		{ID: 4, Time: exportStart.Add(time.Minute)},
		{ID: 7, Time: exportStart.Add(2 * time.Minute)},
	}
	for sel, want := range map[string]uint64{
		"": 7, "latest": 7, "latest-app": 3, "4": 4,
		"2026-11-27T00:01:30Z": 4, "2026-11-27T00:01:00Z": 4, "2027-01-01T00:00:00+01:00": 7,
	} {
		p, err := SelectPoint(pts, sel)
		if err != nil || p.ID != want {
			t.Errorf("SelectPoint(%q) = %d, %v; want %d", sel, p.ID, err, want)
		}
	}
	for sel, want := range map[string]error{
		"5": ErrNoPoint, "2026-11-26T23:59:59Z": ErrNoPoint, "yesterday": ErrBadSelector, "-1": ErrBadSelector,
	} {
		if _, err := SelectPoint(pts, sel); !errors.Is(err, want) {
			t.Errorf("SelectPoint(%q): %v, want %v", sel, err, want)
		}
	}
	if _, err := SelectPoint(pts[1:], "latest-app"); !errors.Is(err, ErrNoPoint) {
		t.Errorf("latest-app without one: %v", err)
	}
}
