package nbd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// conn is one client connection: the handshake (option haggling) on the
// serving goroutine, then transmission (transmit.go).
type conn struct {
	srv *Server
	raw net.Conn // the accepted connection
	nc  net.Conn // raw, or the TLS connection over it after STARTTLS
	br  *bufio.Reader
	bw  *bufio.Writer
	log *slog.Logger

	dmu      sync.Mutex // orders deadline changes against stop
	stopping bool

	// Option haggling state.
	noZeroes   bool    // client set NBD_FLAG_C_NO_ZEROES
	fixed      bool    // client set NBD_FLAG_C_FIXED_NEWSTYLE
	tls        bool    // STARTTLS completed
	structured bool    // NBD_OPT_STRUCTURED_REPLY acknowledged
	metaExport *Export // export of the last SET_META_CONTEXT that selected base:allocation
	optBuf     []byte

	// Transmission state, fixed once haggling ends.
	export      *Export
	size        uint64
	flags       uint16
	blockStatus bool // base:allocation selected for this export

	tx transmitState
}

// errAbort ends a connection whose client sent NBD_OPT_ABORT.
var errAbort = errors.New("client sent NBD_OPT_ABORT")

// aLongTimeAgo is a deadline in the past: it makes blocked reads return at once.
var aLongTimeAgo = time.Unix(1, 0)

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		srv: s,
		raw: nc,
		nc:  nc,
		br:  bufio.NewReaderSize(nc, 64<<10),
		bw:  bufio.NewWriterSize(nc, 64<<10),
		log: s.log.With("conn", s.connID.Add(1), "remote", remoteName(nc)),
	}
}

// remoteName names the peer for logs; unix peers are unnamed ("@").
func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" && a.String() != "@" {
		return a.String()
	}
	if a := nc.LocalAddr(); a != nil {
		return a.Network() + ":" + a.String()
	}
	return "pipe"
}

// stop asks the connection to end gracefully: no new option or request is
// read, in-flight requests finish and their replies are sent.
func (c *conn) stop() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.stopping = true
	c.raw.SetReadDeadline(aLongTimeAgo)
}

// abort ends the connection hard.
func (c *conn) abort() {
	c.stop()
	c.raw.Close()
}

func (c *conn) isStopping() bool {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	return c.stopping
}

// setDeadline sets the read and write deadlines, keeping a stop in force.
func (c *conn) setDeadline(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.raw.SetWriteDeadline(t)
	if c.stopping {
		t = aLongTimeAgo
	}
	c.raw.SetReadDeadline(t)
}

func (c *conn) serve() {
	defer c.close()
	c.setDeadline(time.Now().Add(handshakeTimeout))
	exp, err := c.handshake()
	if err != nil {
		c.logHandshakeEnd(err)
		return
	}
	c.setDeadline(time.Time{})
	c.log = c.log.With("export", exp.Name)
	c.log.Debug("nbd: transmission started", "structured", c.structured, "tls", c.tls, "flags", c.flags)
	c.transmit()
}

// close shuts TLS down (bounded in time) and closes the connection.
func (c *conn) close() {
	if c.tls {
		c.raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.nc.Close()
	}
	c.raw.Close()
}

func (c *conn) logHandshakeEnd(err error) {
	switch {
	case errors.Is(err, errAbort), errors.Is(err, io.EOF), c.isStopping():
		c.log.Debug("nbd: connection ended during handshake", "err", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Info("nbd: handshake timed out", "timeout", handshakeTimeout)
	default:
		c.log.Info("nbd: handshake failed", "err", err)
	}
}

// handshake runs the fixed newstyle negotiation (§Fixed newstyle
// negotiation) and returns the export the client chose.
func (c *conn) handshake() (*Export, error) {
	var b [18]byte
	be.PutUint64(b[0:], magicInit)
	be.PutUint64(b[8:], magicOpts)
	be.PutUint16(b[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.bw.Write(b[:]); err != nil {
		return nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		return nil, err
	}
	cflags := be.Uint32(b[:4])
	if cflags&^clientFlagsKnown != 0 {
		return nil, protocolError("unknown client flags %#x", cflags)
	}
	c.fixed = cflags&clientFlagFixedNewstyle != 0
	c.noZeroes = cflags&clientFlagNoZeroes != 0
	if c.srv.opts.TLSRequired && !c.fixed {
		// TLS needs fixed newstyle (§Server-side requirements), so this client can never get in.
		return nil, protocolError("client without fixed newstyle on a TLS-only server")
	}
	for n := 0; ; n++ {
		if n == maxOptions {
			return nil, protocolError("more than %d options", maxOptions)
		}
		opt, data, err := c.readOption()
		if err != nil {
			return nil, err
		}
		exp, err := c.handleOption(opt, data)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", optionName(opt), err)
		}
		if exp != nil {
			return exp, c.bw.Flush()
		}
	}
}

// readOption reads one option request (§Newstyle negotiation). An option
// longer than maxOptionLength is treated as a denial of service.
func (c *conn) readOption() (uint32, []byte, error) {
	if c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			return 0, nil, err
		}
	}
	var h [optHeaderSize]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	if m := be.Uint64(h[0:]); m != magicOpts {
		return 0, nil, protocolError("option magic %#x", m)
	}
	opt, n := be.Uint32(h[8:]), be.Uint32(h[12:])
	if n > maxOptionLength {
		return 0, nil, protocolError("option %s with %d bytes of data (limit %d)", optionName(opt), n, maxOptionLength)
	}
	if cap(c.optBuf) < int(n) {
		c.optBuf = make([]byte, n)
	}
	data := c.optBuf[:n]
	if _, err := io.ReadFull(c.br, data); err != nil {
		return 0, nil, err
	}
	return opt, data, nil
}

// handleOption answers one option. It returns the export when the option
// ends haggling, or an error when the connection must end.
func (c *conn) handleOption(opt uint32, data []byte) (*Export, error) {
	if c.srv.opts.TLSRequired && !c.tls {
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			// EXPORT_NAME cannot be answered with an error (§FORCEDTLS mode).
			return nil, protocolError("EXPORT_NAME before STARTTLS on a TLS-only server")
		default:
			return nil, c.optError(opt, repErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
		}
	}
	switch opt {
	case optExportName:
		return c.optExportName(data)
	case optAbort:
		// The client may have gone already; the reply is a courtesy.
		c.optReply(opt, repAck)
		c.bw.Flush()
		return nil, errAbort
	case optList:
		return nil, c.optList(data)
	case optStartTLS:
		return nil, c.optStartTLS(data)
	case optInfo, optGo:
		return c.optInfoGo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return nil, c.optError(opt, repErrInvalid, "STRUCTURED_REPLY takes no data")
		}
		c.structured = true
		return nil, c.optReply(opt, repAck)
	case optListMetaContext, optSetMetaContext:
		return nil, c.optMetaContext(opt, data)
	}
	return nil, c.optError(opt, repErrUnsup, fmt.Sprintf("%s is not supported", optionName(opt)))
}

// optReply writes one option reply whose data is the concatenation of parts.
func (c *conn) optReply(opt, typ uint32, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var h [optReplyHeaderSize]byte
	putOptReplyHeader(h[:], opt, typ, uint32(n))
	if _, err := c.bw.Write(h[:]); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := c.bw.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// optError sends an error reply with a message for a human; the connection stays up.
func (c *conn) optError(opt, typ uint32, msg string) error {
	if len(msg) > maxStringLength {
		msg = msg[:maxStringLength]
	}
	c.log.Debug("nbd: option refused", "option", optionName(opt), "reply", replyName(typ), "msg", msg)
	return c.optReply(opt, typ, []byte(msg))
}

func (c *conn) transmissionFlags(e *Export) uint16 {
	f := flagHasFlags | flagSendFlush | flagSendFUA
	if e.ReadOnly {
		f |= flagReadOnly
	} else {
		f |= flagSendTrim | flagSendWriteZeroes
	}
	if c.structured {
		f |= flagSendDF
	}
	if e.MultiConn {
		f |= flagCanMultiConn
	}
	return f
}

// enter fixes the transmission state for export e.
func (c *conn) enter(e *Export) *Export {
	c.export = e
	c.size = uint64(e.Backend.Size())
	c.flags = c.transmissionFlags(e)
	c.blockStatus = c.structured && c.metaExport == e
	return e
}

func (c *conn) optExportName(data []byte) (*Export, error) {
	name := string(data)
	e := c.srv.lookup(name)
	if e == nil {
		// There is no way to answer EXPORT_NAME with an error (§Option types).
		return nil, protocolError("EXPORT_NAME for unknown export %q", name)
	}
	c.enter(e)
	var b [exportNameReplySize + exportNameZeroes]byte
	be.PutUint64(b[0:], c.size)
	be.PutUint16(b[8:], c.flags)
	n := len(b)
	if c.noZeroes {
		n = exportNameReplySize
	}
	if _, err := c.bw.Write(b[:n]); err != nil {
		return nil, err
	}
	return e, nil
}

func (c *conn) optList(data []byte) error {
	if len(data) != 0 {
		return c.optError(optList, repErrInvalid, "LIST takes no data")
	}
	for _, e := range c.srv.exports {
		var n [4]byte
		be.PutUint32(n[:], uint32(len(e.Name)))
		if err := c.optReply(optList, repServer, n[:], []byte(e.Name), []byte(e.Description)); err != nil {
			return err
		}
	}
	return c.optReply(optList, repAck)
}

func (c *conn) optStartTLS(data []byte) error {
	switch {
	case len(data) != 0:
		return c.optError(optStartTLS, repErrInvalid, "STARTTLS takes no data")
	case c.tls:
		return c.optError(optStartTLS, repErrInvalid, "TLS is already active")
	case c.srv.opts.TLSConfig == nil:
		return c.optError(optStartTLS, repErrPolicy, "TLS is not configured on this server")
	case !c.fixed:
		return c.optError(optStartTLS, repErrPolicy, "TLS needs fixed newstyle negotiation")
	}
	if err := c.optReply(optStartTLS, repAck); err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	if c.br.Buffered() > 0 {
		return protocolError("client sent data before the TLS handshake")
	}
	tc := tls.Server(c.raw, c.srv.opts.TLSConfig)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.nc = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.tls = true
	// No negotiation state survives STARTTLS (§Option types, NBD_OPT_STARTTLS).
	c.structured = false
	c.metaExport = nil
	return nil
}

func (c *conn) optInfoGo(opt uint32, data []byte) (*Export, error) {
	req, err := parseInfoRequest(data)
	if err != nil {
		return nil, c.optError(opt, repErrInvalid, err.Error())
	}
	e := c.srv.lookup(req.name)
	if e == nil {
		return nil, c.optError(opt, repErrUnknown, fmt.Sprintf("no export named %q", req.name))
	}
	var b [14]byte
	be.PutUint16(b[0:], infoExport)
	be.PutUint64(b[2:], uint64(e.Backend.Size()))
	be.PutUint16(b[10:], c.transmissionFlags(e))
	if err := c.optReply(opt, repInfo, b[:12]); err != nil {
		return nil, err
	}
	for _, info := range req.infos {
		var err error
		switch info {
		case infoName:
			be.PutUint16(b[0:], infoName)
			err = c.optReply(opt, repInfo, b[:2], []byte(e.Name))
		case infoDescription:
			if e.Description != "" {
				be.PutUint16(b[0:], infoDescription)
				err = c.optReply(opt, repInfo, b[:2], []byte(e.Description))
			}
		}
		if err != nil {
			return nil, err
		}
	}
	// Block sizes are sent unasked too: they are the defaults, so a client
	// that ignores them loses nothing (§Size constraints).
	be.PutUint16(b[0:], infoBlockSize)
	be.PutUint32(b[2:], minBlockSize)
	be.PutUint32(b[6:], preferredBlockSize)
	be.PutUint32(b[10:], maxPayloadSize)
	if err := c.optReply(opt, repInfo, b[:14]); err != nil {
		return nil, err
	}
	if err := c.optReply(opt, repAck); err != nil {
		return nil, err
	}
	if opt == optGo {
		return c.enter(e), nil
	}
	return nil, nil
}

func (c *conn) optMetaContext(opt uint32, data []byte) error {
	list := opt == optListMetaContext
	if !list {
		// SET replaces the selection even when it fails (§Option types, NBD_OPT_SET_META_CONTEXT).
		c.metaExport = nil
	}
	if !c.structured {
		return c.optError(opt, repErrInvalid, "negotiate structured replies first")
	}
	req, err := parseMetaContextRequest(data)
	if err != nil {
		return c.optError(opt, repErrInvalid, err.Error())
	}
	e := c.srv.lookup(req.export)
	if e == nil {
		return c.optError(opt, repErrUnknown, fmt.Sprintf("no export named %q", req.export))
	}
	found, err := matchMetaContext(req.queries, list)
	if err != nil {
		return c.optError(opt, repErrInvalid, err.Error())
	}
	if found {
		var id [4]byte // LIST replies carry id 0 (reserved)
		if !list {
			be.PutUint32(id[:], metaContextID)
			c.metaExport = e
		}
		if err := c.optReply(opt, repMetaContext, id[:], []byte(metaContextBaseAllocation)); err != nil {
			return err
		}
	}
	return c.optReply(opt, repAck)
}

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes 32-bit name length, name, 16-bit count and
// count 16-bit information types (§Option types, NBD_OPT_INFO).
func parseInfoRequest(b []byte) (infoRequest, error) {
	var r infoRequest
	if len(b) < 6 {
		return r, fmt.Errorf("option data is %d bytes, need at least 6", len(b))
	}
	n := be.Uint32(b)
	if uint64(n) > uint64(len(b)-6) {
		return r, fmt.Errorf("export name length %d overruns the option data", n)
	}
	r.name = string(b[4 : 4+n])
	if err := checkString("export name", r.name); err != nil {
		return r, err
	}
	rest := b[4+n:]
	count := int(be.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return r, fmt.Errorf("%d information requests need %d bytes, have %d", count, 2*count, len(rest))
	}
	for i := 0; i < count; i++ {
		r.infos = append(r.infos, be.Uint16(rest[2*i:]))
	}
	return r, nil
}

// metaContextRequest is the data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
type metaContextRequest struct {
	export  string
	queries []string
}

// parseMetaContextRequest decodes 32-bit export name length, name, 32-bit
// query count, and per query a 32-bit length and the query (§Option types).
func parseMetaContextRequest(b []byte) (metaContextRequest, error) {
	var r metaContextRequest
	if len(b) < 8 {
		return r, fmt.Errorf("option data is %d bytes, need at least 8", len(b))
	}
	n := be.Uint32(b)
	if uint64(n) > uint64(len(b)-8) {
		return r, fmt.Errorf("export name length %d overruns the option data", n)
	}
	r.export = string(b[4 : 4+n])
	if err := checkString("export name", r.export); err != nil {
		return r, err
	}
	rest := b[4+n:]
	count := be.Uint32(rest)
	rest = rest[4:]
	if uint64(count) > uint64(len(rest)/4) {
		return r, fmt.Errorf("%d queries cannot fit in %d bytes", count, len(rest))
	}
	for i := uint32(0); i < count; i++ {
		if len(rest) < 4 {
			return r, fmt.Errorf("query %d: truncated length", i)
		}
		ql := be.Uint32(rest)
		rest = rest[4:]
		if uint64(ql) > uint64(len(rest)) {
			return r, fmt.Errorf("query %d: length %d overruns the option data", i, ql)
		}
		q := string(rest[:ql])
		if err := checkString("query", q); err != nil {
			return r, err
		}
		r.queries = append(r.queries, q)
		rest = rest[ql:]
	}
	if len(rest) != 0 {
		return r, fmt.Errorf("%d bytes after the last query", len(rest))
	}
	return r, nil
}

// matchMetaContext reports whether the queries select base:allocation. With
// no query, LIST matches everything and SET selects nothing; "base:" is a
// wildcard for LIST only; unknown namespaces and leaves are ignored (§The
// base: metadata namespace).
func matchMetaContext(queries []string, list bool) (bool, error) {
	if len(queries) == 0 {
		return list, nil
	}
	found := false
	for _, q := range queries {
		ns, leaf, ok := strings.Cut(q, ":")
		if !ok || ns == "" {
			return false, fmt.Errorf("query %q has no namespace", q)
		}
		if ns != "base" {
			continue
		}
		if leaf == "allocation" || (leaf == "" && list) {
			found = true
		}
	}
	return found, nil
}
