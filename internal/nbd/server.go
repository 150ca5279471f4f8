package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

// Backend is the storage behind one export. Methods may be called concurrently.
type Backend interface {
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Zero makes [off, off+length) read as zeros (NBD_CMD_WRITE_ZEROES). mayTrim is true unless the client set NBD_CMD_FLAG_NO_HOLE.
	Zero(ctx context.Context, off, length int64, mayTrim, fua bool) error
	// Trim discards [off, off+length) (NBD_CMD_TRIM).
	Trim(ctx context.Context, off, length int64, fua bool) error
	Flush(ctx context.Context) error
	// Extents reports allocation of [off, off+length) for base:allocation. It returns at least one extent
	// starting at off; the extents are contiguous; it may stop short of off+length.
	Extents(ctx context.Context, off, length int64) ([]Extent, error)
}

// Extent is one run of a base:allocation answer.
type Extent struct {
	Length int64
	Hole   bool // NBD_STATE_HOLE
	Zero   bool // NBD_STATE_ZERO
}

// Export is one named disk a Server serves.
type Export struct {
	Name        string
	Description string
	Backend     Backend
	ReadOnly    bool
	// InlineWrites has the connection's reader apply plain (non-FUA) writes
	// of up to 1 MiB itself, in arrival order, instead of handing them to
	// workers: for a backend whose writes complete at memory speed (into
	// the page cache) this saves two goroutine switches a request and lets
	// replies be sent in batches. A write that blocks then holds up the
	// requests behind it on that connection; reads, flushes and FUA writes
	// still run concurrently.
	InlineWrites bool
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: set it only when a flush on one connection makes writes completed on every connection durable.
	MultiConn bool
}

// Options configure a Server.
type Options struct {
	Exports     []Export     // the first one is the default export (empty name)
	TLSConfig   *tls.Config  // nil: STARTTLS is refused
	TLSRequired bool         // options other than STARTTLS/ABORT get NBD_REP_ERR_TLS_REQD until TLS is up
	MaxInFlight int          // per connection; default 32 (must allow queue depth >= 16)
	Logger      *slog.Logger // nil: discard
}

const (
	defaultMaxInFlight = 32
	maxMaxInFlight     = 1024

	// Option haggling is bounded so that a client cannot hold a connection
	// slot forever: in time, in number of options, and in option size.
	handshakeTimeout = 60 * time.Second
	maxOptions       = 1024
	maxOptionLength  = 64 << 10
)

// Server serves NBD exports on any number of listeners.
type Server struct {
	opts        Options
	log         *slog.Logger
	exports     []*Export
	byName      map[string]*Export
	maxInFlight int

	// hardCtx is the context of every Backend call. It is cancelled only
	// when Close gives up waiting for in-flight requests.
	hardCtx    context.Context
	hardCancel context.CancelFunc

	connID atomic.Uint64 // numbers connections in logs

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup // one per connection
}

// NewServer validates o and returns a Server ready to Serve.
func NewServer(o Options) (*Server, error) {
	if len(o.Exports) == 0 {
		return nil, errors.New("nbd: no exports configured")
	}
	if o.MaxInFlight < 0 || o.MaxInFlight > maxMaxInFlight {
		return nil, fmt.Errorf("nbd: MaxInFlight %d out of range: allowed 0 (default %d) to %d", o.MaxInFlight, defaultMaxInFlight, maxMaxInFlight)
	}
	if o.TLSRequired && o.TLSConfig == nil {
		return nil, errors.New("nbd: TLSRequired needs a TLSConfig")
	}
	s := &Server{
		opts:        o,
		log:         o.Logger,
		byName:      make(map[string]*Export),
		maxInFlight: o.MaxInFlight,
		listeners:   make(map[net.Listener]struct{}),
		conns:       make(map[*conn]struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.maxInFlight == 0 {
		s.maxInFlight = defaultMaxInFlight
	}
	for i := range o.Exports {
		e := o.Exports[i] // a copy: later changes by the caller do not reach the server
		if err := validateExport(&e); err != nil {
			return nil, fmt.Errorf("nbd: export %d (%q): %w", i, e.Name, err)
		}
		if _, dup := s.byName[e.Name]; dup {
			return nil, fmt.Errorf("nbd: export %d: duplicate name %q", i, e.Name)
		}
		s.byName[e.Name] = &e
		s.exports = append(s.exports, &e)
	}
	if _, ok := s.byName[""]; !ok {
		s.byName[""] = s.exports[0]
	} else if s.exports[0].Name != "" {
		return nil, errors.New("nbd: only the first export may have the empty name: it is the default export")
	}
	s.hardCtx, s.hardCancel = context.WithCancel(context.Background())
	return s, nil
}

func validateExport(e *Export) error {
	if e.Backend == nil {
		return errors.New("nil Backend")
	}
	if err := checkString("name", e.Name); err != nil {
		return err
	}
	if err := checkString("description", e.Description); err != nil {
		return err
	}
	if size := e.Backend.Size(); size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	return nil
}

// checkString applies the spec's rules for strings (§Conventions).
func checkString(what, s string) error {
	switch {
	case len(s) > maxStringLength:
		return fmt.Errorf("%s longer than %d bytes", what, maxStringLength)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not UTF-8", what)
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return fmt.Errorf("%s contains NUL", what)
		}
	}
	return nil
}

// lookup finds an export by the name a client sent; "" is the default export.
func (s *Server) lookup(name string) *Export {
	return s.byName[name]
}

// Serve accepts connections on l until l is closed (by the caller or by
// Close), then returns nil; or until ctx ends, then closes l, stops the
// connections it accepted gracefully and returns ctx.Err(). It may be called
// for several listeners at once. Connections outlive Serve: Close waits for them.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	log := s.log.With("listener", l.Addr().String())
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, net.ErrClosed) || s.isClosed() {
				return nil
			}
			if !temporaryAcceptError(err) {
				return fmt.Errorf("nbd: accept on %s: %w", l.Addr(), err)
			}
			if backoff == 0 {
				log.Warn("nbd: accept failing, backing off", "err", err)
				backoff = 5 * time.Millisecond
			} else {
				backoff = min(2*backoff, time.Second)
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		if backoff != 0 {
			log.Info("nbd: accept recovered")
			backoff = 0
		}
		s.startConn(ctx, nc)
	}
}

func temporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// startConn serves nc on a goroutine of its own. When serveCtx ends the
// connection is stopped the same way Close stops it.
func (s *Server) startConn(serveCtx context.Context, nc net.Conn) {
	c := s.register(nc)
	if c == nil {
		return
	}
	go func() {
		stop := context.AfterFunc(serveCtx, c.stop)
		defer stop()
		s.run(c)
	}()
}

// register tracks a new connection, or closes nc and returns nil if the
// server is closed.
func (s *Server) register(nc net.Conn) *conn {
	c := newConn(s, nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		nc.Close()
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (s *Server) run(c *conn) {
	defer s.wg.Done()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Close stops every listener, stops reading new requests on every
// connection, lets in-flight requests finish and their replies go out, and
// closes the connections. If ctx ends first, Backend calls see a cancelled
// context, connections are closed hard and Close returns ctx.Err().
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.stop()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.hardCancel()
		return nil
	case <-ctx.Done():
	}
	s.hardCancel()
	s.mu.Lock()
	for c := range s.conns {
		c.abort()
	}
	s.mu.Unlock()
	return ctx.Err()
}

// serveConn serves one already-accepted connection on the calling goroutine,
// bypassing listeners. Tests and fuzz targets use it with net.Pipe.
func (s *Server) serveConn(nc net.Conn) {
	if c := s.register(nc); c != nil {
		s.run(c)
	}
}

// activeConns reports how many connections are being served (for tests).
func (s *Server) activeConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
