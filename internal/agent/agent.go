// Package agent is the agent role: it serves a protected machine's disks
// over NBD through write capture, so that every write is journaled before
// it reaches the disk.
//
//	VM / nbd-client ──NBD──▶ nbd.Server ──▶ capture.Disk ──▶ journal segments
//	                                              └────────▶ disk image / device
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/nbd"
)

// Agent serves one machine's disks.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	machine *capture.Machine
	server  *nbd.Server
	files   []*os.File
	lock    *os.File

	listeners []net.Listener
	status    *http.Server
	statusL   net.Listener
	wg        sync.WaitGroup
	serveErr  chan error

	quiesceMu sync.Mutex // one AppBookmark at a time
	// fsfreeze and mountCheck are the freeze program and the check of a
	// mount before freezing it; tests replace them.
	fsfreeze   string
	mountCheck func(mount string) error

	ship *shipper    // nil without a replication or a control section
	ctl  *controller // nil without a control section

	// backends are the disks of an embedded agent (embedded.go), in
	// place of files; emb is its configuration.
	backends []nbd.Backend
	emb      *EmbeddedConfig
}

// disk is what disk i's content is read from for comparisons and
// copies: its file, or an embedded agent's backend.
func (a *Agent) disk(i int) io.ReaderAt {
	if a.backends != nil {
		return backendReader{a.backends[i]}
	}
	return a.files[i]
}

// New validates cfg, opens and locks the disks and the state directory,
// recovers the journal, and opens the listeners. Serving starts with Run.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent configuration:\n%w", err)
	}
	return newAgent(ctx, cfg, log, nil)
}

// newAgent is New, and NewEmbedded with emb.
func newAgent(ctx context.Context, cfg Config, log *slog.Logger, emb *EmbeddedConfig) (_ *Agent, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: log.With("machine", cfg.Machine), serveErr: make(chan error, 4), fsfreeze: "fsfreeze", emb: emb}
	a.mountCheck = func(m string) error { return checkMount(m, cfg.StateDir) }
	defer func() {
		if err != nil {
			a.closeAll(context.Background())
		}
	}()
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	if a.lock, err = lockFile(filepath.Join(cfg.StateDir, "lock")); err != nil {
		return nil, fmt.Errorf("state directory %s: %w (is another agent running for this machine?)", cfg.StateDir, err)
	}
	opts := capture.Options{Dir: cfg.StateDir, Logger: a.log}
	opts.SegmentSize, _ = ParseSize(cfg.Journal.SegmentSize)
	opts.JournalLimit, _ = ParseSize(cfg.Journal.Limit)
	opts.BookmarkInterval, _ = cfg.bookmarkInterval()
	if cfg.Control != nil {
		// The desired policy sets the interval while managed: the
		// controller takes the bookmarks (control.go).
		opts.BookmarkInterval = -1
	}
	if emb != nil {
		opts.MachineID, opts.Epoch = emb.MachineID, emb.Epoch
		opts.BookmarkInterval = emb.BookmarkInterval
	}
	var exports []nbd.Export
	for i, d := range cfg.Disks {
		if emb != nil {
			a.backends = append(a.backends, emb.Disks[i].Backend)
			opts.Disks = append(opts.Disks, capture.DiskSpec{Name: d.Name, Backend: emb.Disks[i].Backend})
			continue
		}
		f, err := openDisk(d)
		if err != nil {
			return nil, err
		}
		a.files = append(a.files, f)
		b, err := nbd.NewFileBackend(f)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Name, err)
		}
		opts.Disks = append(opts.Disks, capture.DiskSpec{Name: d.Name, Backend: b})
	}
	if a.machine, err = capture.Open(ctx, opts); err != nil {
		return nil, err
	}
	for i, d := range a.machine.Disks() {
		exports = append(exports, nbd.Export{
			Name:        d.Name(),
			Description: fmt.Sprintf("%s disk %s (standby capture)", cfg.Machine, d.Name()),
			Backend:     d,
			ReadOnly:    cfg.Disks[i].ReadOnly,
			MultiConn:   true, // a flush syncs the shared journal and every disk
			// Capture's writes go to the page cache; the rare ones that wait
			// (an activity-log fsync) hold the write lock anyway.
			InlineWrites: true,
		})
	}
	so := nbd.Options{Exports: exports, Logger: a.log}
	if cfg.TLS != nil {
		if so.TLSConfig, err = serverTLS(cfg.TLS); err != nil {
			return nil, err
		}
		so.TLSRequired = cfg.TLS.Required
	}
	if r := cfg.Replication; r != nil || cfg.Control != nil {
		if r == nil {
			d := ReplicationDefaults()
			r = &d
		}
		interval, _ := r.shipInterval()
		a.ship = &shipper{a: a, m: a.machine, interval: interval, window: r.Window, sealNow: make(chan struct{}, 1), peerChanged: make(chan struct{}, 1)}
		a.ship.st = ReplicationStatus{RPOSeconds: -1}
		a.ship.st.enter(ReplConnecting)
		if cfg.Control == nil && emb == nil {
			if a.ship.peer, err = staticPeer(r); err != nil {
				return nil, err
			}
			a.ship.st.Server = r.ProcessServer
		}
	}
	if cfg.Control != nil {
		if a.ctl, err = newController(a, *cfg.Control); err != nil {
			return nil, err
		}
	}
	if a.server, err = nbd.NewServer(so); err != nil {
		return nil, err
	}
	if cfg.Listen.Unix != "" {
		l, err := listenUnix(cfg.Listen.Unix)
		if err != nil {
			return nil, err
		}
		a.listeners = append(a.listeners, l)
	}
	if cfg.Listen.TCP != "" {
		l, err := net.Listen("tcp", cfg.Listen.TCP)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.Listen.TCP, err)
		}
		a.listeners = append(a.listeners, l)
	}
	if cfg.Status != "" {
		if a.statusL, err = listenAddr(cfg.Status); err != nil {
			return nil, err
		}
		a.status = &http.Server{Handler: a.statusHandler(), ReadHeaderTimeout: 10 * time.Second}
	}
	return a, nil
}

// Machine is the capture behind the exports.
func (a *Agent) Machine() *capture.Machine { return a.machine }

// Addrs are the NBD listeners' addresses, unix first.
func (a *Agent) Addrs() []net.Addr {
	var out []net.Addr
	for _, l := range a.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// StatusAddr is the status listener's address, or nil.
func (a *Agent) StatusAddr() net.Addr {
	if a.statusL == nil {
		return nil
	}
	return a.statusL.Addr()
}

// Run serves until ctx ends or a listener fails, then shuts down cleanly.
func (a *Agent) Run(ctx context.Context) error {
	for _, l := range a.listeners {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.server.Serve(ctx, l); err != nil && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
				a.serveErr <- fmt.Errorf("serve %s: %w", l.Addr(), err)
			}
		}()
	}
	if a.status != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if err := a.status.Serve(a.statusL); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.serveErr <- fmt.Errorf("status listener: %w", err)
			}
		}()
	}
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		if d, _ := a.cfg.AppConsistent.interval(); d > 0 {
			a.appBookmarkLoop(loopCtx, d)
		}
	}()
	shipDone := make(chan struct{})
	go func() {
		defer close(shipDone)
		if a.ship != nil {
			a.ship.run(loopCtx)
		}
	}()
	ctlDone := make(chan struct{})
	go func() {
		defer close(ctlDone)
		if a.ctl != nil {
			a.ctl.run(loopCtx)
			a.ctl.comp.Close() // its connection to the configuration server
		}
	}()
	a.log.Info("agent serving", "disks", len(a.cfg.Disks), "listeners", a.Addrs(), "state", a.machine.Stats().State)
	var err error
	select {
	case <-ctx.Done():
	case err = <-a.serveErr:
	}
	// An app bookmark in progress thaws and runs post before capture closes.
	stopLoop()
	<-loopDone
	<-shipDone
	<-ctlDone
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := a.Close(sctx); err == nil {
		err = cerr
	}
	return err
}

// Close stops serving, waits for in-flight requests, and closes the journal
// cleanly (the clean-shutdown mark).
func (a *Agent) Close(ctx context.Context) error {
	err := a.closeAll(ctx)
	a.wg.Wait()
	if err == nil {
		a.log.Info("agent stopped cleanly")
	}
	return err
}

func (a *Agent) closeAll(ctx context.Context) error {
	var errs []error
	if a.status != nil {
		a.status.Close()
	}
	if a.server != nil {
		errs = append(errs, a.server.Close(ctx))
	}
	for _, l := range a.listeners {
		l.Close()
	}
	if a.machine != nil {
		errs = append(errs, a.machine.Close(ctx))
	}
	for _, f := range a.files {
		f.Close()
	}
	if a.cfg.Listen.Unix != "" {
		os.Remove(a.cfg.Listen.Unix)
	}
	if a.lock != nil {
		a.lock.Close()
	}
	return errors.Join(errs...)
}

// openDisk opens a disk and takes an exclusive lock on it: capture must be
// its only writer.
func openDisk(d DiskConfig) (*os.File, error) {
	flag := os.O_RDWR
	if d.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(d.Path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.Name, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: %s is in use by another process (%v)", d.Name, d.Path, err)
	}
	return f, nil
}

// lockFile creates path if needed and takes an exclusive lock on it.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("locked by another process")
	}
	return f, nil
}

// listenUnix listens on a unix socket, replacing a stale socket file.
func listenUnix(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: another process is serving it", path)
		}
		os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return l, nil
}

// listenAddr listens on host:port, or on a unix socket for a path.
func listenAddr(addr string) (net.Listener, error) {
	if filepath.IsAbs(addr) {
		return listenUnix(addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

func serverTLS(c *TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ClientCA != "" {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client_ca %s holds no PEM certificate", c.ClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
