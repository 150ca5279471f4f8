package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Transmission (§Transmission). The serving goroutine reads requests and
// hands them to workers; workers call the Backend and write replies. At most
// MaxInFlight requests exist per connection: they live on a free list, and
// an empty free list stops the reader (backpressure). Replies go out in
// completion order through one bufio.Writer, flushed by the last worker to
// write when no other reply is waiting, so a busy queue costs few syscalls.

// request is one transmission request and its scratch space. The free list
// recycles them, so the steady state allocates nothing per request.
type request struct {
	requestHeader
	errno   uint32  // nonzero: reply with this error without calling the Backend
	msg     string  // human-readable reason for errno
	buf     *[]byte // WRITE payload, from the buffer pool
	scratch [structuredHeaderSize + 8]byte
}

type transmitState struct {
	free     chan *request
	work     chan *request // unbuffered: a send succeeds only if a worker is idle
	workers  int
	workerWG sync.WaitGroup
	hdr      [requestHeaderSize]byte // the reader's scratch

	wmu     sync.Mutex   // guards bw and werr
	waiting atomic.Int32 // workers waiting for wmu
	werr    error
	// holdFlush is set while the reader handles a request inline: replies
	// written then stay buffered until the reader is about to wait.
	holdFlush atomic.Bool

	errMu        sync.Mutex // backend error accounting, for rate-limited logs
	errCount     int
	errLastLog   time.Time
	errSinceLast int
}

// exportState is what request validation needs to know about a connection.
type exportState struct {
	size        uint64
	readOnly    bool
	structured  bool
	blockStatus bool
}

func (c *conn) transmit() {
	t := &c.tx
	n := c.srv.maxInFlight
	t.free = make(chan *request, n)
	for range n {
		t.free <- new(request)
	}
	t.work = make(chan *request)
	st := exportState{
		size:        c.size,
		readOnly:    c.export.ReadOnly,
		structured:  c.structured,
		blockStatus: c.blockStatus,
	}

	var err error
	for {
		if c.br.Buffered() == 0 {
			// About to wait for the client: send the replies held back.
			c.flushReplies()
		}
		var r *request
		select {
		case r = <-t.free:
		default:
			c.flushReplies() // about to wait for a worker
			r = <-t.free
		}
		err = c.readRequest(r, st)
		if err != nil || r.typ == cmdDisc {
			t.free <- r
			break
		}
		if c.export.InlineWrites && inline(r) {
			t.holdFlush.Store(true)
			c.handle(r)
			t.holdFlush.Store(false)
			t.free <- r
			continue
		}
		c.dispatch(r)
	}

	// After DISC, a read error or a stop: finish what is in flight, send
	// the replies, and let serve close the connection.
	for range n {
		<-t.free
	}
	close(t.work)
	t.workerWG.Wait()
	t.wmu.Lock()
	if t.werr == nil {
		t.werr = c.bw.Flush()
	}
	werr := t.werr
	t.wmu.Unlock()
	c.logTransmitEnd(err, werr)
}

func (c *conn) logTransmitEnd(rerr, werr error) {
	t := &c.tx
	t.errMu.Lock()
	if t.errSinceLast > 0 {
		c.log.Warn("nbd: backend errors", "count", t.errSinceLast, "total", t.errCount)
	}
	t.errMu.Unlock()
	switch {
	case rerr == nil:
		c.log.Debug("nbd: client disconnected")
	case errors.Is(rerr, ErrProtocol):
		c.log.Info("nbd: disconnecting client", "err", rerr)
	case c.isStopping() && errors.Is(rerr, os.ErrDeadlineExceeded):
		c.log.Debug("nbd: connection stopped")
	case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
		c.log.Debug("nbd: client went away without NBD_CMD_DISC", "err", rerr)
	default:
		c.log.Info("nbd: connection ended", "err", rerr)
	}
	if werr != nil && rerr == nil {
		c.log.Info("nbd: replies could not be sent", "err", werr)
	}
}

// readRequest reads one request and, for WRITE, its payload. An error ends
// the connection; a bad but well-framed request gets r.errno instead.
func (c *conn) readRequest(r *request, st exportState) error {
	b := c.tx.hdr[:]
	if _, err := io.ReadFull(c.br, b); err != nil {
		return err
	}
	r.decode(b)
	if r.magic != magicRequest {
		return protocolError("request magic %#x", r.magic)
	}
	r.errno, r.msg = validateRequest(&r.requestHeader, st)
	if r.typ != cmdWrite {
		return nil
	}
	if r.length > maxPayloadSize {
		// Skipping that much data is not worth it: the client broke the limit it was given.
		return protocolError("WRITE payload of %d bytes exceeds the %d-byte maximum", r.length, maxPayloadSize)
	}
	if r.errno != 0 {
		_, err := c.br.Discard(int(r.length))
		return err
	}
	r.buf = getBuf(int(r.length))
	if _, err := io.ReadFull(c.br, *r.buf); err != nil {
		putBuf(r.buf)
		r.buf = nil
		return err
	}
	return nil
}

// validateRequest checks a request against the negotiated state and returns
// the NBD error to answer with, or 0 (§Request types, §Error values).
func validateRequest(h *requestHeader, st exportState) (uint32, string) {
	allowed := cmdFlagFUA // valid on every command (§Command flags)
	switch h.typ {
	case cmdDisc:
		return 0, "" // never answered
	case cmdRead:
		if st.structured {
			allowed |= cmdFlagDF // one chunk is all this server ever sends
		}
	case cmdWrite, cmdFlush, cmdTrim:
	case cmdWriteZeroes:
		allowed |= cmdFlagNoHole
	case cmdBlockStatus:
		allowed |= cmdFlagReqOne
	default:
		return errInval, fmt.Sprintf("unsupported command %d", h.typ)
	}
	if h.flags&^allowed != 0 {
		return errInval, fmt.Sprintf("flags %#x are not valid for %s", h.flags&^allowed, commandName(h.typ))
	}
	switch h.typ {
	case cmdFlush:
		return 0, "" // offset and length are reserved; nothing to check
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		if st.readOnly {
			return errPerm, "the export is read-only"
		}
	case cmdRead:
		if h.length > maxPayloadSize {
			if st.structured {
				return errOverflow, fmt.Sprintf("read of %d bytes exceeds the %d-byte maximum", h.length, maxPayloadSize)
			}
			return errInval, fmt.Sprintf("read of %d bytes exceeds the %d-byte maximum", h.length, maxPayloadSize)
		}
	case cmdBlockStatus:
		if !st.blockStatus {
			return errInval, "base:allocation was not negotiated"
		}
		if h.length == 0 {
			return errInval, "block status of zero length"
		}
	}
	if h.offset > st.size || uint64(h.length) > st.size-h.offset {
		msg := fmt.Sprintf("%d+%d is beyond the end of the export (%d bytes)", h.offset, h.length, st.size)
		if h.typ == cmdWrite || h.typ == cmdWriteZeroes {
			return errNoSpc, msg // §Error values: writes beyond the end get ENOSPC
		}
		return errInval, msg
	}
	return 0, ""
}

// inlineMax bounds the writes the reader handles itself.
const inlineMax = 1 << 20

// inline reports whether the reader handles r itself instead of handing it
// to a worker, on an export with InlineWrites: plain writes of up to
// inlineMax. Handing them over costs two goroutine switches; handling them
// in order also lets one reply write carry the replies of every request
// that arrived in one read.
func inline(r *request) bool {
	return r.typ == cmdWrite && r.errno == 0 && r.flags&cmdFlagFUA == 0 && r.length <= inlineMax
}

// flushReplies sends the replies held back while the reader handled
// requests inline.
//
// It takes the writer lock every time rather than trusting a flag: a worker
// that saw holdFlush set just before the reader cleared it has then either
// buffered its reply before this flush, or finds holdFlush clear and
// flushes itself.
func (c *conn) flushReplies() {
	t := &c.tx
	t.wmu.Lock()
	if t.werr == nil && c.bw.Buffered() > 0 {
		t.werr = c.bw.Flush()
		if t.werr != nil {
			c.stop()
		}
	}
	t.wmu.Unlock()
}

// dispatch gives r to an idle worker, or starts one while under the limit.
func (c *conn) dispatch(r *request) {
	t := &c.tx
	select {
	case t.work <- r:
		return
	default:
	}
	if t.workers < cap(t.free) {
		t.workers++
		t.workerWG.Add(1)
		go c.worker(r)
		return
	}
	t.work <- r
}

func (c *conn) worker(r *request) {
	defer c.tx.workerWG.Done()
	for {
		c.handle(r)
		c.tx.free <- r // never blocks: the free list has room for every request
		var ok bool
		if r, ok = <-c.tx.work; !ok {
			return
		}
	}
}

// handle performs one request and sends its reply.
func (c *conn) handle(r *request) {
	defer func() {
		if r.buf != nil {
			putBuf(r.buf)
			r.buf = nil
		}
		r.msg = ""
	}()
	if r.errno != 0 {
		c.replyError(r, r.errno, r.msg)
		return
	}
	ctx := c.srv.hardCtx
	b := c.export.Backend
	off, n := int64(r.offset), int64(r.length)
	fua := r.flags&cmdFlagFUA != 0
	var err error
	switch r.typ {
	case cmdRead:
		c.handleRead(r)
		return
	case cmdBlockStatus:
		c.handleBlockStatus(r)
		return
	case cmdWrite:
		if n > 0 {
			err = b.WriteAt(ctx, *r.buf, off, fua)
		}
	case cmdFlush:
		err = b.Flush(ctx)
	case cmdTrim:
		if n > 0 {
			err = b.Trim(ctx, off, n, fua)
		}
	case cmdWriteZeroes:
		if n > 0 {
			err = b.Zero(ctx, off, n, r.flags&cmdFlagNoHole == 0, fua)
		}
	}
	if err != nil {
		c.backendError(r, err)
		return
	}
	c.lockWriter()
	putSimpleReply(r.scratch[:], 0, r.cookie)
	c.write(r.scratch[:simpleReplySize])
	c.unlockWriter()
}

func (c *conn) handleRead(r *request) {
	buf := getBuf(int(r.length))
	defer putBuf(buf)
	if r.length > 0 {
		if err := c.export.Backend.ReadAt(c.srv.hardCtx, *buf, int64(r.offset)); err != nil {
			c.backendError(r, err)
			return
		}
	}
	c.lockWriter()
	defer c.unlockWriter()
	if !c.structured {
		putSimpleReply(r.scratch[:], 0, r.cookie)
		c.write(r.scratch[:simpleReplySize])
		c.write(*buf)
		return
	}
	if r.length == 0 {
		putChunkHeader(r.scratch[:], replyFlagDone, replyTypeNone, r.cookie, 0)
		c.write(r.scratch[:structuredHeaderSize])
		return
	}
	// One data chunk, marked final: the data is complete before it is sent,
	// so no error can follow (§Structured reply chunk message).
	putChunkHeader(r.scratch[:], replyFlagDone, replyTypeOffsetData, r.cookie, 8+r.length)
	be.PutUint64(r.scratch[structuredHeaderSize:], r.offset)
	c.write(r.scratch[:structuredHeaderSize+8])
	c.write(*buf)
}

// maxDescriptors bounds one block status reply; the spec lets a server
// answer short, and clients ask again from where the answer ended.
const maxDescriptors = 1 << 16

func (c *conn) handleBlockStatus(r *request) {
	exts, err := c.export.Backend.Extents(c.srv.hardCtx, int64(r.offset), int64(r.length))
	if err != nil {
		c.backendError(r, err)
		return
	}
	reqOne := r.flags&cmdFlagReqOne != 0
	buf := getBuf(4 + 8*min(len(exts), maxDescriptors))
	defer putBuf(buf)
	d := *buf
	be.PutUint32(d, metaContextID)
	k := 0                   // descriptors written
	left := uint64(r.length) // the request length fits in 32 bits, so every descriptor does too
	var prev uint32
	for _, e := range exts {
		if e.Length <= 0 || left == 0 {
			break
		}
		l := min(uint64(e.Length), left)
		var flags uint32
		if e.Hole {
			flags |= stateHole
		}
		if e.Zero {
			flags |= stateZero
		}
		if k > 0 && flags == prev {
			p := d[4+8*(k-1):]
			be.PutUint32(p, be.Uint32(p)+uint32(l))
		} else {
			if reqOne && k == 1 || k == maxDescriptors {
				break
			}
			be.PutUint32(d[4+8*k:], uint32(l))
			be.PutUint32(d[8+8*k:], flags)
			k++
			prev = flags
		}
		left -= l
	}
	if k == 0 {
		c.backendError(r, fmt.Errorf("backend returned no extents for %d+%d", r.offset, r.length))
		return
	}
	c.lockWriter()
	defer c.unlockWriter()
	putChunkHeader(r.scratch[:], replyFlagDone, replyTypeBlockStatus, r.cookie, uint32(4+8*k))
	c.write(r.scratch[:structuredHeaderSize])
	c.write(d[:4+8*k])
}

// backendError replies to r with the NBD form of err, logging rate-limited.
func (c *conn) backendError(r *request, err error) {
	t := &c.tx
	t.errMu.Lock()
	t.errCount++
	t.errSinceLast++
	logNow := time.Since(t.errLastLog) >= time.Minute
	var suppressed int
	if logNow {
		suppressed = t.errSinceLast - 1
		t.errSinceLast = 0
		t.errLastLog = time.Now()
	}
	t.errMu.Unlock()
	if logNow {
		c.log.Warn("nbd: backend error", "cmd", commandName(r.typ), "cookie", r.cookie,
			"offset", r.offset, "length", r.length, "err", err, "suppressed", suppressed)
	}
	c.replyError(r, errnoOf(err), err.Error())
}

// replyError sends an error reply: a structured ERROR chunk with a message
// when structured replies are on, a simple reply otherwise.
func (c *conn) replyError(r *request, errno uint32, msg string) {
	c.lockWriter()
	defer c.unlockWriter()
	if !c.structured {
		putSimpleReply(r.scratch[:], errno, r.cookie)
		c.write(r.scratch[:simpleReplySize])
		return
	}
	if len(msg) > maxStringLength {
		msg = msg[:maxStringLength]
	}
	putChunkHeader(r.scratch[:], replyFlagDone, replyTypeError, r.cookie, uint32(6+len(msg)))
	be.PutUint32(r.scratch[structuredHeaderSize:], errno)
	be.PutUint16(r.scratch[structuredHeaderSize+4:], uint16(len(msg)))
	c.write(r.scratch[:structuredHeaderSize+6])
	if c.tx.werr == nil {
		_, c.tx.werr = c.bw.WriteString(msg)
	}
}

// lockWriter takes the reply writer, counting the wait so that the holder
// knows whether another reply follows.
func (c *conn) lockWriter() {
	c.tx.waiting.Add(1)
	c.tx.wmu.Lock()
	c.tx.waiting.Add(-1)
}

// unlockWriter flushes when nobody waits to write, and stops the connection
// on a write error: a client that cannot take replies is gone.
func (c *conn) unlockWriter() {
	t := &c.tx
	switch {
	case t.holdFlush.Load():
		// The reader is handling a request inline and flushes before it
		// next waits for the client.
	case t.werr == nil && t.waiting.Load() == 0:
		t.werr = c.bw.Flush()
		if t.werr != nil {
			c.stop()
		}
	}
	t.wmu.Unlock()
}

func (c *conn) write(p []byte) {
	if c.tx.werr == nil {
		_, c.tx.werr = c.bw.Write(p)
		if c.tx.werr != nil {
			c.stop()
		}
	}
}

// Buffers come from power-of-two size classes so that a freed buffer fits
// the next request of similar size.
const (
	minBufShift = 9  // 512 bytes
	maxBufShift = 26 // 64 MiB: a 32 MiB payload plus headroom
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	for i := range bufPools {
		if n <= 1<<(i+minBufShift) {
			return i
		}
	}
	return -1
}

// getBuf returns a buffer of length n; give it back with putBuf.
func getBuf(n int) *[]byte {
	i := bufClass(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	if v := bufPools[i].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(i+minBufShift))
	return &b
}

func putBuf(b *[]byte) {
	c := cap(*b)
	if i := bufClass(c); i >= 0 && c == 1<<(i+minBufShift) {
		bufPools[i].Put(b)
	}
}
