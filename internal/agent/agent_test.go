package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/loadgen"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/nbd/nbdtest"
	"github.com/standby-dr/standby/internal/testutil"
)

// testAgent runs an agent in this process over a unix socket.
type testAgent struct {
	*Agent
	cfg    Config
	disks  []string // image paths
	bases  []string // their starting content
	cancel context.CancelFunc
	done   chan error
}

func startTestAgent(t *testing.T, sizes []int64, edit func(*Config)) *testAgent {
	t.Helper()
	dir := t.TempDir()
	cfg := Defaults()
	cfg.Machine, cfg.StateDir = "test01", filepath.Join(dir, "state")
	cfg.Listen.Unix = filepath.Join(dir, "agent.sock")
	cfg.Status = "127.0.0.1:0"
	cfg.Journal.SegmentSize = "1MiB"
	cfg.Journal.Limit = "4GiB"
	cfg.BookmarkInterval = "1s"
	ta := &testAgent{cfg: cfg, done: make(chan error, 1)}
	for i, size := range sizes {
		p := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		testutil.WriteImage(t, p, size, min(size/4, 4<<20), uint64(i))
		base := p + ".base"
		testutil.CopyFile(t, p, base)
		ta.disks, ta.bases = append(ta.disks, p), append(ta.bases, base)
		ta.cfg.Disks = append(ta.cfg.Disks, DiskConfig{Name: fmt.Sprintf("disk%d", i), Path: p})
	}
	if edit != nil {
		edit(&ta.cfg)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := New(context.Background(), ta.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ta.Agent = a
	var ctx context.Context
	ctx, ta.cancel = context.WithCancel(context.Background())
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
	return ta
}

func (ta *testAgent) stop(t *testing.T) {
	t.Helper()
	if ta.cancel == nil {
		return
	}
	ta.cancel()
	ta.cancel = nil
	if err := <-ta.done; err != nil {
		t.Fatalf("agent: %v", err)
	}
}

// checkReplay stops the agent, replays its journal onto the starting
// images and requires them to equal the disks.
func (ta *testAgent) checkReplay(t *testing.T) {
	t.Helper()
	ta.stop(t)
	backs, _ := openImages(t, ta.bases)
	if _, err := capture.Replay(context.Background(), filepath.Join(ta.cfg.StateDir, "journal"), backs, capture.ReplayOptions{}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	for i := range ta.disks {
		testutil.MustEqualFiles(t, ta.disks[i], ta.bases[i])
	}
}

// openImages opens image files for replay, closed at the test's end, as
// backends and as readers.
func openImages(t *testing.T, paths []string) ([]nbd.Backend, []io.ReaderAt) {
	t.Helper()
	var backs []nbd.Backend
	var readers []io.ReaderAt
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		b, err := nbd.NewFileBackend(f)
		if err != nil {
			t.Fatal(err)
		}
		backs, readers = append(backs, b), append(readers, f)
	}
	return backs, readers
}

func (ta *testAgent) uri(export string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, ta.cfg.Listen.Unix)
}

// TestRealClients runs qemu-io, qemu-img, nbdcopy, nbdinfo, fio and
// nbdfuse + losetup + mkfs.ext4 + mount + fsck against the agent's export,
// then proves that the journal reproduces the disk they left behind.
func TestRealClients(t *testing.T) {
	const size = 256 << 20
	ta := startTestAgent(t, []int64{size}, nil)
	nbdtest.RunClientSuite(t, ta.uri("disk0"), size)
	st := ta.Machine().Stats()
	if st.Writes == 0 || st.Flushes == 0 {
		t.Fatalf("the clients' writes did not go through capture: %+v", st)
	}
	t.Logf("capture: %d writes (%d bytes), %d zeroes, %d trims, %d flushes in %d sync rounds",
		st.Writes, st.WriteBytes, st.Zeroes, st.Trims, st.Flushes, st.SyncRounds)
	ta.checkReplay(t)
}

func TestStatusEndpoint(t *testing.T) {
	ta := startTestAgent(t, []int64{8 << 20, 4 << 20}, nil)
	c, err := nbd.Dial(context.Background(), "unix", ta.cfg.Listen.Unix, "disk1", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteAt([]byte("hello"), 4096); err != nil {
		t.Fatal(err)
	}
	c.Close()
	base := "http://" + ta.StatusAddr().String()
	resp, err := http.Post(base+"/bookmark?label=before-upgrade&app=false", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var bm BookmarkResult
	json.NewDecoder(resp.Body).Decode(&bm)
	resp.Body.Close()
	if resp.StatusCode != 200 || bm.Seq != 2 || bm.AppConsistent {
		t.Fatalf("bookmark: %d %v", resp.StatusCode, bm)
	}
	resp, err = http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st.Capture.Writes != 1 || st.Capture.Bookmarks != 1 || len(st.Disks) != 2 || st.Disks[1].Size != 4<<20 {
		t.Fatalf("status: %+v", st)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`standby_capture_writes_total{machine="test01"} 1`)) {
		t.Fatalf("metrics:\n%s", body)
	}
	ta.checkReplay(t)
}

// TestOverflowKeepsServing fills a tiny journal: the agent switches to the
// dirty bitmap, keeps serving, and the bitmap covers every write made
// while overflowed.
func TestOverflowKeepsServing(t *testing.T) {
	ta := startTestAgent(t, []int64{32 << 20}, func(c *Config) {
		c.Journal.SegmentSize, c.Journal.Limit = "64KiB", "256KiB"
	})
	c, err := nbd.Dial(context.Background(), "unix", ta.cfg.Listen.Unix, "disk0", nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 32<<10)
	type w struct{ off, n int64 }
	var after []w
	for i := 0; i < 300; i++ {
		n := int64(512 * (1 + r.IntN(64)))
		off := r.Int64N(c.Size()-n) &^ 511
		if _, err := c.WriteAt(buf[:n], off); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if ta.Machine().Stats().State == capture.StateOverflow {
			after = append(after, w{off, n})
		}
	}
	if len(after) < 200 {
		t.Fatalf("only %d of 300 writes happened in overflow", len(after))
	}
	dirty := ta.Machine().DirtyExtents()
	for _, x := range after {
		for b := x.off; b < x.off+x.n; b += 512 {
			ok := false
			for _, e := range dirty {
				ok = ok || (b >= e.Offset && b < e.Offset+e.Length)
			}
			if !ok {
				t.Fatalf("write at %d (+%d) while overflowed is not in the dirty bitmap", x.off, x.n)
			}
		}
	}
	// Reads still work and see the newest data.
	got := make([]byte, after[len(after)-1].n)
	if _, err := c.ReadAt(got, after[len(after)-1].off); err != nil || !bytes.Equal(got, buf[:len(got)]) {
		t.Fatalf("read after overflow: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// TestBookmarksAreConsistentCuts drives the load generator's
// self-describing writes through the agent across two disks, takes a
// bookmark after every hundred writes, and replays the journal up to each
// bookmark onto the starting images: each must hold exactly the writes
// issued before its bookmark, on both disks.
func TestBookmarksAreConsistentCuts(t *testing.T) {
	ta := startTestAgent(t, []int64{16 << 20, 8 << 20}, func(c *Config) { c.BookmarkInterval = "off" })
	ctx := context.Background()
	var disks []loadgen.Disk
	for i := range 2 {
		c, err := nbd.Dial(ctx, "unix", ta.cfg.Listen.Unix, fmt.Sprintf("disk%d", i), nbd.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		disks = append(disks, c)
	}
	g, err := loadgen.NewGenerator(disks, loadgen.Options{Seed: 7, MaxBlocks: 32, Distribution: loadgen.HotSpot})
	if err != nil {
		t.Fatal(err)
	}
	type point struct{ seq, writes uint64 }
	var points []point
	for i := 1; i <= 5; i++ {
		if err := g.Run(ctx, 100); err != nil {
			t.Fatal(err)
		}
		seq, err := ta.Machine().Bookmark(fmt.Sprintf("after %d writes", 100*i), false)
		if err != nil {
			t.Fatal(err)
		}
		points = append(points, point{seq, uint64(100 * i)})
	}
	ta.stop(t)
	log := g.Log()
	for _, p := range points {
		var replicas []string
		for _, base := range ta.bases {
			path := filepath.Join(t.TempDir(), "replica.img")
			testutil.CopyFile(t, base, path)
			replicas = append(replicas, path)
		}
		backs, images := openImages(t, replicas)
		pos, err := capture.Replay(ctx, filepath.Join(ta.cfg.StateDir, "journal"), backs, capture.ReplayOptions{UpTo: p.seq})
		if err != nil || pos.Seq != p.seq {
			t.Fatalf("replay to bookmark %d: reached %s, %v", p.seq, pos, err)
		}
		if err := loadgen.CheckExact(log, loadgen.Images{Disks: images, Initial: loadgen.InitialForeign}, p.writes); err != nil {
			t.Fatalf("bookmark %d (after %d writes): %v", p.seq, p.writes, err)
		}
		if p.writes > 100 {
			// And it is not the state of an earlier bookmark.
			if err := loadgen.CheckExact(log, loadgen.Images{Disks: images, Initial: loadgen.InitialForeign}, p.writes-100); err == nil {
				t.Fatalf("bookmark %d also passes as the state after %d writes", p.seq, p.writes-100)
			}
		}
	}
}
