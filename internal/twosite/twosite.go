// Package twosite runs every replication role in one process over loopback:
// an agent at the primary site, a process server, and a master target at the
// secondary site, with mutual TLS between them and a Link (a cuttable TCP
// proxy) on each hop. Tests use it to write through the agent, cut or
// restore links, fill caches and restart roles, and then check the replica.
//
//	NBD client ──▶ agent ──LAN link──▶ process server ──WAN link──▶ master target
package twosite

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/certs"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/process"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/retention"
	"github.com/standby-dr/standby/internal/target"
	"github.com/standby-dr/standby/internal/wire"
)

// Options shape a two-site deployment.
type Options struct {
	Disks []int64 // sizes of the machine's disks
	// Fill writes a disk's content before the agent starts (nil: zeros).
	Fill func(disk int, f *os.File) error
	// Agent adjusts the agent's configuration.
	Agent      func(*agent.Config)
	CacheQuota int64 // default 256 MiB
	Bandwidth  int64 // bytes/s to the master target; 0 unlimited
	Adaptive   bool  // compress only while the WAN is slower than zstd
	// NoTunnel makes copies pass through the process server as Copy
	// frames instead of through copy tunnels.
	NoTunnel  bool
	Retention *retention.Policy
	Logger    *slog.Logger
	// Exports makes the master target serve exports of recovery points
	// over NBD on a unix socket in the harness directory.
	Exports bool
}

// Harness is a running deployment.
type Harness struct {
	tb    testing.TB
	o     Options
	Dir   string
	Certs map[string]certs.Files
	Disks []string // the source disk images

	Target      *target.Target
	TargetAddr  string
	stopTarget  func()
	Process     *process.Server
	ProcessAddr string
	stopProcess func()
	Agent       *agent.Agent
	AgentConfig agent.Config
	stopAgent   func()

	WAN *Link // process server → master target
	LAN *Link // agent → process server
}

// Start brings up the master target, the process server and the agent.
func Start(tb testing.TB, o Options) *Harness {
	tb.Helper()
	if o.CacheQuota == 0 {
		o.CacheQuota = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Harness{tb: tb, o: o, Dir: tb.TempDir()}
	var err error
	if h.Certs, err = certs.Create(filepath.Join(h.Dir, "pki"), []string{"agent", "process", "target"}, time.Hour); err != nil {
		tb.Fatal(err)
	}
	for i, size := range o.Disks {
		p := filepath.Join(h.Dir, fmt.Sprintf("disk%d.img", i))
		f, err := os.Create(p)
		if err != nil {
			tb.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			tb.Fatal(err)
		}
		if o.Fill != nil {
			if err := o.Fill(i, f); err != nil {
				tb.Fatal(err)
			}
		}
		f.Close()
		h.Disks = append(h.Disks, p)
	}
	h.TargetAddr = freeAddr(tb)
	h.StartTarget()
	if h.WAN, err = NewLink(h.TargetAddr); err != nil {
		tb.Fatal(err)
	}
	h.ProcessAddr = freeAddr(tb)
	h.StartProcess()
	if h.LAN, err = NewLink(h.ProcessAddr); err != nil {
		tb.Fatal(err)
	}
	h.StartAgent()
	tb.Cleanup(h.Close)
	return h
}

func freeAddr(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (h *Harness) tlsFiles(name string) wire.TLSFiles {
	f := h.Certs[name]
	return wire.TLSFiles{Cert: f.Cert, Key: f.Key, CA: f.CA}
}

func (h *Harness) serverTLS(name string) *tls.Config {
	c, err := h.tlsFiles(name).ServerConfig()
	if err != nil {
		h.tb.Fatal(err)
	}
	return c
}

func (h *Harness) clientTLS(name string) *tls.Config {
	c, err := h.tlsFiles(name).ClientConfig("localhost")
	if err != nil {
		h.tb.Fatal(err)
	}
	return c
}

// listen retries briefly: a restarted role takes its old port again.
func (h *Harness) listen(addr string) net.Listener {
	var err error
	for range 50 {
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			return l
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.tb.Fatalf("listen %s: %v", addr, err)
	return nil
}

// StartTarget starts (or restarts) the master target.
func (h *Harness) StartTarget() {
	o := target.Options{DataDir: filepath.Join(h.Dir, "target"), TLS: h.serverTLS("target"), Logger: h.o.Logger.With("role", "target"), PruneInterval: time.Second}
	if h.o.Exports {
		o.Exports = target.ExportsOptions{Unix: filepath.Join(h.Dir, "exports.sock")}
	}
	if h.o.Retention != nil {
		o.Retention = *h.o.Retention
	} else {
		o.Retention = retention.Policy{KeepAll: time.Hour}
	}
	t, err := target.New(context.Background(), o)
	if err != nil {
		h.tb.Fatal(err)
	}
	l := h.listen(h.TargetAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); t.Serve(ctx, l) }()
	h.Target = t
	h.stopTarget = func() { cancel(); <-done; t.Close() }
}

// StopTarget stops the master target (cleanly: it has no unclean state to
// leave behind that a SIGKILL test of the real process would not cover).
func (h *Harness) StopTarget() {
	if h.stopTarget != nil {
		h.stopTarget()
		h.stopTarget = nil
	}
}

// StartProcess starts (or restarts) the process server.
func (h *Harness) StartProcess() {
	s, err := process.New(process.Options{
		CacheDir: filepath.Join(h.Dir, "cache"), Quota: h.o.CacheQuota, Target: h.WAN.Addr(),
		TargetTLS: h.clientTLS("process"), TLS: h.serverTLS("process"), Bandwidth: h.o.Bandwidth, Adaptive: h.o.Adaptive,
		NoTunnel: h.o.NoTunnel, Logger: h.o.Logger.With("role", "process"),
	})
	if err != nil {
		h.tb.Fatal(err)
	}
	l := h.listen(h.ProcessAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ctx, l) }()
	h.Process = s
	h.stopProcess = func() { cancel(); <-done; s.Close() }
}

// StopProcess stops the process server.
func (h *Harness) StopProcess() {
	if h.stopProcess != nil {
		h.stopProcess()
		h.stopProcess = nil
	}
}

// StartAgent starts (or restarts) the agent.
func (h *Harness) StartAgent() {
	cfg := agent.Defaults()
	cfg.Machine = "web01"
	cfg.StateDir = filepath.Join(h.Dir, "agent")
	cfg.Listen.Unix = filepath.Join(h.Dir, "agent.sock")
	cfg.BookmarkInterval = "1s"
	cfg.Journal.SegmentSize, cfg.Journal.Limit = "1MiB", "64MiB"
	cfg.Status = "127.0.0.1:0"
	for i, p := range h.Disks {
		cfg.Disks = append(cfg.Disks, agent.DiskConfig{Name: fmt.Sprintf("disk%d", i), Path: p})
	}
	r := agent.ReplicationDefaults()
	r.ProcessServer, r.ServerName, r.TLS, r.ShipInterval = h.LAN.Addr(), "localhost", h.tlsFiles("agent"), "200ms"
	cfg.Replication = &r
	if h.o.Agent != nil {
		h.o.Agent(&cfg)
	}
	a, err := agent.New(context.Background(), cfg, h.o.Logger.With("role", "agent"))
	if err != nil {
		h.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	h.Agent, h.AgentConfig = a, cfg
	h.stopAgent = func() { cancel(); <-done }
}

// StopAgent stops the agent cleanly.
func (h *Harness) StopAgent() {
	if h.stopAgent != nil {
		h.stopAgent()
		h.stopAgent = nil
	}
}

// Close stops every role and link.
func (h *Harness) Close() {
	h.StopAgent()
	if h.LAN != nil {
		h.LAN.Close()
	}
	h.StopProcess()
	if h.WAN != nil {
		h.WAN.Close()
	}
	h.StopTarget()
}

// DialDisk opens an NBD client to disk i through the agent.
func (h *Harness) DialDisk(ctx context.Context, i int) *nbd.Client {
	h.tb.Helper()
	c, err := nbd.Dial(ctx, "unix", h.AgentConfig.Listen.Unix, fmt.Sprintf("disk%d", i), nbd.ClientOptions{})
	if err != nil {
		h.tb.Fatal(err)
	}
	h.tb.Cleanup(func() { c.Close() })
	return c
}

// Replica is the machine's replica at the master target.
func (h *Harness) Replica() *replica.Replica {
	h.tb.Helper()
	r, _, ok := h.Target.Lookup(h.Agent.Machine().ID())
	if !ok {
		h.tb.Fatalf("the master target has no replica of %s", h.Agent.Machine().ID())
	}
	return r
}

// Replication is the agent's replication status.
func (h *Harness) Replication() agent.ReplicationStatus {
	st := h.Agent.Status()
	if st.Replication == nil {
		return agent.ReplicationStatus{}
	}
	return *st.Replication
}

// WaitFor polls cond until it holds or timeout passes.
func (h *Harness) WaitFor(timeout time.Duration, what string, cond func() bool) {
	h.tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.tb.Fatalf("timed out after %s waiting for %s; agent replication: %+v", timeout, what, h.Replication())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitProtected waits until the replica is consistent and the agent
// protected.
func (h *Harness) WaitProtected(timeout time.Duration) {
	h.tb.Helper()
	h.WaitFor(timeout, "protected", func() bool {
		r := h.Replication()
		return r.State == agent.ReplProtected && r.Consistent
	})
}

// WaitApplied waits until the master target applied seq.
func (h *Harness) WaitApplied(timeout time.Duration, seq uint64) {
	h.tb.Helper()
	h.WaitFor(timeout, fmt.Sprintf("seq %d applied", seq), func() bool {
		r, _, ok := h.Target.Lookup(h.Agent.Machine().ID())
		return ok && r.Status().Applied.Seq >= seq
	})
}
