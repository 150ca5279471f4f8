package wire

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// A copy tunnel (docs/protocol.md §5.1) carries a copy's Copy frames from
// the agent to the master target over a TLS session between those two,
// through the process server, which relays the encrypted bytes without
// decrypting them. A tunnel connection starts in the clear with a
// preamble, TunnelMagic then the ticket the master target issued for the
// copy; TLS follows. A TLS connection starts with a handshake record
// (0x16), never with the magic, so one listener serves both.

// TunnelMagic opens a tunnel connection.
const TunnelMagic = "STBYTUN1"

// ticketLen is the length of a ticket in the preamble: 16 random bytes,
// hex.
const ticketLen = 32

// StreamCopy is the stream kind of the TLS session inside a tunnel.
const StreamCopy = "copy"

// NewTicket returns a fresh ticket for a tunnel.
func NewTicket() string {
	var b [ticketLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WriteTunnelPreamble starts a tunnel connection for ticket.
func WriteTunnelPreamble(w io.Writer, ticket string) error {
	if len(ticket) != ticketLen {
		return fmt.Errorf("%w: tunnel ticket of %d characters, want %d", ErrProtocol, len(ticket), ticketLen)
	}
	_, err := io.WriteString(w, TunnelMagic+ticket)
	return err
}

// SniffTunnel reads the start of an accepted connection within timeout.
// A tunnel's preamble is consumed and its ticket returned; anything else
// (a TLS handshake) is left to be read again from the returned
// connection, with an empty ticket.
func SniffTunnel(nc net.Conn, timeout time.Duration) (net.Conn, string, error) {
	nc.SetReadDeadline(time.Now().Add(timeout))
	defer nc.SetReadDeadline(time.Time{})
	head := make([]byte, len(TunnelMagic))
	n, err := io.ReadFull(nc, head)
	if err != nil {
		if n == 0 {
			return nil, "", err
		}
		return &replayConn{Conn: nc, head: head[:n]}, "", nil // too short for TLS too: let its handshake say so
	}
	if string(head) != TunnelMagic {
		return &replayConn{Conn: nc, head: head}, "", nil
	}
	ticket := make([]byte, ticketLen)
	if _, err := io.ReadFull(nc, ticket); err != nil {
		return nil, "", fmt.Errorf("%w: tunnel preamble: %v", ErrProtocol, err)
	}
	if _, err := hex.DecodeString(string(ticket)); err != nil {
		return nil, "", fmt.Errorf("%w: tunnel ticket is not hex", ErrProtocol)
	}
	return nc, string(ticket), nil
}

// replayConn returns bytes already read before reading on.
type replayConn struct {
	net.Conn
	head []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.head) > 0 {
		n := copy(p, r.head)
		r.head = r.head[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// Relay copies between a and b in both directions until either side ends
// or ctx does, then closes both, and returns the bytes each way. Bytes
// from a to b go in chunks of at most RelayChunk: wait, when not nil, runs
// before each (a bandwidth limit) and moved after it. The kernel moves
// the bytes between two TCP connections (splice) without copying them
// through this process.
func Relay(ctx context.Context, a, b net.Conn, wait func(ctx context.Context, n int) error, moved func(n int64)) (ab, ba int64, err error) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	var wg sync.WaitGroup
	var berr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ba, berr = io.Copy(a, b)
		closeWrite(a)
	}()
	for {
		if wait != nil {
			if err = wait(ctx, RelayChunk); err != nil {
				break
			}
		}
		var n int64
		n, err = io.CopyN(b, a, RelayChunk)
		ab += n
		if moved != nil && n > 0 {
			moved(n)
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			break
		}
	}
	if err != nil {
		a.Close()
		b.Close()
	} else {
		closeWrite(b)
	}
	wg.Wait()
	a.Close()
	b.Close()
	if err == nil && berr != nil && !isEOF(berr) {
		err = berr
	}
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return ab, ba, err
}

// RelayChunk is the most Relay moves from a to b between two waits.
const RelayChunk = 1 << 20

// closeWrite ends the sending half of c, so the peer reads EOF after
// everything relayed.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// Client runs TLS (when tc is not nil) and the client side of the
// handshake over a connection already open (a tunnel after its preamble).
func Client(ctx context.Context, nc net.Conn, tc *tls.Config, h Hello, o Options) (*Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, o.handshakeTimeout())
	defer cancel()
	return clientHandshake(hctx, nc, tc, h, o)
}
