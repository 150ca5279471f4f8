package replica

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/retention"
)

const testMachine = "00112233-4455-6677-8899-aabbccddeeff"

var (
	testDisks = []DiskInfo{{Name: "sda", Size: 192 << 10}, {Name: "sdb", Size: 320<<10 + 512}}
	testStart = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
)

// model is the agent side of a test: it makes the journal of a machine with
// random writes, zeros, trims and bookmarks, keeps reference images of its
// disks in memory, and remembers the disks' content at every bookmark.
type model struct {
	tb     testing.TB
	rnd    *rand.Rand
	id     [16]byte
	sizes  []int64
	epoch  uint64
	clock  time.Time // Time of the next record
	step   time.Duration
	gens   []*gen
	live   [][]byte // the disks after every record made so far
	marks  map[int64]refPoint
	pruned map[int64]bool

	bookmarkEvery int // 1 in n records is a bookmark; 0 means none
}

// gen is a generation of the journal: the records after one position. A
// Rebase starts a new generation.
type gen struct {
	prev  journal.Pos
	start [][]byte // the disks before its first record
	recs  []journal.Record
	pos   []journal.Pos // pos[k] is the position after recs[k]
	sent  int           // records handed out by next
}

// refPoint is the reference content at a bookmark.
type refPoint struct {
	gen, k int // the bookmark is gens[gen].recs[k-1]
	label  string
	app    bool
	disks  [][]byte
}

func newModel(tb testing.TB, seed uint64, disks []DiskInfo) *model {
	m := &model{
		tb: tb, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		epoch: 1, clock: testStart, step: time.Second,
		marks: make(map[int64]refPoint), pruned: make(map[int64]bool), bookmarkEvery: 6,
	}
	_, m.id, _ = parseMachineID(testMachine)
	for _, d := range disks {
		m.sizes = append(m.sizes, d.Size)
		m.live = append(m.live, make([]byte, d.Size))
	}
	m.gens = []*gen{{start: clone2(m.live)}}
	return m
}

func clone2(d [][]byte) [][]byte {
	c := make([][]byte, len(d))
	for i := range d {
		c[i] = bytes.Clone(d[i])
	}
	return c
}

func (m *model) g() *gen { return m.gens[len(m.gens)-1] }

// at is the position after k records of g.
func (g *gen) at(k int) journal.Pos {
	if k == 0 {
		return g.prev
	}
	return g.pos[k-1]
}

// randRecord makes one random change record (or bookmark).
func (m *model) randRecord() journal.Record {
	r := m.rnd
	if m.bookmarkEvery > 0 && r.IntN(m.bookmarkEvery) == 0 {
		rec := journal.Record{Kind: journal.KindBookmark, Data: []byte("interval")}
		if r.IntN(3) == 0 {
			rec.Flags, rec.Data = journal.FlagAppConsistent, []byte("app")
		}
		return rec
	}
	d := r.IntN(len(m.sizes))
	size := m.sizes[d]
	var n int64
	if r.IntN(2) == 0 {
		n = 512 * (1 + r.Int64N(32))
	} else {
		n = 1 + r.Int64N(20000)
	}
	off := r.Int64N(size - n + 1)
	if r.IntN(2) == 0 {
		off &^= 4095
	}
	rec := journal.Record{Disk: uint16(d), Offset: uint64(off), Length: uint64(n)}
	switch k := r.IntN(10); {
	case k < 7:
		rec.Kind, rec.Data = journal.KindWrite, make([]byte, n)
		for i := range rec.Data {
			rec.Data[i] = byte(r.Uint32() | 1)
		}
	case k < 9:
		rec.Kind = journal.KindZero
		if r.IntN(2) == 0 {
			rec.Flags = journal.FlagNoHole
		}
	default:
		rec.Kind = journal.KindTrim
	}
	return rec
}

// add appends rec to the journal and applies it to the reference disks.
func (m *model) add(rec journal.Record) {
	g := m.g()
	prev := g.at(len(g.recs))
	rec.Seq = prev.Seq + 1
	rec.Time = m.clock.UnixNano()
	m.clock = m.clock.Add(m.step)
	_, crc := journal.AppendRecord(nil, &rec)
	g.recs = append(g.recs, rec)
	g.pos = append(g.pos, prev.Next(crc))
	switch rec.Kind {
	case journal.KindWrite:
		copy(m.live[rec.Disk][rec.Offset:], rec.Data)
	case journal.KindZero, journal.KindTrim:
		clear(m.live[rec.Disk][rec.Offset:rec.End()])
	case journal.KindBookmark:
		m.marks[rec.Time] = refPoint{gen: len(m.gens) - 1, k: len(g.recs), label: string(rec.Data),
			app: rec.Flags&journal.FlagAppConsistent != 0, disks: clone2(m.live)}
	}
}

// gen makes n random records.
func (m *model) gen(n int) {
	for range n {
		m.add(m.randRecord())
	}
}

// encode makes the segment of records [i, j) of g.
func (m *model) encode(g *gen, i, j int) []byte {
	m.tb.Helper()
	var buf bytes.Buffer
	prev := g.at(i)
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: m.id, Epoch: m.epoch, FirstSeq: prev.Seq + 1, PrevChain: prev.Chain, Created: m.clock.UnixNano()})
	if err != nil {
		m.tb.Fatal(err)
	}
	for k := i; k < j; k++ {
		rec := g.recs[k]
		if err := w.Append(&rec); err != nil {
			m.tb.Fatal(err)
		}
		if rec.Seq != g.recs[k].Seq {
			m.tb.Fatalf("model: record %d got seq %d", g.recs[k].Seq, rec.Seq)
		}
	}
	if _, err := w.Seal(m.clock.UnixNano()); err != nil {
		m.tb.Fatal(err)
	}
	return buf.Bytes()
}

// next makes n random records and returns the segment of every record not
// sent yet; n may be 0.
func (m *model) next(n int) []byte {
	m.gen(n)
	g := m.g()
	seg := m.encode(g, g.sent, len(g.recs))
	g.sent = len(g.recs)
	return seg
}

// withBookmark makes n random records and a bookmark at the end.
func (m *model) withBookmark(n int, label string) []byte {
	m.gen(n)
	m.add(journal.Record{Kind: journal.KindBookmark, Data: []byte(label)})
	return m.next(0)
}

// rebase starts a new generation at pos (what the agent's Rebase says).
// Records made but not sent are lost to the replica.
func (m *model) rebase(pos journal.Pos) {
	m.gens = append(m.gens, &gen{prev: pos, start: clone2(m.live)})
}

// resyncAll appends the whole content of every disk as resync records, in
// 64 KiB chunks: what the agent sends after a rebase when every block
// differs.
func (m *model) resyncAll() {
	const chunk = 64 << 10
	for d, disk := range m.live {
		for off := 0; off < len(disk); off += chunk {
			b := bytes.Clone(disk[off:min(off+chunk, len(disk))])
			rec := journal.Record{Kind: journal.KindWrite, Flags: journal.FlagResync, Disk: uint16(d), Offset: uint64(off), Length: uint64(len(b)), Data: b}
			if allZero(b) {
				rec = journal.Record{Kind: journal.KindZero, Flags: journal.FlagResync, Disk: uint16(d), Offset: uint64(off), Length: uint64(len(b))}
			}
			m.add(rec)
		}
	}
}

// stateAt replays the first k records of g onto its start.
func (g *gen) stateAt(k int) [][]byte {
	d := clone2(g.start)
	for _, rec := range g.recs[:k] {
		switch rec.Kind {
		case journal.KindWrite:
			copy(d[rec.Disk][rec.Offset:], rec.Data)
		case journal.KindZero, journal.KindTrim:
			clear(d[rec.Disk][rec.Offset:rec.End()])
		}
	}
	return d
}

// wantPoints are the times of the bookmarks sent and not pruned, in order.
func (m *model) wantPoints() []int64 {
	var ts []int64
	for t, p := range m.marks {
		if p.k <= m.gens[p.gen].sent && !m.pruned[t] {
			ts = append(ts, t)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}

// mustCreate makes a replica of testMachine in a new directory.
func mustCreate(tb testing.TB, disks []DiskInfo, seed []string) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "m")
	if err := Create(dir, testMachine, disks, seed); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// testOptions are Options with a fixed clock.
func testOptions(dir string) Options {
	return Options{Dir: dir, Now: func() time.Time { return testStart.Add(time.Hour) }, Retention: retention.Defaults()}
}

func mustOpen(tb testing.TB, o Options) *Replica {
	tb.Helper()
	r, err := Open(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

func mustApply(tb testing.TB, r *Replica, seg []byte, want journal.Pos) {
	tb.Helper()
	got, err := r.Apply(context.Background(), seg)
	if err != nil {
		tb.Fatal(err)
	}
	if got != want {
		tb.Fatalf("apply returned %s, want %s", got, want)
	}
}

func readDisk(tb testing.TB, ra io.ReaderAt, size int64) []byte {
	tb.Helper()
	b := make([]byte, size)
	n, err := ra.ReadAt(b, 0)
	if err != nil && !(err == io.EOF && int64(n) == size) {
		tb.Fatalf("read disk: %d bytes, %v", n, err)
	}
	return b
}

// currentDisks reads the current images, consistent or not.
func currentDisks(tb testing.TB, r *Replica) [][]byte {
	tb.Helper()
	var out [][]byte
	for i, d := range r.Status().Disks {
		out = append(out, readDisk(tb, &liveDisk{r: r, disk: i, size: d.Size}, d.Size))
	}
	return out
}

// mustEqualDisks fails unless got and want hold the same bytes, naming the
// first difference.
func mustEqualDisks(tb testing.TB, what string, got, want [][]byte) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: %d disks, want %d", what, len(got), len(want))
	}
	for d := range got {
		if bytes.Equal(got[d], want[d]) {
			continue
		}
		for i := range got[d] {
			if got[d][i] != want[d][i] {
				tb.Fatalf("%s: disk %d differs first at byte %d: got %#x, want %#x", what, d, i, got[d][i], want[d][i])
			}
		}
	}
}

// mustCheck compares every recovery point of r, and the latest state, with
// the model.
func mustCheck(tb testing.TB, r *Replica, m *model) {
	tb.Helper()
	pts := r.Points()
	var got []int64
	for _, p := range pts {
		got = append(got, p.Time.UnixNano())
	}
	if want := m.wantPoints(); fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("point times:\n got %v\nwant %v", got, want)
	}
	for _, p := range pts {
		ref := m.marks[p.Time.UnixNano()]
		if p.Label != ref.label || p.AppConsistent != ref.app {
			tb.Fatalf("point %d: label %q app %v, want %q %v", p.ID, p.Label, p.AppConsistent, ref.label, ref.app)
		}
		mustEqualDisks(tb, fmt.Sprintf("point %d (seq %d)", p.ID, p.Seq), viewDisks(tb, r, p.ID), ref.disks)
	}
	if st := r.Status(); st.Consistent {
		g := m.g()
		mustEqualDisks(tb, "latest", viewDisks(tb, r, 0), g.stateAt(g.sent))
	}
}

// viewDisks reads every disk of point id through a View.
func viewDisks(tb testing.TB, r *Replica, id uint64) [][]byte {
	tb.Helper()
	v, err := r.OpenPoint(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	defer v.Close()
	var out [][]byte
	for i, d := range v.Disks() {
		out = append(out, readDisk(tb, v.DiskReaderAt(i), d.Size))
	}
	return out
}

func timeOf(ns int64) time.Time { return time.Unix(0, ns).UTC() }
