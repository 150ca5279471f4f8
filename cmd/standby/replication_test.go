package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/loadgen"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/replica"
)

// roleProc is one `standby` role running as its own process.
type roleProc struct {
	t      *testing.T
	name   string
	args   []string
	ready  string // status address that answers when the role is up
	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited and been waited for
	stderr *lockedBuffer
}

// lockedBuffer is a bytes.Buffer the process's output copier and the test
// may use at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (p *roleProc) start() {
	p.t.Helper()
	cmd := exec.Command(standbyBin, p.args...)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done, p.stderr = cmd, done, stderr
	p.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + p.ready + "/status")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not start: %v\n%s", p.name, err, stderr)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// signal sends sig and waits for the process to exit. Safe to call from
// several goroutines (a kill timer and the test) and more than once.
func (p *roleProc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(sig)
	<-done
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// deployment is a two-site deployment of separate processes with mutual TLS.
type deployment struct {
	t                       *testing.T
	dir, disk, sock         string
	agentStatus, tgtStatus  string
	target, process, agentP *roleProc
}

func writeFile(t *testing.T, path, text string) {
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func startDeployment(t *testing.T, diskSize int64) *deployment {
	return startDeploymentWith(t, diskSize, deployOptions{})
}

// deployOptions vary a deployment.
type deployOptions struct {
	fill      func(*os.File) error // the source disk's content (nil: zeros)
	bandwidth string               // the process server's bandwidth_limit ("": off)
}

func startDeploymentWith(t *testing.T, diskSize int64, o deployOptions) *deployment {
	d := &deployment{t: t, dir: t.TempDir()}
	if o.bandwidth == "" {
		o.bandwidth = "off"
	}
	run(t, "certs", "create", "--dir", filepath.Join(d.dir, "pki"), "agent", "process", "target")
	pki := func(n string) string {
		return fmt.Sprintf("{cert: %s/pki/%s.crt, key: %s/pki/%s.key, ca: %s/pki/ca.crt}", d.dir, n, d.dir, n, d.dir)
	}
	tgt, ps := freePort(t), freePort(t)
	d.tgtStatus, d.agentStatus = freePort(t), freePort(t)
	psStatus := freePort(t)
	writeFile(t, filepath.Join(d.dir, "target.yaml"), fmt.Sprintf("listen: %s\ndata_dir: %s/target\ntls: %s\nstatus: %s\nlog_level: warn\n", tgt, d.dir, pki("target"), d.tgtStatus))
	writeFile(t, filepath.Join(d.dir, "process.yaml"), fmt.Sprintf("listen: %s\ncache_dir: %s/cache\ncache_quota: 256MiB\nmaster_target: %s\ntls: %s\nstatus: %s\nlog_level: warn\nbandwidth_limit: %s\n", ps, d.dir, tgt, pki("process"), psStatus, o.bandwidth))
	d.disk, d.sock = filepath.Join(d.dir, "disk.img"), filepath.Join(d.dir, "agent.sock")
	f, err := os.Create(d.disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(diskSize)
	if o.fill != nil {
		if err := o.fill(f); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	writeFile(t, filepath.Join(d.dir, "agent.yaml"), fmt.Sprintf(`machine: web01
state_dir: %s/agent
listen: {unix: %s}
disks: [{name: root, path: %s}]
journal: {segment_size: 256KiB, limit: 64MiB}
bookmark_interval: 1s
status: %s
log_level: warn
replication: {process_server: %s, tls: %s, ship_interval: 200ms}
`, d.dir, d.sock, d.disk, d.agentStatus, ps, pki("agent")))
	d.target = &roleProc{t: t, name: "target", args: []string{"target", "--config", filepath.Join(d.dir, "target.yaml")}, ready: d.tgtStatus}
	d.process = &roleProc{t: t, name: "process", args: []string{"process", "--config", filepath.Join(d.dir, "process.yaml")}, ready: psStatus}
	d.agentP = &roleProc{t: t, name: "agent", args: []string{"agent", "--config", filepath.Join(d.dir, "agent.yaml")}, ready: d.agentStatus}
	for _, p := range []*roleProc{d.target, d.process, d.agentP} {
		p.start()
		t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	}
	return d
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(standbyBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("standby %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func getJSON(t *testing.T, url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (d *deployment) replication() agent.ReplicationStatus {
	var st agent.Status
	if err := getJSON(d.t, "http://"+d.agentStatus+"/status", &st); err != nil || st.Replication == nil {
		return agent.ReplicationStatus{}
	}
	return *st.Replication
}

func (d *deployment) bookmark(label string) (uint64, error) {
	resp, err := http.Post("http://"+d.agentStatus+"/bookmark?label="+label, "", nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Seq   uint64
		Error string
	}
	json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("bookmark: %s %s", resp.Status, r.Error)
	}
	return r.Seq, nil
}

func (d *deployment) points() []replica.Point {
	var ps []replica.Point
	getJSON(d.t, "http://"+d.tgtStatus+"/machines/web01/points", &ps)
	return ps
}

func (d *deployment) waitFor(timeout time.Duration, what string, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out waiting for %s; replication %+v\ntarget:\n%s\nprocess:\n%s\nagent:\n%s", what, d.replication(),
				d.target.stderr, d.process.stderr, d.agentP.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pointImage downloads one disk of a recovery point.
func (d *deployment) pointImage(id uint64) io.ReaderAt {
	d.t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/machines/web01/points/%d/disks/0", d.tgtStatus, id))
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		d.t.Fatalf("point %d image: %s %v", id, resp.Status, err)
	}
	return bytes.NewReader(b)
}

// TestReplicationSurvivesSIGKILL runs agent, process server and master
// target as separate processes with mutual TLS, kills one at a random
// moment in each trial while a load generator writes through the agent,
// restarts it, and checks every labelled recovery point against the
// writes before its bookmark, and the final replica against the source.
func TestReplicationSurvivesSIGKILL(t *testing.T) {
	trials := 30
	if testing.Short() {
		trials = 5
	}
	if v := os.Getenv("STANDBY_SOAK_TRIALS"); v != "" {
		fmt.Sscan(v, &trials)
	}
	const diskSize = 8 << 20
	d := startDeployment(t, diskSize)
	d.waitFor(60*time.Second, "initial replication", func() bool {
		r := d.replication()
		return r.State == agent.ReplProtected && r.Consistent
	})
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	t.Logf("trials: %d", trials)
	killed := map[string]int{}
	for trial := 1; trial <= trials; trial++ {
		c, err := nbd.Dial(context.Background(), "unix", d.sock, "root", nbd.ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		g, err := loadgen.NewGenerator([]loadgen.Disk{c}, loadgen.Options{Seed: uint64(trial), MaxBlocks: 8})
		if err != nil {
			t.Fatal(err)
		}
		victim := []*roleProc{d.agentP, d.process, d.target}[rng.IntN(3)]
		killAt := time.Duration(rng.IntN(600)) * time.Millisecond
		killer := time.AfterFunc(killAt, func() { victim.signal(syscall.SIGKILL) })
		labels := map[string]uint64{}
		var lastSeq uint64
		agentDead := false
		for batch := 1; batch <= 4; batch++ {
			if err := g.Run(context.Background(), 40); err != nil {
				agentDead = true // the agent was killed mid-write
				break
			}
			label := fmt.Sprintf("t%d-b%d", trial, batch)
			seq, err := d.bookmark(label)
			if err != nil {
				if victim == d.agentP {
					agentDead = true
					break
				}
				t.Fatalf("trial %d: %v", trial, err)
			}
			labels[label], lastSeq = uint64(40*batch), seq
		}
		killer.Stop()
		c.Close()
		victim.signal(syscall.SIGKILL) // if the timer had not fired yet
		killed[victim.name]++
		_ = agentDead
		victim.start()
		if lastSeq > 0 {
			d.waitFor(60*time.Second, fmt.Sprintf("trial %d: seq %d applied", trial, lastSeq), func() bool {
				return d.replication().Applied.Seq >= lastSeq
			})
		}
		log := g.Log()
		found := 0
		for _, p := range d.points() {
			n, ok := labels[p.Label]
			if !ok {
				continue
			}
			found++
			im := loadgen.Images{Disks: []io.ReaderAt{d.pointImage(p.ID)}, Initial: loadgen.InitialForeign}
			if err := loadgen.CheckExact(log, im, n); err != nil {
				t.Fatalf("trial %d (killed %s after %s): point %d (%s): %v", trial, victim.name, killAt, p.ID, p.Label, err)
			}
		}
		if found != len(labels) {
			t.Fatalf("trial %d (killed %s after %s): %d of %d labelled points at the target", trial, victim.name, killAt, found, len(labels))
		}
	}
	t.Logf("killed: %v", killed)

	// The final replica equals the source, as `standby verify` proves.
	d.waitFor(60*time.Second, "protected", func() bool { return d.replication().State == agent.ReplProtected })
	seq, err := d.bookmark("final")
	if err != nil {
		t.Fatal(err)
	}
	d.waitFor(60*time.Second, "final bookmark applied", func() bool { return d.replication().Applied.Seq >= seq })
	d.agentP.signal(syscall.SIGTERM)
	out := run(t, "verify", "--status", d.tgtStatus, "--machine", "web01", "--point", "latest", "--source", d.disk, "-o", "json")
	if !strings.Contains(out, `"equal": true`) {
		t.Fatalf("verify: %s", out)
	}
	// And it notices a difference.
	bad := filepath.Join(d.dir, "bad.img")
	b, _ := os.ReadFile(d.disk)
	b[12345] ^= 1
	os.WriteFile(bad, b, 0o644)
	cmd := exec.Command(standbyBin, "verify", "--status", d.tgtStatus, "--machine", "web01", "--source", bad)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "DIFFERS") {
		t.Fatalf("verify of a changed source: %v\n%s", err, out)
	}
	out = run(t, "target", "points", "--status", d.tgtStatus, "web01")
	if !strings.Contains(out, "final") {
		t.Fatalf("target points does not list the final point:\n%s", out)
	}
}

// TestInitialCopySurvivesSIGKILL kills each role once in the middle of an
// initial replication that goes as a copy (a slow link makes it last),
// restarts it, and checks that replication then completes with a replica
// equal to the source: the interrupted copy is found by the next
// comparison and only what differs is sent again.
func TestInitialCopySurvivesSIGKILL(t *testing.T) {
	const diskSize = 32 << 20
	fill := func(f *os.File) error {
		r := rand.New(rand.NewPCG(7, 7))
		buf := make([]byte, 1<<20)
		for off := int64(0); off < diskSize*3/4; off += 1 << 20 {
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			if _, err := f.WriteAt(buf, off); err != nil {
				return err
			}
		}
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for _, name := range []string{"agent", "process", "target"} {
		t.Run(name, func(t *testing.T) {
			d := startDeploymentWith(t, diskSize, deployOptions{fill: fill, bandwidth: "8MiB/s"})
			victim := map[string]*roleProc{"agent": d.agentP, "process": d.process, "target": d.target}[name]
			d.waitFor(30*time.Second, "the copy to start", func() bool {
				r := d.replication()
				return r.ResyncMode == "copy" && r.ResyncLeft > 0
			})
			killAt := time.Duration(200+rng.IntN(1500)) * time.Millisecond
			time.Sleep(killAt) // the copy takes about 3 s at 8 MiB/s
			left := d.replication().ResyncLeft
			victim.signal(syscall.SIGKILL)
			victim.start()
			d.waitFor(120*time.Second, "protected after the restart", func() bool {
				r := d.replication()
				return r.State == agent.ReplProtected && r.Consistent
			})
			r := d.replication()
			t.Logf("killed the %s after %s with %d bytes of the copy left; then %+v", name, killAt, left, r)
			seq, err := d.bookmark("after-kill")
			if err != nil {
				t.Fatal(err)
			}
			d.waitFor(60*time.Second, "the bookmark applied", func() bool { return d.replication().Applied.Seq >= seq })
			out := run(t, "verify", "--status", d.tgtStatus, "--machine", "web01", "--point", "latest", "--source", d.disk, "-o", "json")
			if !strings.Contains(out, `"equal": true`) {
				t.Fatalf("verify after killing the %s mid-copy: %s", name, out)
			}
		})
	}
}
