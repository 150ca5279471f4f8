package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/execdriver"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/process"
	"github.com/standby-dr/standby/internal/retention"
	"github.com/standby-dr/standby/internal/server"
	"github.com/standby-dr/standby/internal/target"
	"github.com/standby-dr/standby/internal/trust"
)

type (
	controlMachine = control.Machine
	controlJob     = control.Job
)

// runTwoSiteDemo runs both sites on this machine: the configuration
// server, then a master target, a process server and an agent that join
// it with one-time tokens and take their orders from it; protection
// through the server (a job), a workload with the achieved RPO, the
// recovery points, and the replica checked against the source.
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
	rctx, stopRoles := context.WithCancel(context.Background())
	defer stopRoles()

	// Secondary site: the configuration server, with its CA and store.
	scfg := server.Defaults()
	scfg.Listen, scfg.DataDir, scfg.LogLevel = "127.0.0.1:0", filepath.Join(o.dir, "secondary", "server"), "warn"
	scfg.ConsistencyInterval = "2s" // the plan's multi-machine consistent points come quickly
	srv, err := server.New(ctx, server.Options{Config: scfg, Log: log, Version: version, AssessEvery: time.Second})
	if err != nil {
		return err
	}
	defer srv.Close()
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(rctx, sl) }()
	defer func() { stopRoles(); <-srvDone }()
	serverURL := "https://" + sl.Addr().String()
	adminTok, err := os.ReadFile(filepath.Join(scfg.DataDir, "admin.token"))
	if err != nil {
		return err
	}
	admin, err := client.New(client.Options{Server: serverURL, Token: strings.TrimSpace(string(adminTok)), CAFile: filepath.Join(scfg.DataDir, "ca.crt")})
	if err != nil {
		return err
	}
	step("Secondary site: configuration server on %s (its CA, SQLite store, first admin token in %s)", sl.Addr(), filepath.Join(scfg.DataDir, "admin.token"))
	join := func(role control.Role, name, addr string) (string, error) {
		var tok struct {
			Token string `json:"token"`
		}
		if err := admin.Do(ctx, "POST", "/v1/tokens", map[string]string{"role": string(role), "ttl": "10m"}, &tok); err != nil {
			return "", err
		}
		dir := filepath.Join(o.dir, "identity", name)
		var hosts []string
		if addr != "" {
			hosts = []string{"127.0.0.1"}
		}
		id, err := trust.Join(ctx, trust.JoinOptions{ServerURL: serverURL, Token: tok.Token, Role: role, Name: name, Address: addr, Version: version, Dir: dir, Hosts: hosts})
		if err != nil {
			return "", fmt.Errorf("join %s: %w", name, err)
		}
		fmt.Fprintf(w, "    %s joined with a one-time token: certificate for %s\n", name, id)
		return dir, nil
	}

	// Secondary site: the master target, joined and managed.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tgtID, err := join(control.RoleTarget, "mt1", tl.Addr().String())
	if err != nil {
		return err
	}
	// Replica machines of failovers: a stand-in hypervisor (a sleep per
	// machine) through the exec driver; the demo reads their disks itself.
	vm := filepath.Join(o.dir, "secondary", "vm.sh")
	if err := os.WriteFile(vm, []byte(demoVM), 0o755); err != nil {
		return err
	}
	drv, err := execdriver.New(execdriver.Options{Start: []string{"/bin/sh", vm, "start"}, Stop: []string{"/bin/sh", vm, "stop"},
		Status: []string{"/bin/sh", vm, "status"}, Dir: filepath.Dir(vm)}, log)
	if err != nil {
		return err
	}
	tgt, err := target.New(ctx, target.Options{DataDir: filepath.Join(o.dir, "secondary", "target"), Logger: log,
		Retention: retention.Policy{KeepAll: time.Hour}, PruneInterval: 5 * time.Second,
		Exports: target.ExportsOptions{Unix: filepath.Join(o.dir, "secondary", "exports.sock")}, Driver: drv, ReverseAgent: reverseAgent,
		Control: &target.Control{Server: serverURL, Identity: tgtID, Address: tl.Addr().String(), Heartbeat: time.Second, Version: version}})
	if err != nil {
		return err
	}
	defer tgt.Close()
	go tgt.Serve(rctx, tl)
	step("Secondary site: master target on %s (mutual TLS with the joined identity)", tl.Addr())

	// Primary site: the process server, then the agent.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	psID, err := join(control.RoleProcess, "ps1", pl.Addr().String())
	if err != nil {
		return err
	}
	// The process server logs errors only: after the failover it warns,
	// rightly, that it keeps the fenced machine's data without a target.
	ps, err := process.New(process.Options{CacheDir: filepath.Join(o.dir, "primary", "cache"), Quota: 1 << 30, Logger: e.logger("error"),
		Control: &process.Control{Server: serverURL, Identity: psID, Address: pl.Addr().String(), Heartbeat: time.Second, Version: version}})
	if err != nil {
		return err
	}
	defer ps.Close()
	go ps.Serve(rctx, pl)
	step("Primary site: process server on %s, cache 1GiB, zstd + zero elimination + dedup to the target it is told", pl.Addr())

	// Primary site: a master target for the reverse direction (after a
	// failover, the machine is protected back to this site, in place over
	// its old disk).
	tl2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tgt2ID, err := join(control.RoleTarget, "mt2", tl2.Addr().String())
	if err != nil {
		return err
	}
	tgt2, err := target.New(ctx, target.Options{DataDir: filepath.Join(o.dir, "primary", "target"), Logger: log,
		Retention: retention.Policy{KeepAll: time.Hour}, PruneInterval: 5 * time.Second,
		Control: &target.Control{Server: serverURL, Identity: tgt2ID, Address: tl2.Addr().String(), Heartbeat: time.Second, Version: version}})
	if err != nil {
		return err
	}
	defer tgt2.Close()
	go tgt2.Serve(rctx, tl2)
	step("Primary site: master target mt2 on %s, for the reverse direction", tl2.Addr())

	// The source machine web01: a stand-in (a sleep) through the exec
	// driver, which a planned failover stops and a failback starts.
	srcDrv, err := execdriver.New(execdriver.Options{Start: []string{"/bin/sh", vm, "start"}, Stop: []string{"/bin/sh", vm, "stop"},
		Status: []string{"/bin/sh", vm, "status"}, Dir: filepath.Join(o.dir, "primary")}, log)
	if err != nil {
		return err
	}
	if _, err := srcDrv.Start(ctx, driver.Machine{Name: "web01-src", Disks: []driver.Disk{{Name: "root", Path: disk}}}); err != nil {
		return fmt.Errorf("start the source machine: %w", err)
	}
	defer srcDrv.Stop(context.Background(), "web01-src", true)

	// startAgent joins host's agent and runs it for machine's disk, its
	// source machine known to the exec driver as <machine>-src.
	startAgent := func(machine, host, disk string) (a *agent.Agent, sock string, stop func() error, err error) {
		agentID, err := join(control.RoleAgent, host, "")
		if err != nil {
			return nil, "", nil, err
		}
		sock = filepath.Join(o.dir, machine+".sock")
		cfg := agent.Defaults()
		cfg.Machine, cfg.StateDir, cfg.Listen.Unix = machine, filepath.Join(o.dir, "primary", "agent-"+machine), sock
		cfg.Disks = []agent.DiskConfig{{Name: "root", Path: disk}}
		cfg.BookmarkInterval, cfg.Journal.SegmentSize, cfg.LogLevel = "1s", "8MiB", "warn"
		cc := agent.ControlDefaults()
		cc.Server, cc.Identity, cc.Heartbeat = serverURL, agentID, "1s"
		cfg.Control = &cc
		cfg.Source = &agent.SourceConfig{Driver: driver.Config{Name: "exec"}, Handle: machine + "-src"}
		// The agent logs errors only: the demo tells what it does (writes
		// refused at the planned failover, fenced after it).
		if a, err = agent.New(ctx, cfg, e.logger("error")); err != nil {
			return nil, "", nil, err
		}
		a.SetSourceDriver(srcDrv)
		actx, cancel := context.WithCancel(rctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(actx) }()
		var once sync.Once
		var runErr error
		return a, sock, func() error { once.Do(func() { cancel(); runErr = <-done }); return runErr }, nil
	}
	a, sock, stopAgent, err := startAgent("web01", "host1", disk)
	if err != nil {
		return err
	}
	defer stopAgent()
	step("Agent serving disk %q at nbd+unix:///root?socket=%s, journaling every write; it reports web01 to the server", "root", sock)

	// Through the server, as an operator: a protection group, then protect.
	if err := waitDemo(ctx, time.Minute, func() bool {
		return admin.Do(ctx, "GET", "/v1/machines/web01", nil, nil) == nil
	}); err != nil {
		return fmt.Errorf("the agent did not report web01 to the server: %w", err)
	}
	if err := admin.Do(ctx, "POST", "/v1/groups", map[string]any{"name": "demo", "policy": map[string]any{"point_interval": "1s", "rpo_threshold": "10s"}}, nil); err != nil {
		return err
	}
	start := time.Now()
	var pr struct {
		Machine controlMachine `json:"machine"`
		Job     controlJob     `json:"job"`
	}
	if err := admin.Do(ctx, "POST", "/v1/machines/web01/protect", map[string]string{"group": "demo", "process": "ps1", "target": "mt1"}, &pr); err != nil {
		return err
	}
	step("Protect web01 in group \"demo\" (points every second) through process server ps1 to master target mt1 at the secondary site; job %s", pr.Job.ID)
	var job controlJob
	if err := waitDemo(ctx, 5*time.Minute, func() bool {
		return admin.Do(ctx, "GET", "/v1/jobs/"+pr.Job.ID, nil, &job) == nil && job.State.Done()
	}); err != nil {
		return fmt.Errorf("initial replication: %w (%+v)", err, *a.Status().Replication)
	}
	if job.State != control.JobSucceeded {
		return fmt.Errorf("protect job %s: %s", job.State, job.Error)
	}
	rs := a.Status().Replication
	how := "journaled"
	if rs.ResyncMode == "copy" {
		how = "copied straight into the new replica"
	}
	fmt.Fprintf(w, "    job %s: %s; initial replication: %s of %s disk compared and %s in %s (holes and zero blocks skipped)\n",
		job.State, job.Result, humanBytes(uint64(rs.ResyncBytes)), humanBytes(uint64(o.size)), how, time.Since(start).Round(time.Millisecond))

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

	var cat struct {
		Points []control.RecoveryPoint `json:"points"`
	}
	waitDemo(ctx, 10*time.Second, func() bool {
		return admin.Do(ctx, "GET", "/v1/machines/web01/points", nil, &cat) == nil && len(cat.Points) >= len(rep.Points())
	})
	points := rep.Points()
	step("Recovery points at the secondary site: %d (crash-consistent every second, and the final bookmark); %d in the server's catalogue", len(points), len(cat.Points))
	for i, pt := range points {
		if i < 2 || i >= len(points)-3 {
			fmt.Fprintf(w, "    point %3d  seq %-7d %s  %s\n", pt.ID, pt.Seq, pt.Time.UTC().Format("15:04:05.000"), pt.Label)
		} else if i == 2 {
			fmt.Fprintf(w, "    ...\n")
		}
	}

	step("Checking the replica at the final point against the source disk (the workload is over)")
	last := points[len(points)-1]
	v, err := rep.OpenPoint(ctx, last.ID)
	if err != nil {
		return err
	}
	hr := sha256.New()
	_, err = io.Copy(hr, io.NewSectionReader(v.DiskReaderAt(0), 0, v.Size(0)))
	v.Close() // the view pins the point: the commit at the end would keep it
	if err != nil {
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
	loseSite := func() error {
		// A last point that holds everything, then the primary is lost.
		seq, err := a.Machine().Bookmark("demo-before-loss", false)
		if err != nil {
			return err
		}
		if err := waitDemo(ctx, time.Minute, func() bool {
			rep, _, ok := tgt.Lookup("web01")
			return ok && rep.Status().Applied.Seq >= seq
		}); err != nil {
			return fmt.Errorf("the last point before the loss: %w", err)
		}
		return stopAgent()
	}
	stopDB, err := demoPlan(ctx, w, admin, o.dir, srcDrv, startAgent)
	if stopDB != nil {
		defer stopDB()
	}
	if err != nil {
		return err
	}
	if err := demoRecovery(ctx, w, demoSites{admin: admin, tgt: tgt, disk: disk, loseSite: loseSite}); err != nil {
		return err
	}
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

// demoVM is the demo's stand-in hypervisor for the exec driver: a replica
// machine is a sleep process.
const demoVM = `#!/bin/sh
case $1 in
start) sleep 3600 >/dev/null 2>&1 </dev/null & echo $! > "$STANDBY_MACHINE.pid"; echo "$STANDBY_MACHINE" ;;
stop) [ -f "$2.pid" ] && kill "$(cat "$2.pid")" 2>/dev/null; rm -f "$2.pid" ;;
status) [ -f "$2.pid" ] && kill -0 "$(cat "$2.pid")" 2>/dev/null && { echo running; exit 0; }; exit 3 ;;
esac
`

// demoSites is what the demo's recovery needs of the sites.
type demoSites struct {
	admin *client.Client
	tgt   *target.Target // mt1, at the secondary site
	disk  string         // the source machine's disk, at the primary site
	// loseSite takes a last point and stops the agent: the primary site
	// is lost.
	loseSite func() error
}

// demoRecovery runs the whole recovery cycle through the server, each
// operation a job, and checks the data each gives back: a test failover
// and its cleanup, a planned failover, re-protection to the primary site,
// writes at the secondary, failback, protection in the original
// direction; then the primary site is lost: an unplanned failover with
// hydration, and the commit. Each step prints its time and the data lost.
func demoRecovery(ctx context.Context, w io.Writer, d demoSites) error {
	admin := d.admin
	step := func(format string, a ...any) { fmt.Fprintf(w, "==> "+format+"\n", a...) }
	job := func(path string, body any) (controlMachine, time.Duration, error) {
		t0 := time.Now()
		var r struct {
			Machine controlMachine `json:"machine"`
			Job     controlJob     `json:"job"`
		}
		if err := admin.Do(ctx, "POST", path, body, &r); err != nil {
			return r.Machine, 0, err
		}
		var j controlJob
		if err := waitDemo(ctx, 2*time.Minute, func() bool {
			return admin.Do(ctx, "GET", "/v1/jobs/"+r.Job.ID, nil, &j) == nil && j.State.Done()
		}); err != nil {
			return r.Machine, 0, fmt.Errorf("%s: %w", path, err)
		}
		took := time.Since(t0)
		if j.State != control.JobSucceeded {
			return r.Machine, took, fmt.Errorf("%s: job %s: %s", path, j.State, j.Error)
		}
		var m controlMachine
		err := admin.Do(ctx, "GET", "/v1/machines/web01", nil, &m)
		return m, took, err
	}
	exportConn := func(name string) (*nbd.Client, error) {
		ex, err := d.tgt.ExportByName(name)
		if err != nil {
			return nil, err
		}
		if len(ex.Disks) == 0 {
			return nil, fmt.Errorf("export %q has no disk", name)
		}
		return nbd.Dial(ctx, "unix", ex.Unix, ex.Disks[0].Export, nbd.ClientOptions{})
	}
	exportHash := func(name string) ([32]byte, error) {
		var sum [32]byte
		c, err := exportConn(name)
		if err != nil {
			return sum, err
		}
		defer c.Close()
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(c, 0, c.Size())); err != nil {
			return sum, err
		}
		copy(sum[:], h.Sum(nil))
		return sum, nil
	}
	lost := func(got, want [32]byte) string {
		if got == want {
			return "data lost: none (byte for byte equal)"
		}
		return "DATA LOST: the disks differ"
	}
	src, err := fileHash(d.disk)
	if err != nil {
		return err
	}

	step("Test failover of web01 at the latest point: the point exported as a writable overlay, an isolated replica machine started")
	m, took, err := job("/v1/machines/web01/test-failover", map[string]string{"point": "latest"})
	if err != nil {
		return err
	}
	th, err := exportHash(m.Test.Report.Export)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    done in %s: point %d exported as %s, replica machine %s; against the source: %s; the point is tagged \"tested\"\n",
		took.Round(time.Millisecond), m.Test.Report.PointID, m.Test.Report.Export, m.Test.Report.MachineState, lost(th, src))
	if th != src {
		return errors.New("the test failover's disk differs from the source")
	}
	if _, took, err = job("/v1/machines/web01/test-cleanup", map[string]string{}); err != nil {
		return err
	}
	fmt.Fprintf(w, "    cleanup in %s: replica machine stopped, export and overlay removed; the replica itself was never written\n", took.Round(time.Millisecond))

	step("Planned failover of web01: the agent stops the source machine, refuses writes, drains its journal; then fence and fail over to the final bookmark")
	if m, took, err = job("/v1/machines/web01/planned-failover", map[string]any{}); err != nil {
		return err
	}
	src, err = fileHash(d.disk) // the source as it stopped
	if err != nil {
		return err
	}
	fh, err := exportHash(m.Failover.Report.Export)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    replica machine running on point %d (the final bookmark) after %s, epoch %d; source %s; %s\n",
		m.Failover.Report.PointID, took.Round(time.Millisecond), m.Epoch, m.Failover.Drain.SourceState, lost(fh, src))
	if fh != src {
		return errors.New("the planned failover lost data")
	}

	step("Re-protect web01 to master target mt2 at the primary site, in place over the old disk: only what differs is sent")
	if m, took, err = job("/v1/machines/web01/reprotect", map[string]any{"target": "mt2"}); err != nil {
		return err
	}
	r := m.Reverse.Report
	fmt.Fprintf(w, "    protected in reverse after %s: %s of blocks differed, %s sent (the %s disk was not copied)\n",
		took.Round(time.Millisecond), humanBytes(uint64(r.ResyncBytes)), humanBytes(uint64(r.SentBytes)), humanBytes(uint64(m.Disks[0].Size)))

	step("The failed-over machine writes at the secondary site: 256 scattered 4 KiB blocks through its export")
	c, err := exportConn(m.Failover.Report.Export)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(7, 7))
	blk := make([]byte, 4096)
	for range 256 {
		for i := range blk {
			blk[i] = byte(rng.Uint32())
		}
		if _, err := c.WriteAt(blk, rng.Int64N(c.Size()/4096)*4096); err != nil {
			c.Close()
			return err
		}
	}
	err = c.Flush()
	c.Close()
	if err != nil {
		return err
	}
	final, err := exportHash(m.Failover.Report.Export)
	if err != nil {
		return err
	}
	if err := waitDemo(ctx, time.Minute, func() bool {
		h, err := fileHash(d.disk)
		return err == nil && h == final
	}); err != nil {
		return fmt.Errorf("the secondary's writes did not reach the primary's disk: %w", err)
	}
	fmt.Fprintf(w, "    the primary's disk, written in place by mt2, equals the failed-over machine's disk\n")

	step("Failback of web01: the replica machine is stopped and drained to the primary site; the agent continues on its disk and starts the source machine")
	if m, took, err = job("/v1/machines/web01/failback", map[string]any{}); err != nil {
		return err
	}
	back, err := fileHash(d.disk)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    failed back in %s: machine %s in the original direction (epoch %d); against the failed-over machine's disk: %s\n",
		took.Round(time.Millisecond), m.State, m.Epoch, lost(back, final))
	if back != final {
		return errors.New("the failback lost data")
	}

	step("The primary site is lost (the agent stops). Unplanned failover of web01: fence, export the latest point, start the replica machine, hydrate")
	if err := d.loseSite(); err != nil {
		return err
	}
	if m, took, err = job("/v1/machines/web01/failover", map[string]string{"point": "latest"}); err != nil {
		return err
	}
	fmt.Fprintf(w, "    replica machine running on point %d after %s (epoch %d: the old agent is fenced)\n", m.Failover.Report.PointID, took.Round(time.Millisecond), m.Epoch)
	if err := waitDemo(ctx, 2*time.Minute, func() bool {
		return admin.Do(ctx, "GET", "/v1/machines/web01", nil, &m) == nil && m.Failover != nil && m.Failover.Report.Hydration.Complete
	}); err != nil {
		return fmt.Errorf("hydration: %w", err)
	}
	hy := m.Failover.Report.Hydration
	if len(hy.Images) == 0 {
		return errors.New("hydration named no image")
	}
	ih, err := fileHash(hy.Images[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    hydrated %s to a standalone image %s after the failover call; against the source as it was lost: %s\n",
		humanBytes(uint64(hy.Total)), hy.CompletedAt.Sub(m.Failover.RequestedAt).Round(time.Millisecond), lost(ih, back))
	if ih != back {
		return errors.New("the hydrated image differs from the source")
	}
	if m, took, err = job("/v1/machines/web01/commit", map[string]string{}); err != nil {
		return err
	}
	var cat struct {
		Points []control.RecoveryPoint `json:"points"`
	}
	// The master target reports its catalogue at most once a second.
	waitDemo(ctx, 10*time.Second, func() bool {
		return admin.Do(ctx, "GET", "/v1/machines/web01/points", nil, &cat) == nil && len(cat.Points) == 1
	})
	var kept []string
	for _, p := range cat.Points {
		kept = append(kept, fmt.Sprintf("%d (%s)", p.ID, p.Label))
	}
	fmt.Fprintf(w, "    committed in %s: machine %s; recovery points kept: %s\n", took.Round(time.Millisecond), m.State, strings.Join(kept, ", "))
	return nil
}
