package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// Verifier checks a peer's certificate chain: it chains to the CA in
// Roots, is valid now and for Usage, carries a well-formed identity whose
// role is in Roles (and whose ID is ID, when set), and is not revoked. Its
// checks run whatever the tls.Config around it did, so a handler does not
// depend on how its listener was configured.
type Verifier struct {
	// Roots holds the deployment's CA. Required: a nil pool would mean the
	// system roots, which never sign standby identities.
	Roots *x509.CertPool
	// Roles the peer may have; at least one.
	Roles []control.Role
	// ID, when set, is the only server ID accepted (a dialler that knows
	// which server it means to reach).
	ID string
	// Usage the peer's certificate must allow: x509.ExtKeyUsageClientAuth
	// (the zero value means this) when checking clients, ServerAuth when
	// checking servers.
	Usage x509.ExtKeyUsage
	// Revoked, when set, says whether the certificate with that serial
	// (SerialString) of that identity is revoked. The configuration server
	// consults its store (Registrar.Revoked); roles consult the CRL the
	// server publishes (CRL.Revoked).
	Revoked func(serial string, id Identity) bool
	// Now is the clock validity is checked against; nil: time.Now.
	Now func() time.Time
}

// Verify checks chain (the peer's leaf first) and returns the identity.
func (v *Verifier) Verify(chain []*x509.Certificate) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, fmt.Errorf("peer sent %w", ErrNoCert)
	}
	if v.Roots == nil || len(v.Roles) == 0 {
		return Identity{}, errors.New("verifier: Roots and Roles are required (a configuration error)")
	}
	leaf := chain[0]
	name := fmt.Sprintf("%q", leaf.Subject.CommonName)
	if id, err := IdentityOf(leaf); err == nil {
		name = id.String()
	}
	if err := v.verifyChain(leaf, chain[1:], name); err != nil {
		return Identity{}, err
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return Identity{}, fmt.Errorf("peer certificate: %w", err)
	}
	if !slices.Contains(v.Roles, id.Role) {
		return Identity{}, fmt.Errorf("peer certificate is for role %s; this endpoint accepts %s: %w", id.Role, rolesText(v.Roles), ErrWrongRole)
	}
	if v.ID != "" && id.ID != v.ID {
		return Identity{}, fmt.Errorf("peer certificate is for %s; expected %s/%s: %w", id, id.Role, v.ID, ErrWrongPeer)
	}
	if v.Revoked != nil && v.Revoked(SerialString(leaf), id) {
		return Identity{}, fmt.Errorf("certificate of server %s is %w (serial %s)", id, ErrRevoked, SerialString(leaf))
	}
	return id, nil
}

func (v *Verifier) verifyChain(leaf *x509.Certificate, rest []*x509.Certificate, name string) error {
	usage := v.Usage
	if usage == x509.ExtKeyUsageAny {
		usage = x509.ExtKeyUsageClientAuth
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	opts := x509.VerifyOptions{Roots: v.Roots, Intermediates: x509.NewCertPool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}
	for _, c := range rest {
		opts.Intermediates.AddCert(c)
	}
	_, err := leaf.Verify(opts)
	if err == nil {
		return nil
	}
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("peer certificate %s is %w (issuer %q), not by this deployment's CA", name, ErrWrongCA, leaf.Issuer.CommonName)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("peer certificate %s is valid from %s to %s, not now (%s): %w; renew it (`standby <role> renew`) or join again",
			name, leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrCertInvalid)
	default:
		return fmt.Errorf("peer certificate %s: %v: %w", name, err, ErrCertInvalid)
	}
}

func rolesText(roles []control.Role) string {
	s := ""
	for i, r := range roles {
		if i > 0 {
			s += " or "
		}
		s += string(r)
	}
	return s
}

// VerifyConnection is a tls.Config.VerifyConnection that runs Verify on
// the peer's certificates.
func (v *Verifier) VerifyConnection(cs tls.ConnectionState) error {
	_, err := v.Verify(cs.PeerCertificates)
	return err
}

// ServerConfig is a TLS 1.3 listener configuration presenting cert and
// requiring a client certificate that passes v.
func (v *Verifier) ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// The chain is checked by VerifyConnection (v.Verify), which
		// names what is wrong; tls's own check would only say "bad
		// certificate".
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: v.VerifyConnection,
		MinVersion:       tls.VersionTLS13,
	}
}

// ClientConfig is a TLS 1.3 dialler configuration presenting cert and
// accepting only a server certificate that passes v. v.Usage should be
// x509.ExtKeyUsageServerAuth.
func (v *Verifier) ClientConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// Host names are not what identifies a standby peer (addresses
		// change at failover); the identity in the certificate is, and
		// VerifyConnection checks it with the chain.
		InsecureSkipVerify: true,
		VerifyConnection:   v.VerifyConnection,
		MinVersion:         tls.VersionTLS13,
	}
}

// ServerTLS is the configuration of a role's mutual-TLS listener: it
// presents cert and accepts only client certificates of roots' CA whose
// role is in allowed and that revoked (may be nil) does not refuse.
func ServerTLS(roots *x509.CertPool, cert tls.Certificate, allowed []control.Role, revoked func(serial string, id Identity) bool) *tls.Config {
	v := &Verifier{Roots: roots, Roles: allowed, Revoked: revoked, Usage: x509.ExtKeyUsageClientAuth}
	return v.ServerConfig(cert)
}

// ClientTLS is the configuration of a dialler presenting cert to the
// server want names: its role, and its ID when not empty.
func ClientTLS(roots *x509.CertPool, cert tls.Certificate, want Identity) *tls.Config {
	v := &Verifier{Roots: roots, Roles: []control.Role{want.Role}, ID: want.ID, Usage: x509.ExtKeyUsageServerAuth}
	return v.ClientConfig(cert)
}

// ListenerTLS is the configuration server's listener: it presents cert
// and asks for, but does not require, a client certificate, because users
// of the API and joiners (who have no certificate yet) connect to it too.
// A certificate that is sent must chain to roots and carry a join role's
// identity, or the handshake fails; so r.TLS.PeerCertificates never holds
// a stranger's certificate. Revocation and the role an endpoint accepts
// are checked per request by Verifier.Require, which every handler that
// needs a role is wrapped in (so nothing depends on this configuration,
// and a revoked server gets a readable 403 rather than a TLS alert).
func ListenerTLS(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	v := &Verifier{Roots: roots, Roles: control.Roles, Usage: x509.ExtKeyUsageClientAuth}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			return v.VerifyConnection(cs)
		},
		MinVersion: tls.VersionTLS13,
	}
}

type peerKey struct{}

// PeerFrom is the identity Require verified for this request.
func PeerFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(peerKey{}).(Identity)
	return id, ok
}

// WithPeer returns ctx carrying id, as Require does (for tests and for
// transports other than HTTP).
func WithPeer(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, peerKey{}, id)
}

// Require wraps next so that it runs only for requests whose TLS client
// certificate passes v; the identity is in the request's context
// (PeerFrom). Refusals are JSON errors: 401 without a certificate or with
// one of another CA, 403 for a wrong role or a revoked server.
func (v *Verifier) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			writeError(w, fmt.Errorf("%s needs TLS with a client certificate: %w", r.URL.Path, ErrNoCert))
			return
		}
		id, err := v.Verify(r.TLS.PeerCertificates)
		if err != nil {
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPeer(r.Context(), id)))
	})
}
