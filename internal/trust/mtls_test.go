package trust

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// roleListener serves cfg on loopback and reports each handshake's
// server-side result.
func roleListener(t *testing.T, cfg *tls.Config) (addr string, results <-chan error) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan error, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = c.(*tls.Conn).HandshakeContext(ctx)
			cancel()
			if err == nil {
				c.Write([]byte("ok"))
			}
			c.Close()
			ch <- err
		}
	}()
	return l.Addr().String(), ch
}

// dial connects with cfg, reads the listener's "ok", and returns the
// client's error and the listener's.
func dial(t *testing.T, addr string, cfg *tls.Config, results <-chan error) (clientErr, serverErr error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err == nil {
		buf := make([]byte, 2)
		_, err = c.Read(buf)
		c.Close()
	}
	select {
	case serverErr = <-results:
	case <-time.After(5 * time.Second):
		if err == nil {
			t.Fatal("listener reported nothing")
		}
	}
	return err, serverErr
}

func TestMutualTLSRefuses(t *testing.T) {
	ts, other := mustServer(t), mustServer(t)
	_, psDir := ts.join(t, control.RoleProcess, "ps1")
	agentID, agentDir := ts.join(t, control.RoleAgent, "web01")
	_, revokedDir := ts.join(t, control.RoleAgent, "web02")
	_, targetDir := ts.join(t, control.RoleTarget, "mt1")
	_, strangerDir := other.join(t, control.RoleAgent, "web03")
	ps, agent, revoked, target, stranger := mustLoad(t, psDir), mustLoad(t, agentDir), mustLoad(t, revokedDir), mustLoad(t, targetDir), mustLoad(t, strangerDir)
	ts.Store.revoke(t, revoked.Identity.ID)

	// The process server learns of revocations from the configuration server.
	var set RevocationSet
	rv, err := FetchRevocations(context.Background(), ps, ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	set.Set(rv)
	addr, results := roleListener(t, ServerTLS(ps.Roots, ps.Cert, []control.Role{control.RoleAgent}, set.Revoked))
	want := Identity{Role: control.RoleProcess, ID: ps.Identity.ID}

	if cerr, serr := dial(t, addr, ClientTLS(agent.Roots, agent.Cert, want), results); cerr != nil || serr != nil {
		t.Fatalf("agent %s to its process server: client %v, server %v", agentID, cerr, serr)
	}
	for _, tc := range []struct {
		name string
		l    *Local
		want error
		text string
	}{
		{"another CA", stranger, ErrWrongCA, "signed by another CA"},
		{"wrong role", target, ErrWrongRole, "peer certificate is for role target; this endpoint accepts agent"},
		{"revoked", revoked, ErrRevoked, "certificate of server agent/" + revoked.Identity.ID + " is revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The stranger trusts our CA here so that only the server's check is tested.
			cerr, serr := dial(t, addr, ClientTLS(ps.Roots, tc.l.Cert, want), results)
			if cerr == nil {
				t.Error("client connected")
			}
			if !errors.Is(serr, tc.want) || !strings.Contains(serr.Error(), tc.text) {
				t.Errorf("listener: %v, want %v saying %q", serr, tc.want, tc.text)
			}
		})
	}

	// Diallers check the listener too.
	for _, tc := range []struct {
		name string
		want Identity
		err  error
	}{
		{"expects a target", Identity{Role: control.RoleTarget}, ErrWrongRole},
		{"expects another process server", Identity{Role: control.RoleProcess, ID: "someoneelse"}, ErrWrongPeer},
	} {
		cerr, _ := dial(t, addr, ClientTLS(agent.Roots, agent.Cert, tc.want), results)
		if !errors.Is(cerr, tc.err) {
			t.Errorf("%s: client %v, want %v", tc.name, cerr, tc.err)
		}
	}
	cerr, _ := dial(t, addr, ClientTLS(stranger.Roots, stranger.Cert, want), results)
	if !errors.Is(cerr, ErrWrongCA) {
		t.Errorf("dialler of another CA: %v, want ErrWrongCA", cerr)
	}
}

func TestVerifierRequire(t *testing.T) {
	ts, other := mustServer(t), mustServer(t)
	_, agentDir := ts.join(t, control.RoleAgent, "web01")
	_, strangerDir := other.join(t, control.RoleAgent, "web01")
	agent, stranger := mustLoad(t, agentDir), mustLoad(t, strangerDir)

	// No certificate: the renewal endpoint answers 401 with a JSON error.
	_, err := Renew(context.Background(), t.TempDir(), ts.URL)
	if !errors.Is(err, ErrNotJoined) {
		t.Errorf("renew from an empty directory: %v, want ErrNotJoined", err)
	}
	var got RevokedList
	req := mustGet(t, ts.URL+RevokedPath)
	err = do(pinnedConfig(ts.CA.Pin()), req, &got)
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != 401 || !errors.Is(err, ErrNoCert) {
		t.Errorf("GET %s without a certificate: %v, want 401 no_cert", RevokedPath, err)
	}
	// A certificate of another CA is refused at the handshake.
	if _, err := FetchRevocations(context.Background(), &Local{Cert: stranger.Cert, Roots: agent.Roots}, ts.URL); err == nil {
		t.Error("a certificate of another CA fetched the revocation list")
	}
	if _, err := FetchRevocations(context.Background(), agent, ts.URL); err != nil {
		t.Errorf("agent fetching revocations: %v", err)
	}
}
