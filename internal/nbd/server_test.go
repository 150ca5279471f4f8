package nbd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/nbd/nbdtest"
)

func TestClientSuiteUnix(t *testing.T) {
	const size = 128 << 20
	ts := MustServer(t, serverConfig{unix: true, size: size, exportAs: "disk"})
	nbdtest.RunClientSuite(t, ts.unixURI("disk"), size)
}

// TestInlineWrites runs the peer suite against an export whose writes the
// reader applies itself, then checks that no reply is ever held back: one
// writer waits for each reply in turn (a stranded reply would hang it)
// while another mixes in flushes and reads handled by workers.
func TestInlineWrites(t *testing.T) {
	const size = 64 << 20
	ts := MustServer(t, serverConfig{unix: true, size: size, exportAs: "disk", mutate: func(o *Options) {
		o.Exports[0].InlineWrites = true
	}})
	nbdtest.RunClientSuite(t, ts.unixURI("disk"), size)

	c := mustDial(t, ts, ClientOptions{})
	done := make(chan error, 2)
	go func() {
		for i := range 2000 {
			if _, err := c.WriteAt([]byte{byte(i)}, int64(i%4096)*512); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	go func() {
		b := make([]byte, 4096)
		for i := range 200 {
			var err error
			if i%2 == 0 {
				err = c.Flush()
			} else {
				_, err = c.ReadAt(b, 0)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a reply was held back: the client is still waiting")
		}
	}
}

func TestClientSuiteTCP(t *testing.T) {
	const size = 128 << 20
	ts := MustServer(t, serverConfig{tcp: true, size: size})
	nbdtest.RunClientSuite(t, ts.tcpURI(""), size)
}

// testPKI is a throw-away CA and a server certificate for localhost and
// 127.0.0.1, written in the layout libnbd and qemu read (ca-cert.pem,
// server-cert.pem, server-key.pem).
type testPKI struct {
	dir       string
	serverTLS *tls.Config
	clientTLS *tls.Config // trusts the CA
}

func mustPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "standby test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM := func(name, typ string, der []byte) []byte {
		b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return b
	}
	writePEM("ca-cert.pem", "CERTIFICATE", caDER)
	certPEM := writePEM("server-cert.pem", "CERTIFICATE", srvDER)
	keyPEM := writePEM("server-key.pem", "PRIVATE KEY", keyDER)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		dir:       dir,
		serverTLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		clientTLS: &tls.Config{RootCAs: pool, ServerName: "localhost"},
	}
}

// roundTrip writes a pattern through c and reads it back.
func roundTrip(t *testing.T, c *Client, off int64) {
	t.Helper()
	want := []byte(fmt.Sprintf("hello at %d", off))
	if _, err := c.WriteAt(want, off); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := c.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func TestTLSRequired(t *testing.T) {
	pki := mustPKI(t)
	ts := MustServer(t, serverConfig{unix: true, tcp: true, mutate: func(o *Options) {
		o.TLSConfig = pki.serverTLS
		o.TLSRequired = true
	}})
	ctx := context.Background()

	t.Run("client-tcp", func(t *testing.T) {
		c, err := Dial(ctx, "tcp", ts.tcp, "", ClientOptions{TLSConfig: pki.clientTLS, BaseAllocation: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.nc.(*tls.Conn); !ok {
			t.Errorf("connection is %T, want *tls.Conn", c.nc)
		}
		roundTrip(t, c, 4096)
		if _, err := c.Extents(0, 1<<20); err != nil {
			t.Error(err)
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	t.Run("client-unix", func(t *testing.T) {
		c, err := Dial(ctx, "unix", ts.socket, "", ClientOptions{TLSConfig: pki.clientTLS})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, 8192)
		c.Close()
	})
	t.Run("client-wrong-ca", func(t *testing.T) {
		_, err := Dial(ctx, "tcp", ts.tcp, "", ClientOptions{TLSConfig: &tls.Config{ServerName: "localhost"}})
		var uae x509.UnknownAuthorityError
		if !errors.As(err, &uae) {
			t.Fatalf("Dial with an untrusted CA: %v, want x509.UnknownAuthorityError", err)
		}
	})
	t.Run("plain-client-refused", func(t *testing.T) {
		_, err := Dial(ctx, "tcp", ts.tcp, "", ClientOptions{})
		var oe *OptionError
		if !errors.As(err, &oe) || oe.code != repErrTLSReqd {
			t.Fatalf("plain Dial: %v, want ERR_TLS_REQD", err)
		}
	})
	t.Run("nbdinfo", func(t *testing.T) {
		if _, err := exec.LookPath("nbdinfo"); err != nil {
			t.Skip("nbdinfo not installed")
		}
		uri := fmt.Sprintf("nbds://%s/?tls-certificates=%s", ts.tcp, pki.dir)
		out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
		if err != nil {
			t.Fatalf("nbdinfo over TLS: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "67108864" {
			t.Errorf("nbdinfo --size = %s", got)
		}
		out, err = exec.Command("nbdinfo", "--size", fmt.Sprintf("nbd://%s/", ts.tcp)).CombinedOutput()
		if err == nil {
			t.Errorf("plain nbdinfo succeeded against a TLS-only server:\n%s", out)
		}
	})
	t.Run("qemu-img", func(t *testing.T) {
		if _, err := exec.LookPath("qemu-img"); err != nil {
			t.Skip("qemu-img not installed")
		}
		host, port, _ := net.SplitHostPort(ts.tcp)
		out, err := exec.Command("qemu-img", "info",
			"--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+pki.dir,
			"--image-opts", fmt.Sprintf("driver=nbd,server.type=inet,server.host=%s,server.port=%s,tls-creds=tls0,tls-hostname=localhost", host, port),
		).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img over TLS: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "67108864") {
			t.Errorf("qemu-img info lacks the size:\n%s", out)
		}
	})
	waitNoConns(t, ts.Server)
}

func TestTLSOptional(t *testing.T) {
	pki := mustPKI(t)
	ts := MustServer(t, serverConfig{tcp: true, mutate: func(o *Options) { o.TLSConfig = pki.serverTLS }})
	ctx := context.Background()
	for _, o := range []ClientOptions{{}, {TLSConfig: pki.clientTLS}} {
		c, err := Dial(ctx, "tcp", ts.tcp, "", o)
		if err != nil {
			t.Fatalf("tls=%v: %v", o.TLSConfig != nil, err)
		}
		roundTrip(t, c, 0)
		c.Close()
	}
}

func TestSTARTTLSWithoutConfig(t *testing.T) {
	pki := mustPKI(t)
	ts := MustServer(t, serverConfig{tcp: true})
	_, err := Dial(context.Background(), "tcp", ts.tcp, "", ClientOptions{TLSConfig: pki.clientTLS})
	var oe *OptionError
	if !errors.As(err, &oe) || oe.code != repErrPolicy {
		t.Fatalf("Dial: %v, want ERR_POLICY", err)
	}
}

func TestNewServerValidation(t *testing.T) {
	b, _, _ := MustFileBackend(t, 1<<20)
	cfg := &tls.Config{}
	for _, tc := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"ok", Options{Exports: []Export{{Name: "a", Backend: b}}}, true},
		{"default named empty", Options{Exports: []Export{{Backend: b}, {Name: "b", Backend: b}}}, true},
		{"no exports", Options{}, false},
		{"nil backend", Options{Exports: []Export{{Name: "a"}}}, false},
		{"duplicate", Options{Exports: []Export{{Name: "a", Backend: b}, {Name: "a", Backend: b}}}, false},
		{"empty name not first", Options{Exports: []Export{{Name: "a", Backend: b}, {Backend: b}}}, false},
		{"NUL in name", Options{Exports: []Export{{Name: "a\x00", Backend: b}}}, false},
		{"long name", Options{Exports: []Export{{Name: strings.Repeat("x", 4097), Backend: b}}}, false},
		{"negative MaxInFlight", Options{Exports: []Export{{Backend: b}}, MaxInFlight: -1}, false},
		{"TLSRequired without config", Options{Exports: []Export{{Backend: b}}, TLSRequired: true}, false},
		{"TLSRequired with config", Options{Exports: []Export{{Backend: b}}, TLSRequired: true, TLSConfig: cfg}, true},
	} {
		_, err := NewServer(tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestServeContextCancel(t *testing.T) {
	b, _, _ := MustFileBackend(t, 1<<20)
	s, err := NewServer(Options{Exports: []Export{{Backend: b}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	c, err := Dial(context.Background(), "tcp", l.Addr().String(), "", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, 0)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v, want context.Canceled", err)
	}
	// The connection was stopped with the context: the client sees it end.
	waitNoConns(t, s)
	if _, err := c.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("read succeeded on a stopped connection")
	}
	c.Close()
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background(), l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close = %v, want ErrServerClosed", err)
	}
}
