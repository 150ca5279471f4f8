package twosite

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/capture"
)

// An agent cut off from its process server fills its bounded journal,
// degrades to the dirty bitmap, and once the link is back sends the journal
// it kept plus the dirty chunks: never the whole disk, and without
// comparing block maps.
func TestOverflowResyncSendsOnlyDirtyExtents(t *testing.T) {
	ctx := context.Background()
	const diskSize = 64 << 20
	const journalLimit = 1 << 20
	h := Start(t, Options{Disks: []int64{diskSize}, Logger: testLogger(t), Agent: func(c *agent.Config) {
		c.Journal.SegmentSize, c.Journal.Limit = "256KiB", "1MiB"
	}})
	h.WaitProtected(30 * time.Second)
	first := h.Replication()

	h.LAN.Cut()
	d := h.DialDisk(ctx, 0)
	r := rand.New(rand.NewPCG(9, 9))
	buf := make([]byte, 4096)
	for range 600 {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if _, err := d.WriteAt(buf, r.Int64N(diskSize/4096)*4096); err != nil {
			t.Fatal(err)
		}
	}
	st := h.Agent.Machine().Stats()
	if st.State != capture.StateOverflow || st.DirtyBytes == 0 {
		t.Fatalf("after 2.4 MB of writes into a 1 MiB journal with no link: state %s, %d dirty bytes; want overflow", st.State, st.DirtyBytes)
	}
	dirty := st.DirtyBytes
	sentBefore := h.Replication().SentBytes
	h.LAN.Restore()
	var seq uint64
	h.WaitFor(60*time.Second, "resync and a bookmark", func() bool {
		var err error
		seq, err = h.Agent.Machine().Bookmark("after-resync", false)
		return err == nil
	})
	h.WaitApplied(60*time.Second, seq)
	got := h.Replication()
	sent := int64(got.SentBytes - sentBefore)
	t.Logf("dirty %d bytes, journal limit %d, sent %d bytes after the link came back (disk %d)", dirty, journalLimit, sent, diskSize)
	if limit := journalLimit + dirty + dirty/10 + 256<<10; sent > limit {
		t.Errorf("sent %d bytes after the outage, want at most %d (journal + dirty chunks)", sent, limit)
	}
	if dirty >= diskSize/2 {
		t.Errorf("%d dirty bytes for 600 writes of 4 KiB: the bitmap is too coarse", dirty)
	}
	if got.ComparedAt != first.ComparedAt {
		t.Errorf("the overflow caused a block-map comparison (%s → %s); want a resync of the dirty chunks only", first.ComparedAt, got.ComparedAt)
	}
	mustEqualLatest(t, h)
}
