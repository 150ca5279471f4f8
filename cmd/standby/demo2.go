package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/certs"
	"github.com/standby-dr/standby/internal/process"
	"github.com/standby-dr/standby/internal/retention"
	"github.com/standby-dr/standby/internal/target"
	"github.com/standby-dr/standby/internal/wire"
)

// runTwoSiteDemo runs both sites on this machine: a master target, a
// process server and an agent with mutual TLS between them; initial
// replication, a workload with the achieved RPO, the recovery points, and
// the replica checked against the source.
func runTwoSiteDemo(ctx context.Context, e *env, o demoOptions) error {
	w := e.stdout
	cleanup, err := o.workDir()
	if err != nil {
		return err
	}
	defer cleanup()
	step := func(format string, a ...any) { fmt.Fprintf(w, "==> "+format+"\n", a...) }
	log := e.logger("warn")
	disk := filepath.Join(o.dir, "web01-root.img")
	step("Primary site: a %s disk for machine web01 (half holes, like a real disk) in %s", humanBytes(uint64(o.size)), o.dir)
	if err := makeDemoDisk(disk, o.size); err != nil {
		return err
	}
	files, err := certs.Create(filepath.Join(o.dir, "pki"), []string{"agent", "process", "target"}, 24*time.Hour)
	if err != nil {
		return err
	}
	tlsOf := func(n string) wire.TLSFiles {
		return wire.TLSFiles{Cert: files[n].Cert, Key: files[n].Key, CA: files[n].CA}
	}
	rctx, stopRoles := context.WithCancel(context.Background())
	defer stopRoles()

	// Secondary site: the master target.
	tsrv, _ := tlsOf("target").ServerConfig()
	tgt, err := target.New(ctx, target.Options{DataDir: filepath.Join(o.dir, "secondary", "target"), TLS: tsrv, Logger: log,
		Retention: retention.Policy{KeepAll: time.Hour}, PruneInterval: 5 * time.Second})
	if err != nil {
		return err
	}
	defer tgt.Close()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go tgt.Serve(rctx, tl)
	step("Secondary site: master target on %s (mutual TLS)", tl.Addr())

	// Primary site: the process server, then the agent.
	psrv, _ := tlsOf("process").ServerConfig()
	pcli, _ := tlsOf("process").ClientConfig("localhost")
	ps, err := process.New(process.Options{CacheDir: filepath.Join(o.dir, "primary", "cache"), Quota: 1 << 30,
		Target: tl.Addr().String(), TargetTLS: pcli, TLS: psrv, Logger: log})
	if err != nil {
		return err
	}
	defer ps.Close()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go ps.Serve(rctx, pl)
	step("Primary site: process server on %s, cache 1GiB, zstd + zero elimination + dedup to the target", pl.Addr())

	sock := filepath.Join(o.dir, "web01.sock")
	cfg := agent.Defaults()
	cfg.Machine, cfg.StateDir, cfg.Listen.Unix = "web01", filepath.Join(o.dir, "primary", "agent"), sock
	cfg.Disks = []agent.DiskConfig{{Name: "root", Path: disk}}
	cfg.BookmarkInterval, cfg.Journal.SegmentSize, cfg.LogLevel = "1s", "8MiB", "warn"
	r := agent.ReplicationDefaults()
	r.ProcessServer, r.ServerName, r.TLS, r.ShipInterval = pl.Addr().String(), "localhost", tlsOf("agent"), "250ms"
	cfg.Replication = &r
	a, err := agent.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	actx, stopAgent := context.WithCancel(rctx)
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(actx) }()
	defer func() { stopAgent(); <-agentDone }()
	step("Agent serving disk %q at nbd+unix:///root?socket=%s, journaling every write", "root", sock)

	start := time.Now()
	if err := waitDemo(ctx, 5*time.Minute, func() bool {
		st := a.Status().Replication
		return st.State == agent.ReplProtected && st.Consistent
	}); err != nil {
		return fmt.Errorf("initial replication: %w (%+v)", err, *a.Status().Replication)
	}
	rs := a.Status().Replication
	how := "journaled"
	if rs.ResyncMode == "copy" {
		how = "copied straight into the new replica"
	}
	fmt.Fprintf(w, "    initial replication: %s of %s disk compared and %s in %s (holes and zero blocks skipped)\n",
		humanBytes(uint64(rs.ResyncBytes)), humanBytes(uint64(o.size)), how, time.Since(start).Round(time.Millisecond))

	step("Workload for %s over %d NBD connections; achieved RPO sampled every 250ms", o.duration, o.conns)
	var rpos []float64
	sampleDone := make(chan struct{})
	wctx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				if v := a.Status().Replication.RPOSeconds; v >= 0 {
					rpos = append(rpos, v)
				}
			}
		}
	}()
	stats, err := demoWorkload(ctx, sock, o)
	stopSampling()
	<-sampleDone
	if err != nil {
		return fmt.Errorf("workload: %w", err)
	}
	sort.Float64s(rpos)
	p := func(q float64) float64 {
		if len(rpos) == 0 {
			return 0
		}
		return rpos[min(len(rpos)-1, int(q*float64(len(rpos))))]
	}
	fmt.Fprintf(w, "    client: %d writes (%s), %d zeroes, %d trims, %d flushes\n",
		stats.writes.Load(), humanBytes(stats.bytes.Load()), stats.zeroes.Load(), stats.trims.Load(), stats.flushes.Load())
	fmt.Fprintf(w, "    achieved RPO: median %.2fs, p99 %.2fs, max %.2fs over %d samples\n", p(0.5), p(0.99), p(1), len(rpos))

	seq, err := a.Machine().Bookmark("demo-final", false)
	if err != nil {
		return err
	}
	rep, _, ok := tgt.Lookup("web01")
	if !ok {
		return errors.New("the master target has no replica of web01")
	}
	if err := waitDemo(ctx, time.Minute, func() bool { return rep.Status().Applied.Seq >= seq }); err != nil {
		return fmt.Errorf("waiting for the final bookmark at the target: %w", err)
	}
	pst, _ := ps.Status(), 0
	fmt.Fprintf(w, "    process server → target: %s of segments sent as %s (packing ratio %.2f)\n",
		humanBytes(pst.TargetBefore), humanBytes(pst.TargetAfter), float64(pst.TargetBefore)/max(1, float64(pst.TargetAfter)))

	points := rep.Points()
	step("Recovery points at the secondary site: %d (crash-consistent every second, and the final bookmark)", len(points))
	for i, pt := range points {
		if i < 2 || i >= len(points)-3 {
			fmt.Fprintf(w, "    point %3d  seq %-7d %s  %s\n", pt.ID, pt.Seq, pt.Time.UTC().Format("15:04:05.000"), pt.Label)
		} else if i == 2 {
			fmt.Fprintf(w, "    ...\n")
		}
	}

	step("Checking the replica at the final point against the source disk")
	stopAgent()
	if err := <-agentDone; err != nil {
		agentDone <- nil
		return fmt.Errorf("agent: %w", err)
	}
	agentDone <- nil
	last := points[len(points)-1]
	v, err := rep.OpenPoint(ctx, last.ID)
	if err != nil {
		return err
	}
	defer v.Close()
	hr := sha256.New()
	if _, err := io.Copy(hr, io.NewSectionReader(v.DiskReaderAt(0), 0, v.Size(0))); err != nil {
		return err
	}
	hs, err := fileHash(disk)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    source  sha256 %x\n    replica sha256 %x (point %d, %q)\n", hs, hr.Sum(nil), last.ID, last.Label)
	if string(hs[:]) != string(hr.Sum(nil)) {
		return errors.New("the replica differs from the source: replication FAILED")
	}
	step("The replica at the secondary site equals the source byte for byte.")
	if o.keep {
		fmt.Fprintf(w, "    kept %s\n", o.dir)
	}
	return nil
}

func waitDemo(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
