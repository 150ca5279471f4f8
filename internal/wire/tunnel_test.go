package wire

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestTunnelThroughRelay: an agent's TLS session crosses a relay that sees
// only the preamble and ciphertext, a TLS client on the relay's listener
// still gets its own handshake (SniffTunnel gives its first bytes back),
// and a limit paces the relayed bytes.
func TestTunnelThroughRelay(t *testing.T) {
	sf, cf := mustTLS(t)
	ticket := NewTicket()
	payload := make([]byte, 3<<20)
	rand.Read(payload)

	// The far end: the tunnel's preamble, then TLS and a frame.
	far, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	stc, err := sf.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		nc, err := far.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		nc, tk, err := SniffTunnel(nc, time.Second)
		if err != nil || tk != ticket {
			t.Errorf("far end: ticket %q, %v; want %q", tk, err, ticket)
			return
		}
		c, err := Accept(context.Background(), nc, stc, Welcome{Role: "process"}, nil, Options{})
		if err != nil {
			t.Errorf("far end: %v", err)
			return
		}
		_, p, err := c.Recv()
		if err != nil {
			t.Errorf("far end: %v", err)
		}
		got <- append([]byte(nil), p...)
		c.Send(TypeAck, nil)
	}()

	// The relay: plain TLS is served here; a tunnel is relayed.
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	var relayed, waited int64
	done := make(chan error, 2)
	go func() {
		for {
			nc, err := relay.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				nc, tk, err := SniffTunnel(nc, time.Second)
				if err != nil {
					done <- err
					return
				}
				if tk == "" {
					c, err := Accept(context.Background(), nc, stc, Welcome{Role: "process"}, nil, Options{})
					if err == nil {
						c.Send(TypePing, nil)
						c.Close()
					}
					done <- err
					return
				}
				mt, err := net.Dial("tcp", far.Addr().String())
				if err != nil {
					done <- err
					return
				}
				if err := WriteTunnelPreamble(mt, tk); err != nil {
					done <- err
					return
				}
				wait := func(ctx context.Context, n int) error { waited += int64(n); return nil }
				_, _, err = Relay(context.Background(), nc, mt, wait, func(n int64) { relayed += n })
				done <- err
			}()
		}
	}()

	ctc, err := cf.ClientConfig("localhost")
	if err != nil {
		t.Fatal(err)
	}
	// TLS straight to the relay still works.
	c, err := Dial(context.Background(), relay.Addr().String(), ctc, Hello{Role: "agent", Stream: StreamData}, Options{PeerRole: "process"})
	if err != nil {
		t.Fatalf("TLS through the sniffing listener: %v", err)
	}
	if typ, _, err := c.Recv(); err != nil || typ != TypePing {
		t.Fatalf("TLS through the sniffing listener: %v %v", typ, err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The tunnel.
	nc, err := net.Dial("tcp", relay.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteTunnelPreamble(nc, ticket); err != nil {
		t.Fatal(err)
	}
	tc, err := Client(context.Background(), nc, ctc, Hello{Role: "agent", Stream: StreamCopy}, Options{PeerRole: "process"})
	if err != nil {
		t.Fatalf("TLS through the tunnel: %v", err)
	}
	if err := tc.Send(TypeCopy, payload); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := tc.Recv(); err != nil || typ != TypeAck {
		t.Fatalf("ack through the tunnel: %v %v", typ, err)
	}
	if p := <-got; !bytes.Equal(p, payload) {
		t.Fatalf("the far end got %d bytes, not the %d sent", len(p), len(payload))
	}
	tc.Close()
	if err := <-done; err != nil {
		t.Fatalf("relay: %v", err)
	}
	if relayed < int64(len(payload)) || waited < relayed {
		t.Errorf("relayed %d bytes and waited for %d; want at least %d for both", relayed, waited, len(payload))
	}
}

func TestSniffTunnelRefusesABadPreamble(t *testing.T) {
	for name, head := range map[string]string{
		"short ticket":   TunnelMagic + "abc",
		"ticket not hex": TunnelMagic + strings.Repeat("z", ticketLen),
	} {
		a, b := net.Pipe()
		go func() {
			io.WriteString(a, head)
			a.Close()
		}()
		_, tk, err := SniffTunnel(b, time.Second)
		if err == nil || !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: ticket %q, error %v; want a protocol error", name, tk, err)
		}
		b.Close()
	}
	if err := WriteTunnelPreamble(io.Discard, "short"); err == nil {
		t.Error("a preamble with a short ticket was written")
	}
}
