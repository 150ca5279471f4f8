package trust

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

func TestJoinEndToEnd(t *testing.T) {
	ts := mustServer(t)
	id, dir := ts.join(t, control.RoleAgent, "web01")
	if id.Role != control.RoleAgent || id.ID == "" {
		t.Fatalf("identity = %+v, want an agent with an ID", id)
	}
	l := mustLoad(t, dir)
	if l.Identity != id {
		t.Errorf("loaded identity %v, joined as %v", l.Identity, id)
	}
	if got, want := l.Cert.Leaf.URIs[0].String(), "standby://agent/"+id.ID; got != want {
		t.Errorf("URI SAN = %s, want %s", got, want)
	}
	if PinOf(l.CA) != ts.CA.Pin() {
		t.Errorf("ca.crt pin %s, want the server's %s", PinOf(l.CA), ts.CA.Pin())
	}
	if len(l.Cert.Leaf.DNSNames) != 1 || l.Cert.Leaf.DNSNames[0] != "web01" || len(l.Cert.Leaf.IPAddresses) != 1 {
		t.Errorf("SANs = %v %v, want web01 and 127.0.0.1", l.Cert.Leaf.DNSNames, l.Cert.Leaf.IPAddresses)
	}
	st, err := os.Stat(FilesIn(dir).Key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v (%v), want 0600", st.Mode().Perm(), err)
	}
	srv, err := ts.Store.GetServer(context.Background(), id.ID)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Name != "web01" || srv.Role != control.RoleAgent || srv.CertSerial != SerialString(l.Cert.Leaf) ||
		!srv.CertExpires.Equal(l.Cert.Leaf.NotAfter) || srv.JoinedAt.IsZero() || srv.Address != "127.0.0.1:7000" {
		t.Errorf("stored server = %+v, want web01 with the certificate's serial and expiry", srv)
	}
	// A second join into the same directory is refused before anything is sent.
	n := ts.Requests.Load()
	_, err = Join(context.Background(), JoinOptions{ServerURL: ts.URL, Token: ts.token(t, control.RoleAgent, time.Now(), time.Hour), Role: control.RoleAgent, Name: "web01b", Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "joined before") || ts.Requests.Load() != n {
		t.Errorf("join into a joined directory: %v (requests %d -> %d), want refused locally", err, n, ts.Requests.Load())
	}
}

func TestJoinRefusesBadTokens(t *testing.T) {
	ts := mustServer(t)
	now := time.Now()
	used := ts.token(t, control.RoleProcess, now, time.Hour)
	if _, err := Join(context.Background(), JoinOptions{ServerURL: ts.URL, Token: used, Role: control.RoleProcess, Name: "ps1", Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	valid := ts.token(t, control.RoleProcess, now, time.Hour)
	p, err := ParseJoinToken(valid)
	if err != nil {
		t.Fatal(err)
	}
	forgedSecret := p
	forgedSecret.Secret = make([]byte, tokenSecretLen)
	alteredID := ts.token(t, control.RoleProcess, now, time.Hour)
	ap, _ := ParseJoinToken(alteredID)
	ap.ID = "0123456789abcdef"
	alteredPin := p
	alteredPin.Pin = "sha256:" + strings.Repeat("ab", 32)
	otherCA := p
	otherCA.Pin = mustCA(t).Pin()

	for _, tc := range []struct {
		name, token string
		role        control.Role
		want        error
		text        string
		sent        bool // whether the request reached the server
	}{
		{"expired", ts.token(t, control.RoleProcess, now.Add(-2*time.Hour), time.Hour), control.RoleProcess, ErrTokenExpired, "expired", true},
		{"reused", used, control.RoleProcess, ErrTokenUsed, "already used", true},
		{"forged secret", forgedSecret.String(), control.RoleProcess, ErrBadToken, "not known", true},
		{"altered id", ap.String(), control.RoleProcess, ErrBadToken, "altered", true},
		{"altered pin", alteredPin.String(), control.RoleProcess, ErrWrongCA, "does not match the token's pin", false},
		{"pin of another CA", otherCA.String(), control.RoleProcess, ErrWrongCA, "does not match the token's pin", false},
		{"garbage", "hello", control.RoleProcess, ErrMalformed, "does not start with SBJ1", false},
		{"truncated", valid[:len(valid)-20], control.RoleProcess, ErrMalformed, "pin", false},
		{"future version", "SBJ2" + valid[4:], control.RoleProcess, ErrMalformed, "not supported", false},
		{"wrong role", valid, control.RoleTarget, ErrWrongRole, "standby process join", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := ts.Requests.Load()
			_, err := Join(context.Background(), JoinOptions{ServerURL: ts.URL, Token: tc.token, Role: tc.role, Name: "ps-" + strings.ReplaceAll(tc.name, " ", "-"), Dir: t.TempDir()})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v, want %v saying %q", err, tc.want, tc.text)
			}
			if sent := ts.Requests.Load() != n; sent != tc.sent {
				t.Errorf("request reached the server: %v, want %v", sent, tc.sent)
			}
		})
	}
	// The token left valid still works: refusals did not consume it.
	if _, err := Join(context.Background(), JoinOptions{ServerURL: ts.URL, Token: valid, Role: control.RoleProcess, Name: "ps2", Dir: t.TempDir()}); err != nil {
		t.Errorf("join with the untouched token: %v", err)
	}
}

func TestRegistrarChecksBeforeConsuming(t *testing.T) {
	ts := mustServer(t)
	tok := ts.token(t, control.RoleTarget, time.Now(), time.Hour)
	_, csr, err := newKeyAndCSR([]string{"mt1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  JoinRequest
		want error
	}{
		{"role differs from token", JoinRequest{Token: tok, Role: control.RoleAgent, Name: "mt1", CSR: csr}, ErrWrongRole},
		{"bad name", JoinRequest{Token: tok, Role: control.RoleTarget, Name: "mt 1", CSR: csr}, ErrMalformed},
		{"bad address", JoinRequest{Token: tok, Role: control.RoleTarget, Name: "mt1", Address: "nohost", CSR: csr}, ErrMalformed},
		{"no CSR", JoinRequest{Token: tok, Role: control.RoleTarget, Name: "mt1"}, ErrMalformed},
		{"CSR garbage", JoinRequest{Token: tok, Role: control.RoleTarget, Name: "mt1", CSR: []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")}, ErrMalformed},
	} {
		if _, err := ts.Reg.Join(ctx, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := ts.Reg.Join(ctx, JoinRequest{Token: tok, Role: control.RoleTarget, Name: "mt1", CSR: csr}); err != nil {
		t.Fatalf("the token was consumed by a refused request: %v", err)
	}
	// A name taken by a registered server is refused before the token is spent.
	tok2 := ts.token(t, control.RoleTarget, time.Now(), time.Hour)
	if _, err := ts.Reg.Join(ctx, JoinRequest{Token: tok2, Role: control.RoleTarget, Name: "mt1", CSR: csr}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name: err = %v, want ErrExists", err)
	}
	if _, err := ts.Reg.Join(ctx, JoinRequest{Token: tok2, Role: control.RoleTarget, Name: "mt2", CSR: csr}); err != nil {
		t.Errorf("token after a duplicate name: %v", err)
	}
}

func TestConcurrentJoinsOneToken(t *testing.T) {
	ts := mustServer(t)
	tok := ts.token(t, control.RoleAgent, time.Now(), time.Hour)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := Join(context.Background(), JoinOptions{ServerURL: ts.URL, Token: tok, Role: control.RoleAgent, Name: "host" + string(rune('a'+i)), Dir: filepath.Join(t.TempDir(), "d")})
			errs <- err
		}()
	}
	ok, used := 0, 0
	for range 4 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrTokenUsed):
			used++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 || used != 3 {
		t.Errorf("%d joins succeeded and %d were refused as used; want 1 and 3", ok, used)
	}
}

func TestJoinRefusesServerOfAnotherCA(t *testing.T) {
	home, other := mustServer(t), mustServer(t)
	tok := home.token(t, control.RoleAgent, time.Now(), time.Hour)
	dir := t.TempDir()
	_, err := Join(context.Background(), JoinOptions{ServerURL: other.URL, Token: tok, Role: control.RoleAgent, Name: "web01", Dir: dir})
	if !errors.Is(err, ErrWrongCA) || !strings.Contains(err.Error(), "pin") || !strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("err = %v, want the pin mismatch named", err)
	}
	if n := other.Requests.Load(); n != 0 {
		t.Errorf("the other server received %d requests; the token must not be sent", n)
	}
	if _, err := os.Stat(FilesIn(dir).Cert); err == nil {
		t.Error("a certificate was written")
	}
	// And the right server still takes the token.
	if _, err := Join(context.Background(), JoinOptions{ServerURL: home.URL, Token: tok, Role: control.RoleAgent, Name: "web01", Dir: dir}); err != nil {
		t.Errorf("join at the right server: %v", err)
	}
}

func TestJoinRefusesPlainHTTP(t *testing.T) {
	ts := mustServer(t)
	tok := ts.token(t, control.RoleAgent, time.Now(), time.Hour)
	_, err := Join(context.Background(), JoinOptions{ServerURL: strings.Replace(ts.URL, "https", "http", 1), Token: tok, Role: control.RoleAgent, Name: "a", Dir: t.TempDir()})
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "https") {
		t.Errorf("err = %v, want https required", err)
	}
}
