package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ClientOptions configure Dial.
type ClientOptions struct {
	// TLSConfig, when set, makes the client send NBD_OPT_STARTTLS first and
	// give up if the server refuses. Without ServerName, the host part of a
	// TCP address is used.
	TLSConfig *tls.Config
	// BaseAllocation negotiates the base:allocation metadata context so that
	// Extents works; Dial fails if the server does not offer it.
	BaseAllocation bool
}

// Client is an NBD client for one export. It is safe for concurrent use:
// each call is one or more requests in flight, matched to replies by cookie
// by a single reader goroutine.
type Client struct {
	nc         net.Conn
	size       int64
	flags      uint16 // transmission flags
	structured bool
	allocID    uint32
	hasAlloc   bool
	maxPayload int

	wmu     sync.Mutex // guards bw and werr
	bw      *bufio.Writer
	waiting atomic.Int32 // senders waiting for wmu
	werr    error

	br         *bufio.Reader // owned by the reader goroutine after Dial
	readerDone chan struct{}

	mu      sync.Mutex
	idle    sync.Cond // broadcast when pending empties or the reader stops
	pending map[uint64]*call
	cookie  uint64
	closing bool
	rerr    error // why the reader stopped; set once
}

// call is one request waiting for its reply.
type call struct {
	typ     uint16
	off     uint64
	length  uint32
	dst     []byte // READ destination
	got     int    // READ bytes received
	err     error
	extents []Extent
	hdr     [requestHeaderSize]byte
	done    chan struct{} // capacity 1: the reader sends once per use
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// Dial connects to addr, negotiates fixed newstyle (STARTTLS when
// o.TLSConfig is set, structured replies, base:allocation when asked) and
// enters transmission on exportName with NBD_OPT_GO. ctx bounds the
// connection and the handshake only.
func Dial(ctx context.Context, network, addr, exportName string, o ClientOptions) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd dial %s %s: %w", network, addr, err)
	}
	if o.TLSConfig != nil && o.TLSConfig.ServerName == "" && !o.TLSConfig.InsecureSkipVerify {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			o.TLSConfig = o.TLSConfig.Clone()
			o.TLSConfig.ServerName = host
		}
	}
	c, err := newClient(ctx, nc, exportName, o)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nbd dial %s %s export %q: %w", network, addr, exportName, err)
	}
	return c, nil
}

// newClient runs the handshake on nc and starts the reader.
func newClient(ctx context.Context, nc net.Conn, exportName string, o ClientOptions) (*Client, error) {
	c := &Client{
		nc:         nc,
		br:         bufio.NewReaderSize(nc, 64<<10),
		bw:         bufio.NewWriterSize(nc, 64<<10),
		pending:    make(map[uint64]*call),
		readerDone: make(chan struct{}),
		maxPayload: maxPayloadSize,
	}
	c.idle.L = &c.mu
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	err := c.handshake(ctx, exportName, o)
	if !stop() {
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	c.nc.SetDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

func (c *Client) handshake(ctx context.Context, exportName string, o ClientOptions) error {
	var b [18]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if be.Uint64(b[0:]) != magicInit || be.Uint64(b[8:]) != magicOpts {
		return protocolError("not a newstyle NBD server")
	}
	hflags := be.Uint16(b[16:])
	if hflags&flagFixedNewstyle == 0 {
		return protocolError("server does not offer fixed newstyle negotiation")
	}
	cflags := clientFlagFixedNewstyle
	if hflags&flagNoZeroes != 0 {
		cflags |= clientFlagNoZeroes
	}
	be.PutUint32(b[:], cflags)
	if _, err := c.bw.Write(b[:4]); err != nil {
		return err
	}
	if o.TLSConfig != nil {
		if err := c.startTLS(ctx, o.TLSConfig); err != nil {
			return err
		}
	}
	typ, data, err := c.option(optStructuredReply, nil)
	switch {
	case err != nil:
		return err
	case typ == repAck:
		c.structured = true
	case typ != repErrUnsup:
		return optionError(optStructuredReply, typ, data)
	}
	if o.BaseAllocation {
		if err := c.setMetaContext(exportName); err != nil {
			return err
		}
	}
	return c.goExport(exportName, cflags&clientFlagNoZeroes != 0)
}

// option sends one option and reads its single reply.
func (c *Client) option(opt uint32, data []byte) (uint32, []byte, error) {
	if err := c.sendOption(opt, data); err != nil {
		return 0, nil, err
	}
	return c.readOptReply(opt)
}

func (c *Client) sendOption(opt uint32, data []byte) error {
	var h [optHeaderSize]byte
	be.PutUint64(h[0:], magicOpts)
	be.PutUint32(h[8:], opt)
	be.PutUint32(h[12:], uint32(len(data)))
	c.bw.Write(h[:])
	c.bw.Write(data)
	return c.bw.Flush()
}

// maxOptReply bounds one option reply the client accepts.
const maxOptReply = 1 << 20

func (c *Client) readOptReply(opt uint32) (uint32, []byte, error) {
	var h [optReplyHeaderSize]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("option %s: read reply: %w", optionName(opt), err)
	}
	if m := be.Uint64(h[0:]); m != magicOptReply {
		return 0, nil, protocolError("option reply magic %#x", m)
	}
	if got := be.Uint32(h[8:]); got != opt {
		return 0, nil, protocolError("reply for option %s while waiting for %s", optionName(got), optionName(opt))
	}
	typ, n := be.Uint32(h[12:]), be.Uint32(h[16:])
	if n > maxOptReply {
		return 0, nil, protocolError("option reply of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return 0, nil, fmt.Errorf("option %s: read reply: %w", optionName(opt), err)
	}
	return typ, data, nil
}

func optionError(opt, typ uint32, data []byte) error {
	if typ&repFlagError == 0 {
		return protocolError("unexpected reply %s to option %s", replyName(typ), optionName(opt))
	}
	return &OptionError{Option: optionName(opt), Reply: replyName(typ), Message: string(data), code: typ}
}

func (c *Client) startTLS(ctx context.Context, cfg *tls.Config) error {
	typ, data, err := c.option(optStartTLS, nil)
	if err != nil {
		return err
	}
	if typ != repAck {
		return optionError(optStartTLS, typ, data)
	}
	if c.br.Buffered() > 0 {
		return protocolError("server sent data before the TLS handshake")
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.nc = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	return nil
}

func (c *Client) setMetaContext(exportName string) error {
	if !c.structured {
		return errors.New("server has no structured replies, so no base:allocation")
	}
	q := metaContextBaseAllocation
	data := make([]byte, 0, 12+len(exportName)+len(q))
	data = be.AppendUint32(data, uint32(len(exportName)))
	data = append(data, exportName...)
	data = be.AppendUint32(data, 1)
	data = be.AppendUint32(data, uint32(len(q)))
	data = append(data, q...)
	if err := c.sendOption(optSetMetaContext, data); err != nil {
		return err
	}
	for {
		typ, data, err := c.readOptReply(optSetMetaContext)
		switch {
		case err != nil:
			return err
		case typ == repMetaContext && len(data) >= 4:
			if string(data[4:]) == metaContextBaseAllocation {
				c.allocID, c.hasAlloc = be.Uint32(data), true
			}
		case typ == repAck:
			if !c.hasAlloc {
				return errors.New("server does not offer base:allocation")
			}
			return nil
		default:
			return optionError(optSetMetaContext, typ, data)
		}
	}
}

// goExport enters transmission with NBD_OPT_GO, or NBD_OPT_EXPORT_NAME on
// servers that lack it.
func (c *Client) goExport(exportName string, noZeroes bool) error {
	data := make([]byte, 0, 8+len(exportName))
	data = be.AppendUint32(data, uint32(len(exportName)))
	data = append(data, exportName...)
	data = be.AppendUint16(data, 1)
	data = be.AppendUint16(data, infoBlockSize)
	if err := c.sendOption(optGo, data); err != nil {
		return err
	}
	gotExport := false
	for {
		typ, data, err := c.readOptReply(optGo)
		if err != nil {
			return err
		}
		switch typ {
		case repInfo:
			if len(data) < 2 {
				return protocolError("short NBD_REP_INFO")
			}
			switch be.Uint16(data) {
			case infoExport:
				if len(data) != 12 {
					return protocolError("NBD_INFO_EXPORT of %d bytes", len(data))
				}
				c.size, c.flags, gotExport = int64(be.Uint64(data[2:])), be.Uint16(data[10:]), true
			case infoBlockSize:
				if len(data) != 14 {
					return protocolError("NBD_INFO_BLOCK_SIZE of %d bytes", len(data))
				}
				if m := be.Uint32(data[10:]); m > 0 && m < maxPayloadSize {
					c.maxPayload = int(m)
				}
			}
		case repAck:
			if !gotExport {
				return protocolError("NBD_OPT_GO succeeded without NBD_INFO_EXPORT")
			}
			return c.checkSize()
		case repErrUnsup:
			return c.exportName(exportName, noZeroes)
		default:
			return optionError(optGo, typ, data)
		}
	}
}

func (c *Client) exportName(exportName string, noZeroes bool) error {
	if err := c.sendOption(optExportName, []byte(exportName)); err != nil {
		return err
	}
	b := make([]byte, exportNameReplySize+exportNameZeroes)
	if noZeroes {
		b = b[:exportNameReplySize]
	}
	if _, err := io.ReadFull(c.br, b); err != nil {
		return fmt.Errorf("option EXPORT_NAME: %w", err)
	}
	c.size, c.flags = int64(be.Uint64(b)), be.Uint16(b[8:])
	return c.checkSize()
}

func (c *Client) checkSize() error {
	if c.size < 0 {
		return protocolError("export size %d overflows int64", uint64(c.size))
	}
	return nil
}

// Size is the export size in bytes.
func (c *Client) Size() int64 { return c.size }

// ReadAt reads len(p) bytes at off, splitting large reads. Like any
// io.ReaderAt, it returns io.EOF with a short count at the end of the export.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd read at %d: negative offset", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > c.size-off {
		p, eof = p[:c.size-off], io.EOF
	}
	for done := 0; done < len(p); {
		n := min(len(p)-done, c.maxPayload)
		cl := getCall(cmdRead, off+int64(done), n)
		cl.dst = p[done : done+n]
		err := c.roundTrip(cl, 0, nil)
		putCall(cl)
		if err != nil {
			return done, err
		}
		done += n
	}
	return len(p), eof
}

// WriteAt writes p at off, splitting large writes. Like any io.WriterAt it
// returns how much was written before an error.
func (c *Client) WriteAt(p []byte, off int64) (int, error) {
	return c.write(p, off, 0)
}

// WriteFUA writes p at off and returns once it is durable (NBD_CMD_FLAG_FUA).
func (c *Client) WriteFUA(p []byte, off int64) error {
	if c.flags&flagSendFUA == 0 {
		return fmt.Errorf("nbd write: server does not support FUA: %w", errors.ErrUnsupported)
	}
	_, err := c.write(p, off, cmdFlagFUA)
	return err
}

func (c *Client) write(p []byte, off int64, flags uint16) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("nbd write at %d: negative offset", off)
	}
	for done := 0; done < len(p); {
		n := min(len(p)-done, c.maxPayload)
		cl := getCall(cmdWrite, off+int64(done), n)
		err := c.roundTrip(cl, flags, p[done:done+n])
		putCall(cl)
		if err != nil {
			return done, err
		}
		done += n
	}
	return len(p), nil
}

// maxEffectLength splits WRITE_ZEROES and TRIM: their length field is 32
// bits, and they carry no payload, so the split size only needs to fit.
const maxEffectLength = 1 << 30

// Zero makes [off, off+length) read as zeros (NBD_CMD_WRITE_ZEROES); with
// noHole the server must keep the range allocated (NBD_CMD_FLAG_NO_HOLE).
func (c *Client) Zero(off, length int64, noHole bool) error {
	if c.flags&flagSendWriteZeroes == 0 {
		return fmt.Errorf("nbd write zeroes: server does not support it: %w", errors.ErrUnsupported)
	}
	var flags uint16
	if noHole {
		flags = cmdFlagNoHole
	}
	return c.ranged(cmdWriteZeroes, flags, off, length)
}

// Trim discards [off, off+length) (NBD_CMD_TRIM).
func (c *Client) Trim(off, length int64) error {
	if c.flags&flagSendTrim == 0 {
		return fmt.Errorf("nbd trim: server does not support it: %w", errors.ErrUnsupported)
	}
	return c.ranged(cmdTrim, 0, off, length)
}

func (c *Client) ranged(typ, flags uint16, off, length int64) error {
	if off < 0 || length < 0 {
		return fmt.Errorf("nbd %s %d+%d: negative range", commandName(typ), off, length)
	}
	for length > 0 {
		n := min(length, maxEffectLength)
		cl := getCall(typ, off, int(n))
		err := c.roundTrip(cl, flags, nil)
		putCall(cl)
		if err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// Flush makes every completed write durable (NBD_CMD_FLUSH).
func (c *Client) Flush() error {
	if c.flags&flagSendFlush == 0 {
		return fmt.Errorf("nbd flush: server does not support it: %w", errors.ErrUnsupported)
	}
	cl := getCall(cmdFlush, 0, 0)
	err := c.roundTrip(cl, 0, nil)
	putCall(cl)
	return err
}

// Extents reports base:allocation for a range starting at off; the answer
// may cover less than length (ask again from where it ends). The client
// must have been dialled with BaseAllocation.
func (c *Client) Extents(off, length int64) ([]Extent, error) {
	if !c.hasAlloc {
		return nil, errors.New("nbd block status: base:allocation was not negotiated (set ClientOptions.BaseAllocation)")
	}
	if off < 0 || length <= 0 {
		return nil, fmt.Errorf("nbd block status %d+%d: bad range", off, length)
	}
	cl := getCall(cmdBlockStatus, off, int(min(length, maxEffectLength)))
	err := c.roundTrip(cl, 0, nil)
	exts := cl.extents
	cl.extents = nil
	putCall(cl)
	return exts, err
}

// Close waits for requests in flight, sends NBD_CMD_DISC, waits briefly for
// the server to close its side, and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return ErrClientClosed
	}
	c.closing = true
	for len(c.pending) > 0 && c.rerr == nil {
		c.idle.Wait()
	}
	alive := c.rerr == nil
	c.mu.Unlock()
	var err error
	if alive {
		var h [requestHeaderSize]byte
		(&requestHeader{typ: cmdDisc}).encode(h[:])
		c.wmu.Lock()
		if c.werr == nil {
			if _, c.werr = c.bw.Write(h[:]); c.werr == nil {
				c.werr = c.bw.Flush()
			}
		}
		err = c.werr
		c.wmu.Unlock()
		// The server closes once it has finished; give it a moment to say so.
		c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		<-c.readerDone
	}
	c.nc.Close()
	<-c.readerDone
	if err != nil {
		return fmt.Errorf("nbd close: %w", err)
	}
	return nil
}

func getCall(typ uint16, off int64, n int) *call {
	cl := callPool.Get().(*call)
	cl.typ, cl.off, cl.length = typ, uint64(off), uint32(n)
	return cl
}

func putCall(cl *call) {
	cl.dst, cl.got, cl.err, cl.extents = nil, 0, nil, nil
	callPool.Put(cl)
}

// roundTrip sends the request described by cl (and payload) and waits for
// its reply.
func (c *Client) roundTrip(cl *call, flags uint16, payload []byte) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return ErrClientClosed
	}
	if c.rerr != nil {
		err := c.rerr
		c.mu.Unlock()
		return err
	}
	c.cookie++
	cookie := c.cookie
	c.pending[cookie] = cl
	c.mu.Unlock()

	h := requestHeader{flags: flags, typ: cl.typ, cookie: cookie, offset: cl.off, length: cl.length}
	h.encode(cl.hdr[:])
	c.waiting.Add(1)
	c.wmu.Lock()
	c.waiting.Add(-1)
	if c.werr == nil {
		_, c.werr = c.bw.Write(cl.hdr[:])
	}
	if c.werr == nil && len(payload) > 0 {
		_, c.werr = c.bw.Write(payload)
	}
	if c.werr == nil && c.waiting.Load() == 0 {
		c.werr = c.bw.Flush()
	}
	werr := c.werr
	c.wmu.Unlock()
	if werr != nil {
		c.nc.Close() // the reader stops and fails every pending call, this one included
	}
	<-cl.done
	return cl.err
}
