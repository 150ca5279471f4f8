package twosite

import (
	"context"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A process server that loses its cache after the agent dropped the
// segments it held leaves a gap: the agent notices, compares block maps
// with the replica and sends only the blocks that differ, never the disk.
func TestLostCacheResyncSendsOnlyDifferingBlocks(t *testing.T) {
	ctx := context.Background()
	const diskSize = 32 << 20
	h := Start(t, Options{Disks: []int64{diskSize}, Fill: fillHalf(5), Logger: testLogger(t)})
	h.WaitProtected(30 * time.Second)
	before := h.Replication()

	h.WAN.Cut()
	d := h.DialDisk(ctx, 0)
	r := rand.New(rand.NewPCG(5, 5))
	buf := make([]byte, 4096)
	const writes = 100
	for range writes {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if _, err := d.WriteAt(buf, r.Int64N(diskSize/4096)*4096); err != nil {
			t.Fatal(err)
		}
	}
	seq, err := h.Agent.Machine().Bookmark("before-cache-loss", false)
	if err != nil {
		t.Fatal(err)
	}
	h.WaitFor(30*time.Second, "the cache holds the writes", func() bool { return h.Replication().Durable.Seq >= seq })
	h.StopProcess()
	if err := os.RemoveAll(filepath.Join(h.Dir, "cache")); err != nil {
		t.Fatal(err)
	}
	h.StartProcess()
	h.WAN.Restore()

	h.WaitFor(60*time.Second, "a new comparison", func() bool {
		r := h.Replication()
		return r.ComparedAt != before.ComparedAt && r.State == "protected" && r.Consistent
	})
	after := h.Replication()
	t.Logf("after the cache loss: compared again, %d bytes of blocks differed (%d writes of 4 KiB; disk %d)", after.ResyncBytes, writes, diskSize)
	if max := int64(writes * 64 << 10); after.ResyncBytes > max || after.ResyncBytes == 0 {
		t.Errorf("resync sent %d bytes of blocks, want 1..%d (the blocks the lost writes touched)", after.ResyncBytes, max)
	}
	final, err := h.Agent.Machine().Bookmark("after", false)
	if err != nil {
		t.Fatal(err)
	}
	h.WaitApplied(30*time.Second, final)
	mustEqualLatest(t, h)
}

// A restarted process server forwards what its cache holds even while the
// agent is away.
func TestRestartedProcessServerForwardsWithoutTheAgent(t *testing.T) {
	ctx := context.Background()
	h := Start(t, Options{Disks: []int64{8 << 20}, Logger: testLogger(t)})
	h.WaitProtected(30 * time.Second)
	h.WAN.Cut()
	d := h.DialDisk(ctx, 0)
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	if _, err := d.WriteAt(buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	seq, err := h.Agent.Machine().Bookmark("cached", false)
	if err != nil {
		t.Fatal(err)
	}
	h.WaitFor(30*time.Second, "the cache holds the write", func() bool { return h.Replication().Durable.Seq >= seq })
	h.StopAgent()
	h.StopProcess()
	h.WAN.Restore()
	h.StartProcess()
	h.WaitFor(30*time.Second, "the cached bookmark applied", func() bool {
		r, _, ok := h.Target.Lookup("web01")
		return ok && r.Status().Applied.Seq >= seq
	})
}

// Comparing equal disks costs next to nothing: the roots of the hash
// trees match, and nothing is sent (a seeded copy, or an operator's
// resync of a machine that is in step).
func TestResyncOfEqualDisksSendsNothing(t *testing.T) {
	h := Start(t, Options{Disks: []int64{64 << 20, 16 << 20}, Fill: fillHalf(8), Logger: testLogger(t)})
	h.WaitProtected(30 * time.Second)
	first := h.Replication()
	resp, err := http.Post("http://"+h.Agent.StatusAddr().String()+"/resync", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /resync: %s", resp.Status)
	}
	h.WaitFor(30*time.Second, "a new comparison", func() bool {
		r := h.Replication()
		return r.ComparedAt != first.ComparedAt && r.State == "protected"
	})
	got := h.Replication()
	t.Logf("initial: %d bytes sent, %d tree hashes fetched; again: %d bytes, %d hashes", first.ResyncBytes, first.CompareHashes, got.ResyncBytes, got.CompareHashes)
	if got.ResyncBytes != 0 {
		t.Errorf("comparing equal disks found %d bytes to send", got.ResyncBytes)
	}
	if got.CompareHashes > 2 { // one root per disk
		t.Errorf("comparing equal disks fetched %d tree hashes, want one per disk", got.CompareHashes)
	}
	mustEqualLatest(t, h)
}

// A replica whose epoch was raised (a failover elsewhere) fences the old
// primary: the agent stops shipping and says so; its writes go on locally.
func TestFencedAgentStopsShipping(t *testing.T) {
	ctx := context.Background()
	h := Start(t, Options{Disks: []int64{8 << 20}, Logger: testLogger(t)})
	h.WaitProtected(30 * time.Second)
	rep := h.Replica()
	st := rep.Status()
	if err := rep.Rebase(ctx, st.Applied, st.Epoch+1); err != nil {
		t.Fatal(err)
	}
	d := h.DialDisk(ctx, 0)
	if _, err := d.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Agent.Machine().Bookmark("after-fence", false); err != nil {
		t.Fatal(err)
	}
	h.WaitFor(30*time.Second, "the agent fenced", func() bool { return h.Replication().State == "fenced" })
	if got := rep.Status().Applied; got != st.Applied {
		t.Errorf("the fenced agent's segments were applied: %s, was %s", got, st.Applied)
	}
	if _, err := d.WriteAt(make([]byte, 4096), 4096); err != nil {
		t.Errorf("writes after the fence: %v (the machine keeps running; only shipping stops)", err)
	}
}
