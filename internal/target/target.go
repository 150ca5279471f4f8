package target

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/standby-dr/standby/internal/manage"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/retention"
	"github.com/standby-dr/standby/internal/wire"
)

// Options configure a Target.
type Options struct {
	DataDir string
	// TLS is the server configuration (mutual TLS); nil serves plain TCP,
	// which only tests use.
	TLS           *tls.Config
	Retention     retention.Policy
	PruneInterval time.Duration // 0 means 10 s
	Logger        *slog.Logger
	Now           func() time.Time
	Name          string // this master target's name, sent in Welcome
	// Control, when set, is managed mode (control.go): the listener uses
	// the joined identity instead of TLS, and the target heartbeats and
	// reports recovery points to the configuration server.
	Control *Control
	// Exports is the NBD listener of exports of recovery points
	// (export.go); exports are off without one.
	Exports ExportsOptions
	// Driver starts the replica machines of test failovers
	// (testfailover.go); nil: test failovers are reported failed.
	Driver driver.Driver
	// ReverseAgent opens the embedded agent of a reverse direction
	// (reverse.go); cmd passes internal/agent's NewEmbedded. Without it
	// this master target cannot ship a failed-over machine back.
	ReverseAgent func(context.Context, ReverseAgentConfig, *slog.Logger) (ReverseAgent, error)
}

// Target is a running master target.
type Target struct {
	o   Options
	log *slog.Logger
	mgd *managed // nil unless managed
	// actions runs the commands the desired state gives (managed).
	actions *manage.Actions
	// front serves the exports (export_nbd.go); nil when they are off.
	front *front

	mu       sync.Mutex
	machines map[string]*machine
	tunnels  map[string]*tunnel // by ticket (tunnel.go)
	closed   bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// machine is one replica and its current stream.
type machine struct {
	id   string
	name string
	rep  *replica.Replica

	streamMu sync.Mutex // held by the stream applying to rep
	mu       sync.Mutex
	cancel   context.CancelFunc // of the current stream
	done     chan struct{}      // closed when the current stream ends

	bytesIn, bytesOut, segments uint64     // guarded by mu
	copyBytes                   uint64     // disk bytes taken by copies (guarded by mu)
	tree                        *treeCache // guarded by mu
}

// treeCache is the hash tree of one disk at one applied position, kept
// for the requests of one comparison.
type treeCache struct {
	disk    int
	params  blockmap.Params
	applied journal.Pos
	gen     uint64 // the replica's generation: current changes without moving applied during a copy
	tree    *blockmap.Tree
	used    time.Time
}

// New opens every replica under o.DataDir and starts the pruning loop.
func New(ctx context.Context, o Options) (*Target, error) {
	if o.DataDir == "" {
		return nil, errors.New("target: a data directory is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = 10 * time.Second
	}
	if err := os.MkdirAll(filepath.Join(o.DataDir, "machines"), 0o700); err != nil {
		return nil, err
	}
	t := &Target{o: o, log: o.Logger, machines: map[string]*machine{}}
	if o.Control != nil {
		var err error
		if t.mgd, err = newManaged(*o.Control); err != nil {
			return nil, err
		}
		t.actions = &manage.Actions{Dir: o.DataDir, Report: t.mgd.comp.Action, Log: o.Logger}
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	ents, err := os.ReadDir(filepath.Join(o.DataDir, "machines"))
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := t.open(ctx, e.Name()); err != nil {
			t.Close()
			return nil, err
		}
	}
	// Exports left by the last run pin their points again before the
	// first prune.
	if err := t.startExports(ctx); err != nil {
		t.Close()
		return nil, err
	}
	t.wg.Add(2)
	go t.pruneLoop()
	go t.seedLoop()
	if t.mgd != nil {
		t.runControl()
	}
	return t, nil
}

func (t *Target) dir(id string) string { return filepath.Join(t.o.DataDir, "machines", id) }

// open opens an existing replica. Called with t.mu not held or held: it
// takes it itself.
func (t *Target) open(ctx context.Context, id string) (*machine, error) {
	rep, err := replica.Open(ctx, replica.Options{Dir: t.dir(id), Retention: t.o.Retention, Logger: t.log.With("machine", id), Now: t.o.Now})
	if err != nil {
		return nil, fmt.Errorf("open replica %s: %w", id, err)
	}
	name, _ := os.ReadFile(filepath.Join(t.dir(id), "name"))
	m := &machine{id: id, name: strings.TrimSpace(string(name)), rep: rep}
	t.mu.Lock()
	t.machines[id] = m
	t.mu.Unlock()
	return m, nil
}

// machineFor returns the replica for an Open, creating it on first contact.
func (t *Target) machineFor(ctx context.Context, op wire.Open) (m *machine, known bool, err error) {
	id, err := canonicalID(op.Machine)
	if err != nil {
		return nil, false, err
	}
	t.mu.Lock()
	m, ok := t.machines[id]
	t.mu.Unlock()
	if ok {
		return m, true, checkDisks(m.rep.Status().Disks, op.Disks)
	}
	disks := make([]replica.DiskInfo, len(op.Disks))
	for i, d := range op.Disks {
		disks[i] = replica.DiskInfo{Name: d.Name, Size: d.Size}
	}
	if len(disks) == 0 {
		return nil, false, errors.New("open: a machine needs at least one disk")
	}
	if err := replica.Create(t.dir(id), id, disks, nil); err != nil {
		return nil, false, fmt.Errorf("create replica %s: %w", id, err)
	}
	if op.Name != "" {
		os.WriteFile(filepath.Join(t.dir(id), "name"), []byte(op.Name+"\n"), 0o644)
	}
	t.log.Info("new replica", "machine", id, "name", op.Name, "disks", len(disks))
	m, err = t.open(ctx, id)
	return m, false, err
}

func checkDisks(have []replica.DiskInfo, want []wire.DiskInfo) error {
	if len(have) != len(want) {
		return fmt.Errorf("the replica has %d disks, the agent %d", len(have), len(want))
	}
	for i := range have {
		if have[i].Name != want[i].Name || have[i].Size != want[i].Size {
			return fmt.Errorf("disk %d: the replica has %s of %d bytes, the agent %s of %d bytes (disk resizing is not supported yet)",
				i, have[i].Name, have[i].Size, want[i].Name, want[i].Size)
		}
	}
	return nil
}

// Lookup finds a machine by id or by name.
func (t *Target) Lookup(idOrName string) (*replica.Replica, string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, err := canonicalID(idOrName); err == nil {
		if m, ok := t.machines[id]; ok {
			return m.rep, m.id, true
		}
	}
	for _, m := range t.machines {
		if m.name == idOrName {
			return m.rep, m.id, true
		}
	}
	return nil, "", false
}

// MachineIDs lists the replicas, sorted.
func (t *Target) MachineIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id := range t.machines {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (t *Target) pruneLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(t.o.PruneInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		for _, m := range t.list() {
			m.mu.Lock()
			if m.tree != nil && time.Since(m.tree.used) > time.Minute {
				m.tree = nil // the comparison is over
			}
			m.mu.Unlock()
			_, removed, err := m.rep.Prune(t.ctx)
			if err != nil {
				t.log.Warn("prune", "machine", m.id, "err", err)
			} else if len(removed) > 0 {
				t.log.Info("pruned recovery points", "machine", m.id, "removed", len(removed))
			}
		}
	}
}

// seedLoop fills the lazy base images a copy left (replica.Seed) in the
// background, a chunk at a time, so that the first writes after an
// initial replication do not have to read what they overwrite from disk.
// Seeding waits while a copy is under way.
func (t *Target) seedLoop() {
	defer t.wg.Done()
	for {
		busy := false
		for _, m := range t.list() {
			if t.ctx.Err() != nil {
				return
			}
			if st := m.rep.Status(); st.SeedLeft == 0 || st.Copying {
				continue
			}
			left, err := m.rep.Seed(t.ctx, seedChunk)
			switch {
			case errors.Is(err, replica.ErrCopying), errors.Is(err, context.Canceled):
			case err != nil:
				t.log.Warn("seed base images", "machine", m.id, "err", err)
			case left == 0:
				t.log.Info("base images seeded from the copy", "machine", m.id)
			default:
				busy = true
			}
		}
		wait := time.Second
		if busy {
			wait = 0
		}
		select {
		case <-t.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// seedChunk is the most one call of the seed loop seeds of one replica.
const seedChunk = 32 << 20

// list returns the machines.
func (t *Target) list() []*machine {
	t.mu.Lock()
	defer t.mu.Unlock()
	ms := make([]*machine, 0, len(t.machines))
	for _, m := range t.machines {
		ms = append(ms, m)
	}
	return ms
}

// Serve accepts connections on l until ctx ends or Close.
func (t *Target) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	stop2 := context.AfterFunc(t.ctx, func() { l.Close() })
	defer stop2()
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || t.ctx.Err() != nil {
				return nil
			}
			return err
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer nc.Close()
			t.handle(nc)
		}()
	}
}

func (t *Target) handle(nc net.Conn) {
	nc, ticket, err := wire.SniffTunnel(nc, tunnelHandshakeTimeout)
	if err != nil {
		t.log.Debug("handshake", "err", err)
		return
	}
	if ticket != "" {
		if err := t.serveTunnel(nc, ticket); err != nil {
			t.log.Warn("copy tunnel refused", "peer", nc.RemoteAddr(), "err", err)
		}
		return
	}
	tc, check := t.o.TLS, checkPeer
	if t.mgd != nil {
		tl, id, err := acceptTLS(t.ctx, nc, t.mgd.tls)
		if err != nil {
			t.log.Debug("handshake", "peer", nc.RemoteAddr(), "err", err)
			return
		}
		defer tl.Close()
		nc, tc, check = tl, nil, checkIdentity(id)
	}
	c, err := wire.Accept(t.ctx, nc, tc, wire.Welcome{Role: "target", Name: t.o.Name}, check, wire.Options{})
	if err != nil {
		t.log.Debug("handshake", "peer", nc.RemoteAddr(), "err", err)
		return
	}
	stop := context.AfterFunc(t.ctx, func() { c.Close() })
	defer stop()
	switch c.Peer.Stream {
	case wire.StreamData:
		err = t.serveData(c)
	default:
		err = t.serveControl(c)
	}
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) && t.ctx.Err() == nil {
		t.log.Warn("stream ended", "peer", c.RemoteAddr(), "err", err)
	}
}

// checkPeer admits process servers' data streams and any role's control
// calls.
func checkPeer(c *wire.Conn) error {
	if c.Peer.Stream == wire.StreamData && c.Peer.Role != "process" {
		return fmt.Errorf("role %q may not open a data stream to a master target", c.Peer.Role)
	}
	if c.Peer.Stream != wire.StreamData && c.Peer.Stream != wire.StreamControl {
		return fmt.Errorf("unknown stream kind %q", c.Peer.Stream)
	}
	return nil
}

// Close stops serving and closes every replica.
func (t *Target) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	var errs []error
	if t.mgd != nil {
		errs = append(errs, t.mgd.comp.Close()) // its connection to the configuration server
	}
	if t.front != nil {
		errs = append(errs, t.front.close()) // before the replicas its views read
	}
	for _, m := range t.machines {
		errs = append(errs, m.rep.Close())
	}
	return errors.Join(errs...)
}

func canonicalID(s string) (string, error) { return wire.CanonicalMachineID(s) }
