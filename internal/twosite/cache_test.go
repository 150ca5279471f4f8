package twosite

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/capture"
)

// With the WAN down, a full process-server cache stops acknowledging the
// agent, whose bounded journal then degrades to the dirty bitmap: visible
// states, nothing lost, and everything caught up once the WAN is back.
func TestFullCacheSlowsTheAgentDown(t *testing.T) {
	ctx := context.Background()
	const diskSize = 32 << 20
	h := Start(t, Options{Disks: []int64{diskSize}, CacheQuota: 2 << 20, Logger: testLogger(t), Agent: func(c *agent.Config) {
		c.Journal.SegmentSize, c.Journal.Limit = "256KiB", "2MiB"
	}})
	h.WaitProtected(30 * time.Second)
	h.WAN.Cut()
	d := h.DialDisk(ctx, 0)
	r := rand.New(rand.NewPCG(3, 3))
	buf := make([]byte, 32<<10)
	for range 400 { // 12.5 MiB: more than the cache and the journal together
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if _, err := d.WriteAt(buf, r.Int64N(diskSize/len64(buf))*len64(buf)); err != nil {
			t.Fatal(err)
		}
	}
	h.WaitFor(30*time.Second, "the agent to overflow into its dirty bitmap", func() bool {
		st := h.Agent.Machine().Stats()
		return st.DirtyBytes > 0 && (st.State == capture.StateOverflow || st.State == capture.StateResyncing)
	})
	if used, quota := h.Process.Status().CacheUsed, h.Process.Status().CacheQuota; used > quota {
		t.Fatalf("cache holds %d bytes, quota %d", used, quota)
	}
	h.WAN.Restore()
	var seq uint64
	h.WaitFor(60*time.Second, "resync and a bookmark", func() bool {
		var err error
		seq, err = h.Agent.Machine().Bookmark("after", false)
		return err == nil
	})
	h.WaitApplied(60*time.Second, seq)
	mustEqualLatest(t, h)
}

func len64(b []byte) int64 { return int64(len(b)) }

// Every role exports Prometheus metrics: RPO, churn, bytes before and
// after packing, cache and journal usage, apply lag.
func TestMetricsOnEveryRole(t *testing.T) {
	h := Start(t, Options{Disks: []int64{4 << 20}, Logger: testLogger(t)})
	h.WaitProtected(30 * time.Second)
	get := func(hd http.Handler) string {
		rec := httptest.NewRecorder()
		hd.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	resp, err := http.Get("http://" + h.Agent.StatusAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for role, tc := range map[string]struct {
		text string
		want []string
	}{
		"agent":   {string(b), []string{"standby_rpo_seconds", "standby_capture_write_bytes_total", "standby_journal_bytes", "standby_replication_state"}},
		"process": {get(h.Process.Handler()), []string{"standby_process_cache_bytes", "standby_process_bytes_out_before_packing_total", "standby_process_bytes_out_total", "standby_process_machine_applied_seq"}},
		"target":  {get(h.Target.Handler()), []string{"standby_target_apply_lag_seconds", "standby_target_points", "standby_target_bytes_in_total", "standby_target_bytes_out_total"}},
	} {
		for _, w := range tc.want {
			if !strings.Contains(tc.text, w) {
				t.Errorf("%s /metrics lacks %s", role, w)
			}
		}
	}
}

// Adaptive compression compresses when the WAN is the bottleneck (here a
// 1 MiB/s bandwidth limit, far slower than zstd even on a loaded machine):
// the packed bytes are well under the segment bytes.
func TestAdaptiveCompressionOnASlowLink(t *testing.T) {
	if raceEnabled {
		t.Skip("under the race detector zstd runs at ~0.5 MB/s, slower than the link: the policy then rightly sends plain")
	}
	ctx := context.Background()
	h := Start(t, Options{Disks: []int64{32 << 20}, Adaptive: true, Bandwidth: 1 << 20, Logger: testLogger(t), Agent: func(c *agent.Config) {
		c.Journal.SegmentSize = "512KiB"
	}})
	h.WaitProtected(30 * time.Second)
	d := h.DialDisk(ctx, 0)
	r := rand.New(rand.NewPCG(4, 4))
	words := []string{"standby ", "replica ", "journal ", "segment ", "bookmark ", "machine "}
	buf := make([]byte, 64<<10)
	for i := range 96 { // 6 MiB of text-like data
		for j := 0; j < len(buf); {
			j += copy(buf[j:], words[r.IntN(len(words))])
		}
		if _, err := d.WriteAt(buf, int64(i)*int64(len(buf))); err != nil {
			t.Fatal(err)
		}
	}
	seq, err := h.Agent.Machine().Bookmark("written", false)
	if err != nil {
		t.Fatal(err)
	}
	h.WaitApplied(60*time.Second, seq)
	st := h.Process.Status()
	t.Logf("forwarded %d segment bytes as %d", st.TargetBefore, st.TargetAfter)
	if float64(st.TargetAfter) > 0.6*float64(st.TargetBefore) { // text packs to ~12%; the first segments may go plain while the estimate warms up
		t.Errorf("a 1 MiB/s link carried %d bytes for %d of text: adaptive compression did not compress", st.TargetAfter, st.TargetBefore)
	}
	mustEqualLatest(t, h)
}
