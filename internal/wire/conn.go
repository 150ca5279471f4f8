package wire

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one handshaken connection. Send is safe for concurrent use;
// Recv is for one reader.
type Conn struct {
	nc       net.Conn
	raw      *rawConn // under TLS; nil without
	br       *bufio.Reader
	wmu      sync.Mutex
	bw       *bufio.Writer
	rbuf     []byte
	maxFrame int
	idle     time.Duration // see SetIdleTimeout

	// Version is the negotiated protocol version.
	Version int
	// Peer is the other side's Hello (on a server) or Welcome (as a Hello
	// with Role and Name set, on a client).
	Peer Hello
	// PeerCert is the common name of the peer's TLS certificate, if any.
	PeerCert string
}

// Options tune a connection.
type Options struct {
	// MaxFrame bounds a received frame's payload; 0 means DefaultMaxFrame.
	MaxFrame int
	// HandshakeTimeout bounds TLS and the Hello exchange; 0 means 10 s.
	HandshakeTimeout time.Duration
	// PeerRole, on a client, is the role the server must hold: its
	// Welcome and its certificate's name (CertMatchesRole) must say so.
	PeerRole string
}

func (o Options) maxFrame() int {
	if o.MaxFrame > 0 {
		return o.MaxFrame
	}
	return DefaultMaxFrame
}

func (o Options) handshakeTimeout() time.Duration {
	if o.HandshakeTimeout > 0 {
		return o.HandshakeTimeout
	}
	return 10 * time.Second
}

func newConn(nc net.Conn, raw *rawConn, o Options) *Conn {
	c := &Conn{nc: nc, raw: raw, bw: bufio.NewWriterSize(nc, 256<<10), maxFrame: o.maxFrame()}
	c.br = bufio.NewReaderSize(idleReader{c}, 256<<10)
	return c
}

// rawConn is the network connection under TLS. Once the TLS handshake is
// over it gathers what TLS writes (a record of at most 16 KiB at a time)
// and passes it on when the frame is complete: a 1 MiB frame then costs a
// few writes instead of 64.
type rawConn struct {
	net.Conn
	mu sync.Mutex
	w  *bufio.Writer // nil during the handshake
	// r gathers the socket's bytes into few large reads: TLS asks for one
	// record (16 KiB) at a time; nil during the handshake.
	r atomic.Pointer[bufio.Reader]
}

func (r *rawConn) Read(p []byte) (int, error) {
	if br := r.r.Load(); br != nil {
		return br.Read(p)
	}
	return r.Conn.Read(p)
}

func (r *rawConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w == nil {
		return r.Conn.Write(p)
	}
	return r.w.Write(p)
}

func (r *rawConn) buffer() {
	r.mu.Lock()
	r.w = bufio.NewWriterSize(r.Conn, 256<<10)
	r.mu.Unlock()
	r.r.Store(bufio.NewReaderSize(r.Conn, 256<<10))
}

func (r *rawConn) flush() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w == nil {
		return nil
	}
	return r.w.Flush()
}

// idleReader extends the read deadline before every read from the
// network when an idle timeout is set, so that a large frame arriving
// slowly (a bandwidth limit) is not cut off, while a silent peer is.
type idleReader struct{ c *Conn }

func (r idleReader) Read(p []byte) (int, error) {
	if r.c.idle > 0 {
		r.c.nc.SetReadDeadline(time.Now().Add(r.c.idle))
	}
	return r.c.nc.Read(p)
}

// SetIdleTimeout makes every Recv fail when the peer sends nothing at all
// for d (clients ping every 2 s, servers send Acks every second). Zero
// turns it off. Set it from the reading
// goroutine, before reading.
func (c *Conn) SetIdleTimeout(d time.Duration) { c.idle = d }

// Dial connects to addr, runs TLS (when tc is not nil) and the handshake.
func Dial(ctx context.Context, addr string, tc *tls.Config, h Hello, o Options) (*Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, o.handshakeTimeout())
	defer cancel()
	nc, err := DialNet(dctx, addr)
	if err != nil {
		return nil, err
	}
	c, err := clientHandshake(dctx, nc, tc, h, o)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return c, nil
}

// DialNet opens the network connection to addr, before any TLS: a unix
// socket when addr is a path, else TCP with keepalives.
func DialNet(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: 15 * time.Second}
	network := "tcp"
	if len(addr) > 0 && addr[0] == '/' {
		network = "unix"
	}
	return d.DialContext(ctx, network, addr)
}

func clientHandshake(ctx context.Context, nc net.Conn, tc *tls.Config, h Hello, o Options) (*Conn, error) {
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	defer nc.SetDeadline(time.Time{})
	var cert string
	var raw *rawConn
	if tc != nil {
		raw = &rawConn{Conn: nc}
		t := tls.Client(raw, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		if pc := t.ConnectionState().PeerCertificates; len(pc) > 0 {
			cert = pc[0].Subject.CommonName
		}
		raw.buffer()
		nc = t
	}
	c := newConn(nc, raw, o)
	c.PeerCert = cert
	h.Protocol = ProtocolName
	if h.MinVersion == 0 {
		h.MinVersion, h.MaxVersion = MinVersion, MaxVersion
	}
	if err := c.SendJSON(TypeHello, h); err != nil {
		return nil, err
	}
	var w Welcome
	if err := c.Expect(TypeWelcome, &w); err != nil {
		return nil, err
	}
	if w.Version < h.MinVersion || w.Version > h.MaxVersion {
		return nil, fmt.Errorf("%w: server chose %d, we speak %d..%d", ErrVersion, w.Version, h.MinVersion, h.MaxVersion)
	}
	c.Version = w.Version
	c.Peer = Hello{Role: w.Role, Name: w.Name, Stream: h.Stream}
	if o.PeerRole != "" && (w.Role != o.PeerRole || (tc != nil && !CertMatchesRole(cert, o.PeerRole))) {
		return nil, fmt.Errorf("%w: expected a %s, the server is a %q with certificate %q", ErrPeerRole, o.PeerRole, w.Role, cert)
	}
	return c, nil
}

// Accept runs TLS (when tc is not nil) and the server side of the
// handshake on nc. check may refuse the peer's Hello (its role, its
// stream kind, the certificate name in c.PeerCert); its error is sent to
// the peer as a denied Error.
func Accept(ctx context.Context, nc net.Conn, tc *tls.Config, me Welcome, check func(*Conn) error, o Options) (*Conn, error) {
	nc.SetDeadline(time.Now().Add(o.handshakeTimeout()))
	var cert string
	var raw *rawConn
	if tc != nil {
		raw = &rawConn{Conn: nc}
		t := tls.Server(raw, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls handshake with %s: %w", nc.RemoteAddr(), err)
		}
		if pc := t.ConnectionState().PeerCertificates; len(pc) > 0 {
			cert = pc[0].Subject.CommonName
		}
		raw.buffer()
		nc = t
	}
	c := newConn(nc, raw, o)
	c.PeerCert = cert
	var h Hello
	if err := c.Expect(TypeHello, &h); err != nil {
		return nil, err
	}
	if h.Protocol != ProtocolName {
		return nil, fmt.Errorf("%w: hello for protocol %q", ErrProtocol, h.Protocol)
	}
	v := min(h.MaxVersion, MaxVersion)
	if v < max(h.MinVersion, MinVersion) {
		err := fmt.Errorf("%w: peer speaks %d..%d, we speak %d..%d", ErrVersion, h.MinVersion, h.MaxVersion, MinVersion, MaxVersion)
		c.SendError(&Error{Code: CodeVersion, Message: err.Error()})
		return nil, err
	}
	c.Version, c.Peer = v, h
	if tc != nil && !CertMatchesRole(cert, h.Role) {
		err := fmt.Errorf("%w: the peer says it is a %q but its certificate names %q", ErrPeerRole, h.Role, cert)
		c.SendError(&Error{Code: CodeDenied, Message: err.Error()})
		return nil, err
	}
	if check != nil {
		if err := check(c); err != nil {
			c.SendError(&Error{Code: CodeDenied, Message: err.Error()})
			return nil, err
		}
	}
	me.Version = v
	if err := c.SendJSON(TypeWelcome, me); err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// CertMatchesRole reports whether a certificate's common name is one the
// role may use: the role itself ("process"), or the role and an id after a
// colon, dash or slash ("agent:web01", "agent-web01", and "agent/3f2a…",
// the common name of the certificates the configuration server's CA issues
// at join, whose identity is also in a standby:// URI SAN).
func CertMatchesRole(cn, role string) bool {
	return role != "" && (cn == role || strings.HasPrefix(cn, role+":") || strings.HasPrefix(cn, role+"-") || strings.HasPrefix(cn, role+"/"))
}

// Send writes one frame and flushes it.
func (c *Conn) Send(t Type, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := writeFrame(c.bw, t, payload); err != nil {
		return err
	}
	return c.flush()
}

// SendFrom writes one frame whose n-byte payload is read from r, without
// holding the payload in memory (a journal segment streamed from its file).
func (c *Conn) SendFrom(t Type, r io.Reader, n int64) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeHeader(t, n); err != nil {
		return err
	}
	if _, err := io.CopyN(c.bw, r, n); err != nil {
		return err
	}
	return c.flush()
}

// SendParts writes one frame whose payload is the parts, in order, without
// joining them first (a Copy frame's header and the disk data it carries).
func (c *Conn) SendParts(t Type, parts ...[]byte) error {
	var n int64
	for _, p := range parts {
		n += int64(len(p))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeHeader(t, n); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := c.bw.Write(p); err != nil {
			return err
		}
	}
	return c.flush()
}

// writeHeader writes the header of a frame of n payload bytes; the caller
// holds wmu and writes the payload next.
func (c *Conn) writeHeader(t Type, n int64) error {
	if n < 0 || n > 1<<32-1 {
		return fmt.Errorf("%w: %s frame of %d bytes", ErrProtocol, t, n)
	}
	var h [FrameHeaderSize]byte
	h[0] = byte(t)
	binary.BigEndian.PutUint32(h[4:], uint32(n))
	_, err := c.bw.Write(h[:])
	return err
}

// SendJSON writes one frame with v as its JSON payload.
func (c *Conn) SendJSON(t Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(t, b)
}

// SendError sends an Error frame. On a data stream the caller closes the
// connection after it; on a control connection it answers one call.
func (c *Conn) SendError(e *Error) error {
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	defer c.nc.SetWriteDeadline(time.Time{})
	return c.SendJSON(TypeError, e)
}

// keepReadBuffer is the largest read buffer a Conn keeps between frames:
// room for most segments, so that a stream does not allocate per frame
// (Copy frames are received with RecvInto, into their readers' buffers).
const keepReadBuffer = 2 << 20

// flush writes out a whole frame: the frame buffer, then, under TLS, the
// records it made. Called with wmu held.
func (c *Conn) flush() error {
	if err := c.bw.Flush(); err != nil {
		return err
	}
	return c.raw.flush()
}

// Recv reads the next frame. The payload is valid until the next Recv.
// An Error frame from the peer is returned as a *Error.
func (c *Conn) Recv() (Type, []byte, error) {
	t, p, err := readFrame(c.br, c.rbuf, c.maxFrame)
	if cap(p) <= keepReadBuffer {
		c.rbuf = p // keep small buffers; let large ones go
	}
	return c.received(t, p, err)
}

// RecvInto reads the next frame into buf when it fits, else into a new
// slice; either way the payload is the caller's to keep (a Copy frame
// handed to another goroutine without copying it).
func (c *Conn) RecvInto(buf []byte) (Type, []byte, error) {
	t, p, err := readFrame(c.br, buf[:0], c.maxFrame)
	return c.received(t, p, err)
}

// received turns an Error frame into a *Error.
func (c *Conn) received(t Type, p []byte, err error) (Type, []byte, error) {
	if err != nil {
		return t, nil, err
	}
	if t == TypeError {
		var e Error
		if err := Decode(t, p, &e); err != nil {
			return t, nil, err
		}
		return t, nil, &e
	}
	return t, p, nil
}

// Expect reads the next frame, which must be of type t, into v (JSON).
func (c *Conn) Expect(t Type, v any) error {
	for {
		got, p, err := c.Recv()
		if err != nil {
			return err
		}
		if got == TypePing {
			continue
		}
		if got != t {
			return fmt.Errorf("%w: got a %s frame, want %s", ErrProtocol, got, t)
		}
		if v == nil {
			return nil
		}
		return Decode(t, p, v)
	}
}

// SetReadDeadline bounds the next Recv.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// CallJSON runs one control call: args are marshalled, the result is
// unmarshalled into result (when not nil), and a Blob that follows is
// returned.
func (c *Conn) CallJSON(ctx context.Context, method string, args, result any) ([]byte, error) {
	a, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()
	if err := c.SendJSON(TypeCall, Call{Method: method, Args: a}); err != nil {
		return nil, ctxErr(ctx, err)
	}
	var r Reply
	if err := c.Expect(TypeReply, &r); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if result != nil && len(r.Result) > 0 {
		if err := json.Unmarshal(r.Result, result); err != nil {
			return nil, fmt.Errorf("%w: %s result: %v", ErrProtocol, method, err)
		}
	}
	if !r.Blob {
		return nil, nil
	}
	t, p, err := c.Recv()
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if t != TypeBlob {
		return nil, fmt.Errorf("%w: got a %s frame, want blob", ErrProtocol, t)
	}
	return append([]byte(nil), p...), nil
}

// ReplyJSON answers a Call with result and an optional blob.
func (c *Conn) ReplyJSON(result any, blob []byte) error {
	var r Reply
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			return err
		}
		r.Result = b
	}
	r.Blob = blob != nil
	if err := c.SendJSON(TypeReply, r); err != nil {
		return err
	}
	if blob != nil {
		return c.Send(TypeBlob, blob)
	}
	return nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}
