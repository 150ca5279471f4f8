package twosite

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/loadgen"
	"github.com/standby-dr/standby/internal/replica"
)

// fillHalf writes random data into the first half of a disk, in 1 MiB
// pieces with every other one left a hole, so initial replication has data,
// zeroes and holes to deal with.
func fillHalf(seed uint64) func(int, *os.File) error {
	return func(disk int, f *os.File) error {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		r := rand.New(rand.NewPCG(seed, uint64(disk)))
		buf := make([]byte, 1<<20)
		for off := int64(0); off < st.Size()/2; off += 2 << 20 {
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			if _, err := f.WriteAt(buf, off); err != nil {
				return err
			}
		}
		return nil
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("STANDBY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// mustEqualLatest checks that the replica's latest state equals the source
// disks byte for byte.
func mustEqualLatest(t *testing.T, h *Harness) {
	t.Helper()
	v, err := h.Replica().OpenPoint(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for i, p := range h.Disks {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := v.DiskReaderAt(i).ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			off := 0
			for off < len(got) && got[off] == want[off] {
				off++
			}
			t.Fatalf("disk %d: the replica's latest state differs from the source, first at byte %d", i, off)
		}
	}
}

// images opens a point's disks for the load generator's checker.
func images(t *testing.T, r *replica.Replica, id uint64) (loadgen.Images, func()) {
	t.Helper()
	v, err := r.OpenPoint(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	im := loadgen.Images{Initial: loadgen.InitialForeign}
	for i := range v.Disks() {
		im.Disks = append(im.Disks, v.DiskReaderAt(i))
	}
	return im, func() { v.Close() }
}

func TestInitialReplicationThenPointsAreExact(t *testing.T) {
	ctx := context.Background()
	h := Start(t, Options{Disks: []int64{24 << 20, 8 << 20}, Fill: fillHalf(1), Logger: testLogger(t)})
	h.WaitProtected(60 * time.Second)
	r := h.Replication()
	// Initial replication skips holes and zero blocks: half of each disk
	// is data, half of that holes.
	if want := int64(32<<20) / 4; r.ResyncBytes != want {
		t.Errorf("initial replication sent %d bytes of blocks, want %d (the data, not the holes)", r.ResyncBytes, want)
	}
	mustEqualLatest(t, h)

	disks := []loadgen.Disk{h.DialDisk(ctx, 0), h.DialDisk(ctx, 1)}
	g, err := loadgen.NewGenerator(disks, loadgen.Options{Seed: 3, MaxBlocks: 16, Distribution: loadgen.HotSpot})
	if err != nil {
		t.Fatal(err)
	}
	m := h.Agent.Machine()
	labels := map[string]uint64{}
	var last uint64
	for i := 1; i <= 6; i++ {
		if i == 3 {
			h.WAN.Cut() // an outage of the WAN under load
		}
		if err := g.Run(ctx, 150); err != nil {
			t.Fatal(err)
		}
		label := fmt.Sprintf("lg-%d", 150*i)
		if last, err = m.Bookmark(label, i == 5); err != nil { // one app-consistent point
			t.Fatal(err)
		}
		labels[label] = uint64(150 * i)
		if i == 4 {
			time.Sleep(1500 * time.Millisecond)
			h.WAN.Restore()
		}
	}
	// Then concurrent writes (4 in flight over 2 connections per disk
	// set), with interval bookmarks every second: each point must be a
	// consistent cut of them.
	concurrentFrom := time.Now()
	g2, err := loadgen.NewGenerator([]loadgen.Disk{h.DialDisk(ctx, 0), h.DialDisk(ctx, 1)}, loadgen.Options{Seed: 4, MaxBlocks: 8, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := g2.Run(ctx, 300); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // let interval bookmarks fall mid-run
	}
	if last, err = m.Bookmark("concurrent-end", false); err != nil {
		t.Fatal(err)
	}
	h.WaitApplied(60*time.Second, last)
	if got := h.Replication(); got.ComparedAt != r.ComparedAt {
		t.Errorf("the WAN outage caused a resync (compared at %s, then %s): want catch-up from the cache", r.ComparedAt, got.ComparedAt)
	}
	log, log2 := g.Log(), g2.Log()
	checked2 := 0
	rep := h.Replica()
	points := rep.Points()
	checked := 0
	for _, p := range points {
		im, done := images(t, rep, p.ID)
		if want := p.Label == "lg-750"; p.AppConsistent != want {
			t.Errorf("point %d (%s): app-consistent %v, want %v", p.ID, p.Label, p.AppConsistent, want)
		}
		if n, ok := labels[p.Label]; ok {
			if err := loadgen.CheckExact(log, im, n); err != nil {
				t.Errorf("point %d (%s): %v", p.ID, p.Label, err)
			}
			checked++
		} else if strings.HasPrefix(p.Label, "interval") || p.Label == "resync-complete" || p.Label == "concurrent-end" {
			l := log
			if !p.Time.Before(concurrentFrom) {
				l = log2
			}
			if _, err := loadgen.Check(l, im); err != nil {
				t.Errorf("point %d (%s, seq %d): not a consistent cut: %v", p.ID, p.Label, p.Seq, err)
			}
			checked2++
		}
		done()
	}
	t.Logf("points %d, labelled %d, cuts checked %d, replication %+v", len(points), checked, checked2, h.Replication())
	if checked2 < 3 { // resync-complete, an interval point in the concurrent phase, concurrent-end
		t.Errorf("%d unlabelled points checked as cuts, want at least 3", checked2)
	}
	if checked != len(labels) {
		t.Errorf("checked %d labelled points, want %d (points: %d)", checked, len(labels), len(points))
	}
	mustEqualLatest(t, h)
}
