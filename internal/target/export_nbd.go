package target

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/standby-dr/standby/internal/nbd"
)

// ExportsOptions configure the NBD listener of exports. With neither
// address set, exports are off.
type ExportsOptions struct {
	Listen string // host:port
	Unix   string // path of a unix socket
}

// front serves every export on the exports listeners.
//
// An nbd.Server's exports are fixed when it is made, and exports come and
// go: so each accepted connection gets a server of its own, made from the
// exports of that moment. Each server's backends are thin wrappers that
// note when a connection uses an export; Unexport closes the servers whose
// connection used the export it removes, and no other.
//
//	listener ──accept──▶ connServer (nbd.Server with the exports of now)
//	                         └─ tracked backend ──▶ replica.Overlay (shared by every connection)
type front struct {
	log  *slog.Logger
	opts ExportsOptions
	ls   []net.Listener

	mu      sync.Mutex
	exports map[string]*exported // by name; nil value: being made
	conns   map[*connServer]struct{}
	closed  bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// connServer is the NBD server of one connection.
type connServer struct {
	srv  *nbd.Server
	used map[string]*atomic.Bool // by export name
}

func newFront(o ExportsOptions, log *slog.Logger) (*front, error) {
	f := &front{log: log, opts: o, exports: map[string]*exported{}, conns: map[*connServer]struct{}{}}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	if o.Listen != "" {
		l, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("exports listener: %w", err)
		}
		f.ls = append(f.ls, l)
		f.opts.Listen = l.Addr().String() // the port, when :0 was asked
	}
	if o.Unix != "" {
		if err := os.MkdirAll(filepath.Dir(o.Unix), 0o755); err != nil {
			f.closeListeners()
			return nil, fmt.Errorf("exports socket: %w", err)
		}
		os.Remove(o.Unix) // a socket a previous run left
		l, err := net.Listen("unix", o.Unix)
		if err != nil {
			f.closeListeners()
			return nil, fmt.Errorf("exports socket: %w", err)
		}
		f.ls = append(f.ls, l)
	}
	for _, l := range f.ls {
		f.wg.Go(func() { f.accept(l) })
	}
	return f, nil
}

func (f *front) closeListeners() {
	for _, l := range f.ls {
		l.Close()
	}
}

func (f *front) accept(l net.Listener) {
	for {
		nc, err := l.Accept()
		if err != nil {
			if f.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				f.log.Warn("exports listener stopped", "listener", l.Addr().String(), "err", err)
			}
			return
		}
		f.serve(nc)
	}
}

// serve gives nc a server of its own, made from the exports of now.
func (f *front) serve(nc net.Conn) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		nc.Close()
		return
	}
	cs := &connServer{used: map[string]*atomic.Bool{}}
	exps := []nbd.Export{{Name: "", Description: "standby exports: name one (standby target exports lists them)", Backend: emptyBackend{}, ReadOnly: true}}
	for name, e := range f.exports {
		if e == nil {
			continue
		}
		used := &atomic.Bool{}
		cs.used[name] = used
		for i := range e.overlays {
			d := e.info.Disks[i]
			exps = append(exps, nbd.Export{
				Name:        d.Export,
				Description: fmt.Sprintf("%s disk %s at recovery point %d (writable overlay)", e.info.MachineName, d.Name, e.info.Point.ID),
				Backend:     &tracked{e: e, disk: i, used: used},
				// A flush of the overlay syncs every connection's writes.
				MultiConn: true,
			})
		}
	}
	srv, err := nbd.NewServer(nbd.Options{Exports: exps, Logger: f.log})
	if err != nil {
		f.mu.Unlock()
		nc.Close()
		f.log.Error("exports: nbd server", "err", err)
		return
	}
	cs.srv = srv
	f.conns[cs] = struct{}{}
	f.mu.Unlock()

	done := make(chan struct{})
	l := &oneListener{c: make(chan net.Conn, 1), done: make(chan struct{}), addr: nc.LocalAddr()}
	l.c <- &notifyConn{Conn: nc, done: done}
	f.wg.Go(func() { srv.Serve(f.ctx, l) })
	f.wg.Go(func() {
		select {
		case <-done:
		case <-f.ctx.Done():
		}
		f.stopConn(cs, 5*time.Second)
	})
}

// stopConn closes a connection's server, letting requests in flight
// finish for up to grace.
func (f *front) stopConn(cs *connServer, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	cs.srv.Close(ctx)
	f.mu.Lock()
	delete(f.conns, cs)
	f.mu.Unlock()
}

// reserve claims a name for an export being made.
func (f *front) reserve(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrExportsOff
	}
	if _, ok := f.exports[name]; ok {
		return fmt.Errorf("export %s: %w", name, ErrExportExists)
	}
	f.exports[name] = nil
	return nil
}

func (f *front) release(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.exports, name)
}

// add serves a reserved export to the connections made from now on.
func (f *front) add(e *exported) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exports[e.info.Name] = e
}

// remove stops serving an export and closes the connections that used
// it; it returns the export, or nil if there is none of that name.
func (f *front) remove(ctx context.Context, name string) *exported {
	f.mu.Lock()
	e := f.exports[name]
	if e == nil {
		f.mu.Unlock()
		return nil
	}
	delete(f.exports, name)
	var stop []*connServer
	for cs := range f.conns {
		if u := cs.used[name]; u != nil && u.Load() {
			stop = append(stop, cs)
		}
	}
	f.mu.Unlock()
	grace := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		grace = max(time.Until(d), 0)
	}
	var wg sync.WaitGroup
	for _, cs := range stop {
		wg.Go(func() { f.stopConn(cs, grace) })
	}
	wg.Wait()
	return e
}

func (f *front) list() []Export {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []Export{}
	for _, e := range f.exports {
		if e != nil {
			out = append(out, e.snapshot())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// describe fills in where the export is served.
func (f *front) describe(x *Export) {
	x.Addr, x.Unix = f.opts.Listen, f.opts.Unix
	for i := range x.Disks {
		d := &x.Disks[i]
		d.URI, d.UnixURI = "", ""
		if x.Addr != "" {
			d.URI = (&url.URL{Scheme: "nbd", Host: x.Addr, Path: "/" + d.Export}).String()
		}
		if x.Unix != "" {
			d.UnixURI = (&url.URL{Scheme: "nbd+unix", Path: "/" + d.Export, RawQuery: "socket=" + url.QueryEscape(x.Unix)}).String()
		}
	}
}

// close stops the listeners and every connection, and closes the exports
// (their files stay: New opens them again).
func (f *front) close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.closeListeners()
	f.wg.Wait()
	if f.opts.Unix != "" {
		os.Remove(f.opts.Unix)
	}
	var errs []error
	for _, e := range f.exports {
		if e != nil {
			errs = append(errs, e.close())
		}
	}
	return errors.Join(errs...)
}

// tracked is an export's backend as one connection sees it: it notes
// that the connection used the export.
type tracked struct {
	e    *exported
	disk int
	used *atomic.Bool
}

// do runs op on the disk's backend now: the overlay, or the capture over
// it once reverse replication routed the export through one
// (exported.route). The route does not change while op runs.
func (b *tracked) do(op func(nbd.Backend) error) error {
	b.used.Store(true)
	b.e.routeMu.RLock()
	defer b.e.routeMu.RUnlock()
	return op(b.e.backendLocked(b.disk))
}

func (b *tracked) Size() int64 { return b.e.overlays[b.disk].Size() }

func (b *tracked) ReadAt(ctx context.Context, p []byte, off int64) error {
	return b.do(func(be nbd.Backend) error { return be.ReadAt(ctx, p, off) })
}

func (b *tracked) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return b.do(func(be nbd.Backend) error { return be.WriteAt(ctx, p, off, fua) })
}

func (b *tracked) Zero(ctx context.Context, off, length int64, mayTrim, fua bool) error {
	return b.do(func(be nbd.Backend) error { return be.Zero(ctx, off, length, mayTrim, fua) })
}

func (b *tracked) Trim(ctx context.Context, off, length int64, fua bool) error {
	return b.do(func(be nbd.Backend) error { return be.Trim(ctx, off, length, fua) })
}

func (b *tracked) Flush(ctx context.Context) error {
	return b.do(func(be nbd.Backend) error { return be.Flush(ctx) })
}

func (b *tracked) Extents(ctx context.Context, off, length int64) (exts []nbd.Extent, err error) {
	err = b.do(func(be nbd.Backend) error { exts, err = be.Extents(ctx, off, length); return err })
	return exts, err
}

// emptyBackend is the default export: no bytes, so that a client that
// names no export learns it must.
type emptyBackend struct{}

func (emptyBackend) Size() int64                                 { return 0 }
func (emptyBackend) ReadAt(context.Context, []byte, int64) error { return errEmpty }
func (emptyBackend) WriteAt(context.Context, []byte, int64, bool) error {
	return errEmpty
}
func (emptyBackend) Zero(context.Context, int64, int64, bool, bool) error { return errEmpty }
func (emptyBackend) Trim(context.Context, int64, int64, bool) error       { return errEmpty }
func (emptyBackend) Flush(context.Context) error                          { return nil }
func (emptyBackend) Extents(context.Context, int64, int64) ([]nbd.Extent, error) {
	return nil, errEmpty
}

var errEmpty = errors.New("the default export is empty: name an export")

// oneListener hands out one connection, then blocks until closed: how a
// connection is given to an nbd.Server of its own.
type oneListener struct {
	c    chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *oneListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *oneListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneListener) Addr() net.Addr { return l.addr }

// notifyConn closes done when the server closes the connection.
type notifyConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}
