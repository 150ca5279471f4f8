package trust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, CAKeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode %v, want 0600", st.Mode().Perm())
	}
	if life := ca.Cert().NotAfter.Sub(ca.Cert().NotBefore); life < CAValidity {
		t.Errorf("CA valid for %v, want %v", life, CAValidity)
	}
	if !strings.HasPrefix(ca.Pin(), "sha256:") || checkPin(ca.Pin()) != nil {
		t.Errorf("pin %q is not sha256:<64 hex>", ca.Pin())
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil || again.Pin() != ca.Pin() {
		t.Fatalf("reload: pin %v (%v), want %s", again, err, ca.Pin())
	}

	// Half a CA is refused, never replaced.
	os.Remove(filepath.Join(dir, CACertFile))
	if _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("half a CA: %v, want refused", err)
	}
	dir2 := filepath.Join(t.TempDir(), "ca")
	if _, err := LoadOrCreateCA(dir2); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir2, CAKeyFile), 0o640)
	if _, err := LoadOrCreateCA(dir2); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("readable CA key: %v, want a chmod hint", err)
	}
}

func csrFrom(t *testing.T, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestSign(t *testing.T) {
	ca := mustCA(t)
	id := Identity{Role: control.RoleProcess, ID: "ps-1"}
	der, err := ca.Sign(csrFrom(t, &x509.CertificateRequest{DNSNames: []string{"ps1.example"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.5")}}), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	got, err := IdentityOf(cert)
	if err != nil || got != id {
		t.Fatalf("IdentityOf = %v, %v; want %v", got, err, id)
	}
	if cert.SerialNumber.BitLen() < 100 || len(cert.ExtKeyUsage) != 2 || cert.IsCA {
		t.Errorf("serial %d bits, ext key usage %v, CA %v", cert.SerialNumber.BitLen(), cert.ExtKeyUsage, cert.IsCA)
	}
	v := &Verifier{Roots: ca.Pool(), Roles: []control.Role{control.RoleProcess}, Usage: x509.ExtKeyUsageServerAuth}
	if _, err := v.Verify([]*x509.Certificate{cert}); err != nil {
		t.Errorf("verify as a server: %v", err)
	}
	v.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := v.Verify([]*x509.Certificate{cert}); !errors.Is(err, ErrCertInvalid) || !strings.Contains(err.Error(), "not now") {
		t.Errorf("verify expired: %v, want ErrCertInvalid", err)
	}

	many := make([]string, maxSANs+1)
	for i := range many {
		many[i] = "h" + string(rune('a'+i))
	}
	for _, tc := range []struct {
		name string
		csr  *x509.CertificateRequest
		id   Identity
		text string
	}{
		{"too many names", csrFrom(t, &x509.CertificateRequest{DNSNames: many}), id, "at most"},
		{"bad name", csrFrom(t, &x509.CertificateRequest{DNSNames: []string{"a_b.example"}}), id, "DNS name"},
		{"wildcard", csrFrom(t, &x509.CertificateRequest{DNSNames: []string{"*.example"}}), id, "DNS name"},
		{"asks for a URI", csrFrom(t, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "standby", Host: "server", Path: "/config"}}}), id, "URI"},
		{"unspecified IP", csrFrom(t, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4zero}}), id, "cannot name"},
		{"bad identity", csrFrom(t, &x509.CertificateRequest{}), Identity{Role: "admin", ID: "x"}, "role"},
		{"empty id", csrFrom(t, &x509.CertificateRequest{}), Identity{Role: control.RoleAgent}, "id must be"},
	} {
		if _, err := ca.Sign(tc.csr, tc.id, time.Hour); err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.text)
		}
	}
	forged := csrFrom(t, &x509.CertificateRequest{DNSNames: []string{"a"}})
	forged.Signature[len(forged.Signature)-1] ^= 1
	if _, err := ca.Sign(forged, id, time.Hour); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "signature") {
		t.Errorf("CSR with a bad signature: %v", err)
	}
}

func TestIdentityOf(t *testing.T) {
	for _, tc := range []struct {
		uris []string
		ok   bool
	}{
		{[]string{"standby://agent/abc"}, true},
		{[]string{"https://example.com", "standby://target/x-1"}, true},
		{nil, false},
		{[]string{"standby://agent/abc", "standby://agent/def"}, false},
		{[]string{"standby://root/abc"}, false},
		{[]string{"standby://agent/a/b"}, false},
		{[]string{"standby://agent/"}, false},
		{[]string{"standby://agent/abc?x=1"}, false},
	} {
		c := &x509.Certificate{}
		for _, s := range tc.uris {
			u, _ := url.Parse(s)
			c.URIs = append(c.URIs, u)
		}
		_, err := IdentityOf(c)
		if (err == nil) != tc.ok {
			t.Errorf("IdentityOf(%v): %v, want ok %v", tc.uris, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrNoIdentity) {
			t.Errorf("IdentityOf(%v): %v, want ErrNoIdentity", tc.uris, err)
		}
	}
}

func TestIssueServerCert(t *testing.T) {
	ca := mustCA(t)
	c, err := ca.IssueServerCert([]string{"cfg.example", "192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 {
		t.Fatalf("chain of %d certificates, want leaf and CA", len(c.Certificate))
	}
	if id, _ := IdentityOf(c.Leaf); id != (Identity{Role: RoleServer, ID: ServerID}) {
		t.Errorf("server identity %v", id)
	}
	if _, err := ca.IssueServerCert([]string{"bad host"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad host: %v", err)
	}
}
