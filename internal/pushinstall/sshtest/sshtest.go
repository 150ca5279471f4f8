// Package sshtest runs a real OpenSSH sshd on loopback for tests: its own
// host key, one authorized client key, everything in a temporary
// directory. It needs root (sshd's privilege separation) and
// /usr/sbin/sshd (Debian's openssh-server; scripts/test.sh installs it).
package sshtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHD is the path of the sshd binary the tests run.
const SSHD = "/usr/sbin/sshd"

// Server is a running sshd.
type Server struct {
	Addr string // 127.0.0.1:port
	// HostKey is the server's public host key; ClientKey the private key
	// file it authorizes (root may log in with it).
	HostKey   ssh.PublicKey
	ClientKey string
	// KnownHosts is a known_hosts file that lists HostKey for Addr.
	KnownHosts string
	Dir        string
	log        *syncBuffer
}

// Start runs sshd until the test ends. Without root or sshd it skips the
// test, unless $CI is "true", where it fails: CI must run these tests.
func Start(tb testing.TB) *Server {
	tb.Helper()
	if _, err := os.Stat(SSHD); err != nil || os.Geteuid() != 0 {
		msg := fmt.Sprintf("a real sshd needs %s (apt-get install openssh-server) and root; have euid %d, stat: %v", SSHD, os.Geteuid(), err)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	dir := tb.TempDir()
	s := &Server{Dir: dir, log: &syncBuffer{}}
	hostPub := writeKey(tb, filepath.Join(dir, "host_ed25519_key"))
	clientPub := writeKey(tb, filepath.Join(dir, "client_key"))
	s.HostKey, s.ClientKey = hostPub, filepath.Join(dir, "client_key")
	must(tb, os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(clientPub), 0o600))
	// sshd refuses to start without its privilege separation directory.
	must(tb, os.MkdirAll("/run/sshd", 0o755))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(tb, err)
	s.Addr = l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf(`ListenAddress %s
HostKey %s
AuthorizedKeysFile %s
PidFile %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel VERBOSE
`, s.Addr, filepath.Join(dir, "host_ed25519_key"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	cfgPath := filepath.Join(dir, "sshd_config")
	must(tb, os.WriteFile(cfgPath, []byte(cfg), 0o600))
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	must(tb, os.WriteFile(s.KnownHosts, []byte(knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, hostPub)+"\n"), 0o600))

	cmd := exec.Command(SSHD, "-D", "-e", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	must(tb, cmd.Start())
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("sshd's log:\n%s", s.log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", s.Addr)
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sshd does not listen on %s:\n%s", s.Addr, s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Fingerprint is the host key's SHA256 fingerprint, as ssh-keygen -lf
// prints it.
func (s *Server) Fingerprint() string { return ssh.FingerprintSHA256(s.HostKey) }

// Log is what sshd printed so far.
func (s *Server) Log() string { return s.log.String() }

// NewKey writes a new, unauthorized private key file in the test's
// temporary directory.
func NewKey(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "key")
	writeKey(tb, p)
	return p
}

// writeKey writes a new ed25519 private key (OpenSSH format, 0600) and
// returns its public half.
func writeKey(tb testing.TB, path string) ssh.PublicKey {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	must(tb, err)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	must(tb, err)
	must(tb, os.WriteFile(path, pem.EncodeToMemory(blk), 0o600))
	sp, err := ssh.NewPublicKey(pub)
	must(tb, err)
	return sp
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
