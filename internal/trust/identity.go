package trust

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"

	"github.com/standby-dr/standby/internal/control"
)

// RoleServer is the configuration server's own role. It is not a role a
// server joins as (control.Roles), so it is only ever issued by
// CA.IssueServerCert.
const RoleServer control.Role = "server"

// ServerID is the configuration server's identity ID: its certificate
// names standby://server/config.
const ServerID = "config"

// uriScheme is the scheme of the URI SAN that carries an identity.
const uriScheme = "standby"

// maxIDLen bounds an identity ID: IDs are made by the server (NewID), so a
// long one is a forged or broken certificate.
const maxIDLen = 64

// Identity is who a certificate speaks for: a role and the server ID the
// configuration server issued at join. Certificates carry it as the URI
// SAN standby://<role>/<id>.
type Identity struct {
	Role control.Role `json:"role"`
	ID   string       `json:"id"`
}

// String is "role/id", the form errors and the audit log use.
func (id Identity) String() string { return string(id.Role) + "/" + id.ID }

// URI is the certificate's URI SAN for id.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: uriScheme, Host: string(id.Role), Path: "/" + id.ID}
}

// Validate checks the role is a join role or RoleServer and the ID is a
// short run of [A-Za-z0-9._-].
func (id Identity) Validate() error {
	if !id.Role.Valid() && id.Role != RoleServer {
		return fmt.Errorf("identity %s: role %q is not one of %v or %s: %w", id, id.Role, control.Roles, RoleServer, ErrNoIdentity)
	}
	if err := validID(id.ID); err != nil {
		return fmt.Errorf("identity %s: %w", id, err)
	}
	return nil
}

func validID(s string) error {
	if s == "" || len(s) > maxIDLen {
		return fmt.Errorf("id must be 1 to %d characters, got %d: %w", maxIDLen, len(s), ErrNoIdentity)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("id %q: only letters, digits, '.', '_' and '-' are allowed: %w", s, ErrNoIdentity)
		}
	}
	return nil
}

// IdentityOf reads the identity a certificate carries. It does not verify
// the certificate: use a Verifier for that. A certificate with no, or more
// than one, standby URI SAN has no identity.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("no certificate: %w", ErrNoIdentity)
	}
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme {
			continue
		}
		id := Identity{Role: control.Role(u.Host), ID: strings.TrimPrefix(u.Path, "/")}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || !strings.HasPrefix(u.Path, "/") {
			return Identity{}, fmt.Errorf("certificate %q: URI SAN %s is not standby://<role>/<id>: %w", cert.Subject.CommonName, u, ErrNoIdentity)
		}
		if err := id.Validate(); err != nil {
			return Identity{}, fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q carries no URI SAN standby://<role>/<id> (not issued by a standby server?): %w", cert.Subject.CommonName, ErrNoIdentity)
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("certificate %q carries %d standby identities, want one: %w", cert.Subject.CommonName, len(found), ErrNoIdentity)
	}
}

// PeerIdentity is the identity of a connection's peer certificate. It only
// reads it: the connection's tls.Config must have verified the chain
// (ServerTLS, ClientTLS and ListenerTLS do).
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, fmt.Errorf("peer sent %w", ErrNoCert)
	}
	return IdentityOf(cs.PeerCertificates[0])
}

// SerialString is the form of a certificate serial number that the store
// keeps (control.Server.CertSerial) and revocation checks compare:
// lowercase hexadecimal without leading zeros.
func SerialString(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }
