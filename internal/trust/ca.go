package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Validity bounds.
const (
	// CAValidity is how long a new CA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// DefaultValidity is a role certificate's validity when the caller
	// gives none; NeedsRenewal renews it when a third is left.
	DefaultValidity = 90 * 24 * time.Hour
	// MinValidity keeps renewal from spinning on tiny certificates.
	MinValidity = time.Minute
	// clockSkew backdates NotBefore so a peer whose clock is a little
	// behind accepts a fresh certificate.
	clockSkew = 5 * time.Minute
	// maxSANs bounds a CSR's DNS names and IP addresses (each).
	maxSANs = 8
)

// CA is the deployment's certificate authority: the configuration server
// holds it and signs every role's certificate at join and renewal. Safe
// for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	// Now is the clock certificates are dated with; nil: time.Now.
	Now func() time.Time
}

// LoadOrCreateCA loads the CA in dir (ca.crt, ca.key), or creates one
// (ECDSA P-256, valid CAValidity) when dir has neither. The key is
// written 0600 in a 0700 directory and refused on load when others may
// read it.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return loadCA(certPath, keyPath)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCA(dir)
	case certErr == nil || keyErr == nil:
		// Half a CA: never replace a key that roles may already trust.
		return nil, fmt.Errorf("ca in %s: one of %s and %s is missing; restore it from a backup (a new CA would strand every joined server)", dir, CACertFile, CAKeyFile)
	default:
		return nil, fmt.Errorf("ca in %s: %w", dir, errors.Join(certErr, keyErr))
	}
}

func loadCA(certPath, keyPath string) (*CA, error) {
	st, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ca key %s has mode %v: others may read it; run `chmod 600 %s`", keyPath, st.Mode().Perm(), keyPath)
	}
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	cert, err := parseCertPEM(cb)
	if err != nil {
		return nil, fmt.Errorf("ca certificate %s: %w", certPath, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("ca certificate %s is not a CA certificate", certPath)
	}
	key, err := parseKeyPEM(kb)
	if err != nil {
		return nil, fmt.Errorf("ca key %s: %w", keyPath, err)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || !ek.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("ca key %s does not belong to %s", keyPath, certPath)
	}
	return newCA(cert, ek), nil
}

func createCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	sum := sha256.Sum256(spki)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		// The pin's first digits tell two deployments' CAs apart in
		// error messages ("issuer standby CA 9a1f03c2").
		Subject:               pkix.Name{CommonName: "standby CA " + hex.EncodeToString(sum[:4]), Organization: []string{"standby"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // no intermediates: roles trust exactly this CA
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	// The key first: a crash between the two leaves "half a CA", which
	// LoadOrCreateCA refuses rather than overwrites.
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), pemBytes("PRIVATE KEY", kd), 0o600); err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), pemBytes("CERTIFICATE", der), 0o644); err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	return newCA(cert, key), nil
}

func newCA(cert *x509.Certificate, key *ecdsa.PrivateKey) *CA {
	return &CA{cert: cert, key: key, pem: pemBytes("CERTIFICATE", cert.Raw)}
}

// Cert is the CA certificate.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// CertPEM is the CA certificate as PEM (what ca.crt holds).
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.pem...) }

// Pool is a pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Pin is the CA's pin, "sha256:" and the hex SHA-256 of its
// SubjectPublicKeyInfo. Join tokens carry it.
func (ca *CA) Pin() string { return PinOf(ca.cert) }

// PinOf is the pin of any certificate's public key.
func PinOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (ca *CA) now() time.Time {
	if ca.Now != nil {
		return ca.Now()
	}
	return time.Now()
}

// Sign issues a certificate for id to the key of csr, valid for validity
// (DefaultValidity when 0, never past the CA's own expiry). It checks the
// CSR's signature, its key type, and its DNS names and IP addresses (at
// most maxSANs each, syntactically valid); the identity is the URI SAN
// standby://<role>/<id>, and the CSR may not ask for URIs or e-mail
// addresses. The certificate is for both client and server auth.
func (ca *CA) Sign(csr *x509.CertificateRequest, id Identity, validity time.Duration) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if err := CheckCSR(csr); err != nil {
		return nil, err
	}
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < MinValidity {
		return nil, fmt.Errorf("certificate validity %v is below the minimum %v: %w", validity, MinValidity, ErrMalformed)
	}
	now := ca.now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: id.String(), Organization: []string{"standby"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     csr.DNSNames,
		IPAddresses:  csr.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	return der, nil
}

// CheckCSR checks what Sign checks of a CSR: signature, key, SANs.
func CheckCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return fmt.Errorf("no CSR: %w", ErrMalformed)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("CSR signature: %v: %w", err, ErrMalformed)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("CSR key: ECDSA curve %s; use P-256 or P-384: %w", k.Curve.Params().Name, ErrMalformed)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("CSR key: RSA %d bits; use at least 2048: %w", k.N.BitLen(), ErrMalformed)
		}
	default:
		return fmt.Errorf("CSR key: type %T; use ECDSA P-256: %w", k, ErrMalformed)
	}
	if len(csr.URIs) > 0 || len(csr.EmailAddresses) > 0 {
		return fmt.Errorf("CSR asks for URIs or e-mail addresses; the server sets the identity, ask only for DNS names and IP addresses: %w", ErrMalformed)
	}
	if len(csr.DNSNames) > maxSANs || len(csr.IPAddresses) > maxSANs {
		return fmt.Errorf("CSR asks for %d DNS names and %d IP addresses; at most %d of each: %w", len(csr.DNSNames), len(csr.IPAddresses), maxSANs, ErrMalformed)
	}
	for _, n := range csr.DNSNames {
		if err := checkDNSName(n); err != nil {
			return fmt.Errorf("CSR: %w", err)
		}
	}
	for _, ip := range csr.IPAddresses {
		if ip.IsUnspecified() || ip.IsMulticast() {
			return fmt.Errorf("CSR: IP address %s cannot name a host: %w", ip, ErrMalformed)
		}
	}
	return nil
}

// checkDNSName accepts a host name of letters, digits and hyphens in
// dot-separated labels (RFC 1123), with no wildcard.
func checkDNSName(n string) error {
	bad := func(why string) error {
		return fmt.Errorf("DNS name %q: %s: %w", n, why, ErrMalformed)
	}
	if n == "" || len(n) > 253 {
		return bad("must be 1 to 253 characters")
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return bad("each label must be 1 to 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return bad("a label may not start or end with '-'")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return bad("only letters, digits and '-' are allowed")
			}
		}
	}
	return nil
}

// newSerial is a random serial in 16 bytes, positive as RFC 5280 wants
// (127 random bits), so serials never repeat in practice.
func newSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand panics itself if it could)
	b[0] &= 0x7f
	if b[0] == 0 {
		b[0] = 1 // keep it 16 bytes and non-zero
	}
	return new(big.Int).SetBytes(b)
}

// IssueServerCert issues the configuration server's own certificate
// (identity server/config, DefaultValidity) for hosts, each a DNS name or
// an IP address, with a fresh key. The chain holds the CA certificate
// too: a joiner has only the token's pin, and checks the chain the server
// sends against it.
func (ca *CA) IssueServerCert(hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server key: %w", err)
	}
	csrDER, err := NewCSR(key, hosts)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	der, err := ca.Sign(csr, Identity{Role: RoleServer, ID: ServerID}, DefaultValidity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// NewCSR makes a DER certificate request for key naming hosts (DNS names
// or IP addresses) and nothing else: the CA sets the identity.
func NewCSR(key crypto.Signer, hosts []string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{Organization: []string{"standby"}}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	if len(tmpl.DNSNames) > maxSANs || len(tmpl.IPAddresses) > maxSANs {
		return nil, fmt.Errorf("%d hosts: at most %d DNS names and %d IP addresses: %w", len(hosts), maxSANs, maxSANs, ErrMalformed)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	return der, nil
}
