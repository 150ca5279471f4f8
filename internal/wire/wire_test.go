package wire

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/certs"
)

func mustTLS(tb testing.TB) (server, client TLSFiles) {
	tb.Helper()
	fs, err := certs.Create(filepath.Join(tb.TempDir(), "pki"), []string{"process", "agent"}, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	s, c := fs["process"], fs["agent"]
	return TLSFiles{Cert: s.Cert, Key: s.Key, CA: s.CA}, TLSFiles{Cert: c.Cert, Key: c.Key, CA: c.CA}
}

// serve accepts one connection and runs fn on it.
func serve(tb testing.TB, sf TLSFiles, check func(*Conn) error, fn func(*Conn)) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	tc, err := sf.ServerConfig()
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		c, err := Accept(context.Background(), nc, tc, Welcome{Role: "process"}, check, Options{MaxFrame: 1 << 20})
		if err != nil {
			nc.Close()
			return
		}
		defer c.Close()
		fn(c)
	}()
	return l.Addr().String()
}

func TestHandshakeCallAndBlob(t *testing.T) {
	sf, cf := mustTLS(t)
	var peer string
	addr := serve(t, sf, func(c *Conn) error { peer = c.PeerCert; return nil }, func(c *Conn) {
		var call Call
		if err := c.Expect(TypeCall, &call); err != nil {
			return
		}
		c.ReplyJSON(DrainResult{}, bytes.Repeat([]byte{7}, 1000))
	})
	tc, _ := cf.ClientConfig("localhost")
	c, err := Dial(context.Background(), addr, tc, Hello{Role: "agent", Stream: StreamControl}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version != 1 || c.Peer.Role != "process" {
		t.Fatalf("got version %d role %q, want 1 process", c.Version, c.Peer.Role)
	}
	blob, err := c.CallJSON(context.Background(), MethodDrain, DrainArgs{Machine: "m"}, &DrainResult{})
	if err != nil || len(blob) != 1000 || blob[999] != 7 {
		t.Fatalf("call: blob of %d bytes, err %v", len(blob), err)
	}
	if peer != "agent" {
		t.Fatalf("server saw peer certificate %q, want agent", peer)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	sf, cf := mustTLS(t)
	tc, _ := cf.ClientConfig("localhost")
	t.Run("no common version", func(t *testing.T) {
		addr := serve(t, sf, nil, func(*Conn) {})
		_, err := Dial(context.Background(), addr, tc, Hello{Role: "agent", Stream: StreamData, MinVersion: 2, MaxVersion: 3}, Options{})
		if !HasCode(err, CodeVersion) || IsTransient(err) {
			t.Fatalf("got %v, want a permanent version error", err)
		}
	})
	t.Run("denied role", func(t *testing.T) {
		addr := serve(t, sf, func(c *Conn) error { return errors.New("agents only") }, func(*Conn) {})
		_, err := Dial(context.Background(), addr, tc, Hello{Role: "target", Stream: StreamData}, Options{})
		if !HasCode(err, CodeDenied) {
			t.Fatalf("got %v, want denied", err)
		}
	})
	t.Run("client without certificate", func(t *testing.T) {
		addr := serve(t, sf, nil, func(*Conn) {})
		bare, _ := cf.ClientConfig("localhost")
		bare.Certificates = nil
		if _, err := Dial(context.Background(), addr, bare, Hello{Role: "agent", Stream: StreamData}, Options{}); err == nil {
			t.Fatal("dial without a client certificate succeeded")
		}
	})
	t.Run("role the certificate does not name", func(t *testing.T) {
		addr := serve(t, sf, nil, func(*Conn) {})
		_, err := Dial(context.Background(), addr, tc, Hello{Role: "target", Stream: StreamData}, Options{})
		if !HasCode(err, CodeDenied) {
			t.Fatalf("an agent certificate claiming the target role: got %v, want denied", err)
		}
	})
	t.Run("server of the wrong role", func(t *testing.T) {
		addr := serve(t, sf, nil, func(*Conn) {})
		_, err := Dial(context.Background(), addr, tc, Hello{Role: "agent", Stream: StreamData}, Options{PeerRole: "target"})
		if !errors.Is(err, ErrPeerRole) || IsTransient(err) {
			t.Fatalf("dialling a process server as a target: got %v, want a permanent ErrPeerRole", err)
		}
	})
	t.Run("oversized frame", func(t *testing.T) {
		got := make(chan error, 1)
		addr := serve(t, sf, nil, func(c *Conn) { _, _, err := c.Recv(); got <- err })
		c, err := Dial(context.Background(), addr, tc, Hello{Role: "agent", Stream: StreamData}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Send(TypeSegment, make([]byte, 2<<20))
		if err := <-got; !errors.Is(err, ErrProtocol) {
			t.Fatalf("server read %v, want a protocol error", err)
		}
	})
}

func TestReadFrameRejectsReservedBits(t *testing.T) {
	_, _, err := readFrame(bytes.NewReader([]byte{6, 1, 0, 0, 0, 0, 0, 0}), nil, 100)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
}

func TestCertMatchesRole(t *testing.T) {
	for _, tc := range []struct {
		cn, role string
		want     bool
	}{
		{"process", "process", true},
		{"agent:web01", "agent", true},
		{"agent-web01", "agent", true},
		{"agent/3f2a9c", "agent", true}, // issued at join
		{"agent/3f2a9c", "process", false},
		{"agentx", "agent", false},
		{"target", "", false},
	} {
		if got := CertMatchesRole(tc.cn, tc.role); got != tc.want {
			t.Errorf("CertMatchesRole(%q, %q) = %v, want %v", tc.cn, tc.role, got, tc.want)
		}
	}
}
