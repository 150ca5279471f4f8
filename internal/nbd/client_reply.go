package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// The client's reader goroutine: it decodes simple replies and structured
// reply chunks (§Simple reply message, §Structured reply chunk message),
// routes them to the waiting call by cookie, and on any failure fails every
// pending call.

func (c *Client) readLoop() {
	defer close(c.readerDone)
	err := c.readReplies()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)):
		c.rerr = ErrClientClosed
	default:
		c.rerr = fmt.Errorf("nbd connection lost: %w", err)
	}
	for cookie, cl := range c.pending {
		delete(c.pending, cookie)
		cl.err = c.rerr
		cl.done <- struct{}{}
	}
	c.idle.Broadcast()
}

func (c *Client) readReplies() error {
	var h [structuredHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, h[:4]); err != nil {
			return err
		}
		switch m := be.Uint32(h[:]); m {
		case magicSimpleReply:
			if _, err := io.ReadFull(c.br, h[4:simpleReplySize]); err != nil {
				return err
			}
			errno, cookie := be.Uint32(h[4:]), be.Uint64(h[8:])
			cl := c.take(cookie)
			if cl == nil {
				return protocolError("simple reply for unknown cookie %#x", cookie)
			}
			if errno != 0 {
				cl.err = cl.requestError(errno, "")
			} else if cl.typ == cmdRead {
				if _, err := io.ReadFull(c.br, cl.dst); err != nil {
					cl.err = fmt.Errorf("nbd connection lost: %w", err)
					c.finish(cl)
					return err
				}
			} else if cl.typ == cmdBlockStatus {
				cl.err = protocolError("simple reply to BLOCK_STATUS")
			}
			c.finish(cl)
		case magicStructReply:
			if _, err := io.ReadFull(c.br, h[4:structuredHeaderSize]); err != nil {
				return err
			}
			flags, typ := be.Uint16(h[4:]), be.Uint16(h[6:])
			cookie, length := be.Uint64(h[8:]), be.Uint32(h[16:])
			c.mu.Lock()
			cl := c.pending[cookie]
			c.mu.Unlock()
			if cl == nil {
				return protocolError("reply chunk for unknown cookie %#x", cookie)
			}
			if err := c.readChunk(cl, typ, length); err != nil {
				return err
			}
			if flags&replyFlagDone != 0 {
				c.take(cookie)
				cl.checkComplete()
				c.finish(cl)
			}
		default:
			return protocolError("reply magic %#x", m)
		}
	}
}

// maxChunk bounds the chunks the client buffers (block status, errors);
// data chunks go straight into the caller's buffer.
const maxChunk = 16 << 20

func (c *Client) readChunk(cl *call, typ uint16, length uint32) error {
	switch typ {
	case replyTypeNone:
		if length != 0 {
			return protocolError("NONE chunk of %d bytes", length)
		}
		return nil
	case replyTypeOffsetData:
		if cl.typ != cmdRead || length < 9 {
			return protocolError("data chunk of %d bytes for %s", length, commandName(cl.typ))
		}
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return err
		}
		dst, err := cl.slot(be.Uint64(b[:]), uint64(length-8))
		if err != nil {
			return err
		}
		if _, err := io.ReadFull(c.br, dst); err != nil {
			return err
		}
		cl.got += len(dst)
		return nil
	case replyTypeOffsetHole:
		if cl.typ != cmdRead || length != 12 {
			return protocolError("hole chunk of %d bytes for %s", length, commandName(cl.typ))
		}
		var b [12]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return err
		}
		dst, err := cl.slot(be.Uint64(b[:]), uint64(be.Uint32(b[8:])))
		if err != nil {
			return err
		}
		clear(dst)
		cl.got += len(dst)
		return nil
	}
	if length > maxChunk {
		return protocolError("chunk type %d of %d bytes", typ, length)
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(c.br, b); err != nil {
		return err
	}
	switch {
	case typ == replyTypeBlockStatus:
		if cl.typ != cmdBlockStatus || length < 12 || (length-4)%8 != 0 {
			return protocolError("block status chunk of %d bytes for %s", length, commandName(cl.typ))
		}
		if be.Uint32(b) != c.allocID {
			return nil // a context this client did not ask for
		}
		for d := b[4:]; len(d) >= 8; d = d[8:] {
			flags := be.Uint32(d[4:])
			cl.extents = append(cl.extents, Extent{
				Length: int64(be.Uint32(d)),
				Hole:   flags&stateHole != 0,
				Zero:   flags&stateZero != 0,
			})
		}
		return nil
	case typ&replyTypeErrorBit != 0:
		// Every error chunk starts like NBD_REPLY_TYPE_ERROR (§Structured reply types).
		if length < 6 {
			return protocolError("error chunk of %d bytes", length)
		}
		n := int(be.Uint16(b[4:]))
		if n > len(b)-6 {
			return protocolError("error message of %d bytes in a %d-byte chunk", n, length)
		}
		if cl.err == nil {
			cl.err = cl.requestError(be.Uint32(b), string(b[6:6+n]))
		}
		return nil
	}
	return protocolError("unknown reply chunk type %d", typ)
}

// slot returns the part of a READ destination that a chunk at off of n
// bytes fills, refusing chunks outside the request.
func (cl *call) slot(off, n uint64) ([]byte, error) {
	if off < cl.off || n == 0 || n > uint64(len(cl.dst)) || off-cl.off > uint64(len(cl.dst))-n {
		return nil, protocolError("chunk %d+%d outside read %d+%d", off, n, cl.off, len(cl.dst))
	}
	start := off - cl.off
	return cl.dst[start : start+n], nil
}

// checkComplete sets an error when a structured reply ended successfully
// without covering the request.
func (cl *call) checkComplete() {
	if cl.err != nil {
		return
	}
	switch {
	case cl.typ == cmdRead && cl.got != len(cl.dst):
		cl.err = protocolError("read %d+%d answered with %d bytes", cl.off, len(cl.dst), cl.got)
	case cl.typ == cmdBlockStatus && len(cl.extents) == 0:
		cl.err = protocolError("block status %d+%d answered without base:allocation extents", cl.off, cl.length)
	}
}

func (cl *call) requestError(errno uint32, msg string) error {
	return &RequestError{
		Op:      commandName(cl.typ),
		Offset:  int64(cl.off),
		Length:  int64(cl.length),
		Errno:   errnoFromWire(errno),
		Message: msg,
	}
}

// take removes and returns the call waiting for cookie.
func (c *Client) take(cookie uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.pending[cookie]
	delete(c.pending, cookie)
	if len(c.pending) == 0 {
		c.idle.Broadcast()
	}
	return cl
}

// finish wakes the caller of a call already taken from pending.
func (c *Client) finish(cl *call) {
	cl.done <- struct{}{}
}
