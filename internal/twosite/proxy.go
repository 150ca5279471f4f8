package twosite

import (
	"io"
	"net"
	"sync"
	"time"
)

// Link is a TCP proxy standing for a network link between two roles: it can
// be cut (every connection dropped, new ones refused) and restored.
type Link struct {
	l      net.Listener
	to     string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	// Bytes counts bytes carried (both directions).
	bytes int64
}

// NewLink listens on a loopback port and forwards to addr.
func NewLink(addr string) (*Link, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k := &Link{l: l, to: addr, conns: map[net.Conn]struct{}{}}
	k.wg.Add(1)
	go k.accept()
	return k, nil
}

// Addr is where the near side dials.
func (k *Link) Addr() string { return k.l.Addr().String() }

// Bytes is the number of bytes carried so far.
func (k *Link) Bytes() int64 { k.mu.Lock(); defer k.mu.Unlock(); return k.bytes }

func (k *Link) accept() {
	defer k.wg.Done()
	for {
		c, err := k.l.Accept()
		if err != nil {
			return
		}
		k.mu.Lock()
		if k.cut || k.closed {
			k.mu.Unlock()
			c.Close()
			continue
		}
		k.mu.Unlock()
		go k.pipe(c)
	}
}

func (k *Link) pipe(c net.Conn) {
	d, err := net.DialTimeout("tcp", k.to, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	k.mu.Lock()
	if k.cut || k.closed {
		k.mu.Unlock()
		c.Close()
		d.Close()
		return
	}
	k.conns[c], k.conns[d] = struct{}{}, struct{}{}
	k.mu.Unlock()
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				k.mu.Lock()
				k.bytes += int64(n)
				k.mu.Unlock()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				if err == io.EOF {
					if tc, ok := dst.(*net.TCPConn); ok {
						tc.CloseWrite()
						return
					}
				}
				break
			}
		}
		dst.Close()
		src.Close()
	}
	wg.Add(2)
	go cp(d, c)
	go cp(c, d)
	wg.Wait()
	k.mu.Lock()
	delete(k.conns, c)
	delete(k.conns, d)
	k.mu.Unlock()
}

// Cut drops every connection and refuses new ones until Restore.
func (k *Link) Cut() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cut = true
	for c := range k.conns {
		c.Close()
	}
}

// Restore lets connections through again.
func (k *Link) Restore() {
	k.mu.Lock()
	k.cut = false
	k.mu.Unlock()
}

// Close stops the link.
func (k *Link) Close() {
	k.mu.Lock()
	k.closed = true
	for c := range k.conns {
		c.Close()
	}
	k.mu.Unlock()
	k.l.Close()
	k.wg.Wait()
}
