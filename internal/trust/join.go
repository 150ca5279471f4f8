package trust

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// The files of a joined role's directory.
const (
	CertFile = "tls.crt" // its certificate (PEM)
	KeyFile  = "tls.key" // its private key (PEM, 0600)
	CAFile   = "ca.crt"  // the CA it trusts (PEM)
	// nextSuffix marks the files of a renewal being installed
	// (installIdentity, finishInstall).
	nextSuffix = ".next"
)

// Files are the paths of a role's certificate, key and CA. The fields are
// those of wire.TLSFiles, so wire.TLSFiles(trust.FilesIn(dir)) converts.
type Files struct {
	Cert string
	Key  string
	CA   string
}

// FilesIn are the files Join and Renew write in dir.
func FilesIn(dir string) Files {
	return Files{Cert: filepath.Join(dir, CertFile), Key: filepath.Join(dir, KeyFile), CA: filepath.Join(dir, CAFile)}
}

// JoinOptions say where and as what a server joins.
type JoinOptions struct {
	ServerURL string       // https://host:port of the configuration server
	Token     string       // from `standby token create`
	Role      control.Role // the role joining; must be the token's
	Name      string       // host name it registers as; unique per role
	Address   string       // host:port where peers reach it (process servers, master targets)
	Version   string       // its standby version
	Dir       string       // where the key, certificate and CA are written
	Hosts     []string     // DNS names and IP addresses its certificate names
}

// joinTimeout bounds one join or renew call when ctx has no deadline.
const joinTimeout = 30 * time.Second

// Join registers this server with the configuration server and writes
// its key, certificate and CA into o.Dir. It trusts exactly the CA the
// token pins: a server whose chain does not lead to that CA is refused
// during the TLS handshake, before the token is sent.
func Join(ctx context.Context, o JoinOptions) (Identity, error) {
	p, err := ParseJoinToken(o.Token)
	if err != nil {
		return Identity{}, err
	}
	if p.Role != o.Role {
		return Identity{}, fmt.Errorf("join: the token is for role %s; run `standby %s join` with it: %w", p.Role, p.Role, ErrWrongRole)
	}
	u, err := endpoint(o.ServerURL, JoinPath)
	if err != nil {
		return Identity{}, err
	}
	if o.Dir == "" {
		return Identity{}, fmt.Errorf("join: a directory for the key and certificate is required: %w", ErrMalformed)
	}
	files := FilesIn(o.Dir)
	if _, err := os.Stat(files.Cert); err == nil {
		return Identity{}, fmt.Errorf("join: %s holds a certificate already (joined before); remove %s, %s and %s to join again", o.Dir, CertFile, KeyFile, CAFile)
	}
	key, csrPEM, err := newKeyAndCSR(o.Hosts)
	if err != nil {
		return Identity{}, fmt.Errorf("join: %w", err)
	}
	req := JoinRequest{Token: p.String(), Role: o.Role, Name: o.Name, Address: o.Address, Version: o.Version, CSR: csrPEM}
	var resp JoinResponse
	if err := post(ctx, pinnedConfig(p.Pin), u, req, &resp); err != nil {
		return Identity{}, fmt.Errorf("join %s: %w", u.Host, err)
	}
	ca, err := parseCertPEM(resp.CAPEM)
	if err != nil {
		return Identity{}, fmt.Errorf("join: the server's CA: %w", err)
	}
	if PinOf(ca) != p.Pin {
		return Identity{}, fmt.Errorf("join: the server answered with CA %s, not the token's %s: %w", PinOf(ca), p.Pin, ErrWrongCA)
	}
	want := Identity{Role: o.Role, ID: resp.ServerID}
	id, err := checkIssued(resp.CertPEM, ca, key, want)
	if err != nil {
		return Identity{}, fmt.Errorf("join: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return Identity{}, fmt.Errorf("join: %w", err)
	}
	if err := writeFileAtomic(files.CA, resp.CAPEM, 0o644); err != nil {
		return Identity{}, fmt.Errorf("join: write CA: %w", err)
	}
	if err := installIdentity(o.Dir, key, resp.CertPEM); err != nil {
		return Identity{}, fmt.Errorf("join: %w", err)
	}
	return id, nil
}

// endpoint is base's URL with path; base must be https.
func endpoint(base, path string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want https://host:port: %w", base, ErrMalformed)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("server URL %q: scheme must be https (joining sends a secret): %w", base, ErrMalformed)
	}
	return u.JoinPath(path), nil
}

func newKeyAndCSR(hosts []string) (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	der, err := NewCSR(key, hosts)
	if err != nil {
		return nil, nil, err
	}
	return key, pemBytes("CERTIFICATE REQUEST", der), nil
}

// pinnedConfig trusts exactly the CA whose pin is pin: the server must
// send it in its chain (IssueServerCert's chain does), and its leaf must
// be the configuration server's. The system roots play no part.
func pinnedConfig(pin string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true, // replaced by VerifyConnection: pin, chain, identity
		MinVersion:         tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			var ca *x509.Certificate
			var seen []string
			for _, c := range cs.PeerCertificates {
				seen = append(seen, PinOf(c))
				if c.IsCA && PinOf(c) == pin {
					ca = c
				}
			}
			if ca == nil {
				return fmt.Errorf("the server's certificate chain does not match the token's pin %s (it sent keys %v): %w; nothing was sent. Is this the server the token came from?", pin, seen, ErrWrongCA)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			v := &Verifier{Roots: pool, Roles: []control.Role{RoleServer}, Usage: x509.ExtKeyUsageServerAuth}
			return v.VerifyConnection(cs)
		},
	}
}

// post sends in as JSON to u over TLS with cfg and decodes the answer.
func post(ctx context.Context, cfg *tls.Config, u *url.URL, in, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, joinTimeout)
		defer cancel()
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return do(cfg, req, out)
}

func do(cfg *tls.Config, req *http.Request, out any) error {
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true} // no proxy: the pin is the trust
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readAnswer(resp, out)
}

// checkIssued checks a certificate the server issued: it chains to ca,
// names want, and is for key.
func checkIssued(certPEM []byte, ca *x509.Certificate, key crypto.Signer, want Identity) (Identity, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return Identity{}, fmt.Errorf("issued certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	v := &Verifier{Roots: pool, Roles: []control.Role{want.Role}, ID: want.ID, Usage: x509.ExtKeyUsageClientAuth}
	id, err := v.Verify([]*x509.Certificate{cert})
	if err != nil {
		return Identity{}, fmt.Errorf("issued certificate: %w", err)
	}
	if pk, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(cert.PublicKey) {
		return Identity{}, errors.New("issued certificate is not for the key this server sent")
	}
	return id, nil
}

// installIdentity replaces dir's key and certificate with key and
// certPEM. Both are staged as .next files first and renamed key then
// certificate; finishInstall completes or discards a crash's leftovers,
// so a directory never stays with a key that does not match its
// certificate.
func installIdentity(dir string, key crypto.Signer, certPEM []byte) error {
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	f := FilesIn(dir)
	if err := writeFileAtomic(f.Key+nextSuffix, pemBytes("PRIVATE KEY", kd), 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := writeFileAtomic(f.Cert+nextSuffix, certPEM, 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	return finishInstall(dir)
}

// finishInstall completes an installation that staged both .next files,
// and removes a lone staged key (the certificate was never staged, so the
// current pair is still whole).
func finishInstall(dir string) error {
	f := FilesIn(dir)
	_, certErr := os.Stat(f.Cert + nextSuffix)
	switch {
	case certErr == nil:
		if err := os.Rename(f.Key+nextSuffix, f.Key); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("install key: %w", err)
		}
		if err := os.Rename(f.Cert+nextSuffix, f.Cert); err != nil {
			return fmt.Errorf("install certificate: %w", err)
		}
	case errors.Is(certErr, fs.ErrNotExist):
		if err := os.Remove(f.Key + nextSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("discard staged key: %w", err)
		}
	default:
		return certErr
	}
	return syncDir(dir)
}

// Local is a joined role's identity as its directory holds it.
type Local struct {
	Identity Identity
	Cert     tls.Certificate // with Leaf set
	CA       *x509.Certificate
	Roots    *x509.CertPool // holds CA only
}

// Load reads the identity in dir, first completing a renewal that a crash
// interrupted. Roles call it at start; ErrNotJoined says to join first.
func Load(dir string) (*Local, error) {
	if err := finishInstall(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	f := FilesIn(dir)
	if _, err := os.Stat(f.Cert); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s holds no certificate; join first (`standby <role> join --server URL --token T`): %w", dir, ErrNotJoined)
	}
	st, err := os.Stat(f.Key)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s has mode %v: others may read it; run `chmod 600 %s`", f.Key, st.Mode().Perm(), f.Key)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	cb, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	ca, err := parseCertPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %s: %w", dir, CAFile, err)
	}
	id, err := IdentityOf(cert.Leaf)
	if err != nil {
		return nil, fmt.Errorf("identity in %s: %w", dir, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Local{Identity: id, Cert: cert, CA: ca, Roots: pool}, nil
}

// NeedsRenewal says whether cert has less than a third of its validity
// left at now.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return now.After(cert.NotAfter.Add(-life / 3))
}

// Renew replaces the certificate in dir with a new one, for a new key,
// from the configuration server at serverURL; the call is authenticated
// by the current certificate. A revoked server is refused (ErrRevoked).
func Renew(ctx context.Context, dir, serverURL string) (Identity, error) {
	l, err := Load(dir)
	if err != nil {
		return Identity{}, err
	}
	u, err := endpoint(serverURL, RenewPath)
	if err != nil {
		return Identity{}, err
	}
	var hosts []string
	hosts = append(hosts, l.Cert.Leaf.DNSNames...)
	for _, ip := range l.Cert.Leaf.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	key, csrPEM, err := newKeyAndCSR(hosts)
	if err != nil {
		return Identity{}, fmt.Errorf("renew %s: %w", l.Identity, err)
	}
	var resp RenewResponse
	cfg := ClientTLS(l.Roots, l.Cert, Identity{Role: RoleServer})
	if err := post(ctx, cfg, u, RenewRequest{CSR: csrPEM}, &resp); err != nil {
		return Identity{}, fmt.Errorf("renew %s at %s: %w", l.Identity, u.Host, err)
	}
	if _, err := checkIssued(resp.CertPEM, l.CA, key, l.Identity); err != nil {
		return Identity{}, fmt.Errorf("renew %s: %w", l.Identity, err)
	}
	if err := installIdentity(dir, key, resp.CertPEM); err != nil {
		return Identity{}, fmt.Errorf("renew %s: %w", l.Identity, err)
	}
	return l.Identity, nil
}
