package trust

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Store is what the Registrar needs of the control plane's store;
// store.Store satisfies it. UseJoinToken must consume a token atomically
// and return store.ErrNotFound, store.ErrTokenUsed or
// store.ErrTokenExpired as store.Store documents.
type Store interface {
	UseJoinToken(ctx context.Context, hash string, now time.Time, usedBy string) (control.JoinToken, error)
	CreateServer(ctx context.Context, s control.Server) error
	GetServer(ctx context.Context, id string) (control.Server, error)
	UpdateServer(ctx context.Context, s control.Server) error
	ListServers(ctx context.Context, role control.Role) ([]control.Server, error)
}

// Registrar is the server side of joining and renewal: it checks a join
// request, consumes its token, signs the joiner's CSR and records the new
// server; it renews the certificates of registered servers that are not
// revoked. Handler serves it over HTTP.
type Registrar struct {
	CA    *CA
	Store Store
	// Validity of the certificates it issues; 0: DefaultValidity.
	Validity time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// NewID makes a server ID; nil: 16 random hex digits.
	NewID func() string
	// Audit, when set, is told of every join and renewal, done or refused.
	Audit func(ctx context.Context, e control.AuditEntry)
	// Log receives what cannot be returned (store failures while checking
	// revocation inside a TLS handshake, internal errors of the HTTP
	// endpoints); nil: slog.Default().
	Log *slog.Logger
}

// JoinRequest is what a joiner sends to POST /v1/join.
type JoinRequest struct {
	Token   string       `json:"token"`
	Role    control.Role `json:"role"`
	Name    string       `json:"name"`              // its host name; unique per role
	Address string       `json:"address,omitempty"` // host:port where peers reach it
	Version string       `json:"version,omitempty"` // its standby version
	CSR     []byte       `json:"csr"`               // PEM CERTIFICATE REQUEST
}

// JoinResponse is the server's answer: the new server's ID, its
// certificate and the CA certificate (PEM).
type JoinResponse struct {
	ServerID string `json:"server_id"`
	CertPEM  []byte `json:"cert"`
	CAPEM    []byte `json:"ca"`
}

// RenewRequest is what a joined server sends to POST /v1/renew, over
// mutual TLS with its current certificate.
type RenewRequest struct {
	CSR []byte `json:"csr"` // PEM CERTIFICATE REQUEST for its new key
}

// RenewResponse carries the new certificate and the CA certificate.
type RenewResponse struct {
	CertPEM []byte `json:"cert"`
	CAPEM   []byte `json:"ca"`
}

const (
	maxNameLen    = 253
	maxVersionLen = 64
)

func (r *Registrar) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Registrar) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}

func (r *Registrar) newID() string {
	if r.NewID != nil {
		return r.NewID()
	}
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *Registrar) audit(ctx context.Context, actor, action, object string, err error, detail string) {
	if r.Audit == nil {
		return
	}
	res := "ok"
	if err != nil {
		res = err.Error()
	}
	r.Audit(ctx, control.AuditEntry{At: r.now().UTC(), Actor: actor, Action: action, Object: object, Result: res, Detail: detail})
}

// Join registers a server. Everything that can be checked without the
// token is checked before the token is consumed, so a mistyped name or a
// bad CSR does not burn it. The token is consumed atomically by the
// store: of two joins with one token, one wins.
func (r *Registrar) Join(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	resp, id, err := r.join(ctx, req)
	actor := "join"
	if p, perr := ParseJoinToken(req.Token); perr == nil {
		actor = "token:" + p.ID
	}
	r.audit(ctx, actor, "server.join", "server/"+string(req.Role)+"/"+req.Name, err, id)
	return resp, err
}

func (r *Registrar) join(ctx context.Context, req JoinRequest) (JoinResponse, string, error) {
	p, err := ParseJoinToken(req.Token)
	if err != nil {
		return JoinResponse{}, "", err
	}
	if !pinsEqual(p.Pin, r.CA.Pin()) {
		return JoinResponse{}, "", fmt.Errorf("join token pins CA %s but this server's CA is %s: the token was made by another standby server: %w", p.Pin, r.CA.Pin(), ErrBadToken)
	}
	if err := checkJoinFields(req); err != nil {
		return JoinResponse{}, "", err
	}
	if req.Role != p.Role {
		return JoinResponse{}, "", fmt.Errorf("join token is for role %s, not %s; run `standby %s join` with it, or create a token with --role %s: %w", p.Role, req.Role, p.Role, req.Role, ErrWrongRole)
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		return JoinResponse{}, "", err
	}
	if err := r.checkNameFree(ctx, req.Role, req.Name); err != nil {
		return JoinResponse{}, "", err
	}
	id := r.newID()
	now := r.now()
	tok, err := r.Store.UseJoinToken(ctx, p.Hash(), now, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return JoinResponse{}, "", fmt.Errorf("join token %s is not known to this server (forged, mistyped, or deleted); create one with `standby token create --role %s`: %w", p.ID, p.Role, ErrBadToken)
	case errors.Is(err, store.ErrTokenUsed):
		return JoinResponse{}, "", fmt.Errorf("join token %s: %w (tokens are one-time); create another with `standby token create --role %s`", p.ID, ErrTokenUsed, p.Role)
	case errors.Is(err, store.ErrTokenExpired):
		return JoinResponse{}, "", fmt.Errorf("join token %s: %w; create another with `standby token create --role %s --ttl 1h`", p.ID, ErrTokenExpired, p.Role)
	case err != nil:
		return JoinResponse{}, "", fmt.Errorf("use join token %s: %w", p.ID, err)
	}
	// The hash matched, so the secret is genuine; the text's id and role
	// are only hints, and an altered one is refused (the token is spent).
	if tok.ID != p.ID {
		return JoinResponse{}, "", fmt.Errorf("join token names id %s but its secret belongs to token %s (altered?): %w", p.ID, tok.ID, ErrBadToken)
	}
	if tok.Role != req.Role {
		return JoinResponse{}, "", fmt.Errorf("join token %s is for role %s, not %s (altered?): %w", tok.ID, tok.Role, req.Role, ErrWrongRole)
	}
	ident := Identity{Role: req.Role, ID: id}
	der, cert, err := r.sign(csr, ident)
	if err != nil {
		return JoinResponse{}, "", err
	}
	srv := control.Server{
		ID: id, Role: req.Role, Name: req.Name, Address: req.Address, Version: req.Version,
		CertSerial: SerialString(cert), CertExpires: cert.NotAfter.UTC(), JoinedAt: now.UTC(),
	}
	if err := r.Store.CreateServer(ctx, srv); err != nil {
		if errors.Is(err, store.ErrExists) {
			return JoinResponse{}, "", fmt.Errorf("server %q with role %s was registered meanwhile; the token is spent, create another: %w", req.Name, req.Role, ErrExists)
		}
		return JoinResponse{}, "", fmt.Errorf("record server %s: %w", ident, err)
	}
	return JoinResponse{ServerID: id, CertPEM: pemBytes("CERTIFICATE", der), CAPEM: r.CA.CertPEM()}, id, nil
}

func (r *Registrar) sign(csr *x509.CertificateRequest, id Identity) ([]byte, *x509.Certificate, error) {
	der, err := r.CA.Sign(csr, id, r.Validity)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate issued to %s: %w", id, err)
	}
	return der, cert, nil
}

func (r *Registrar) checkNameFree(ctx context.Context, role control.Role, name string) error {
	servers, err := r.Store.ListServers(ctx, role)
	if err != nil {
		return fmt.Errorf("list %s servers: %w", role, err)
	}
	for _, s := range servers {
		if s.Name == name {
			return fmt.Errorf("server %q with role %s is registered already (id %s); remove it first or join with another --name: %w", name, role, s.ID, ErrExists)
		}
	}
	return nil
}

func checkJoinFields(req JoinRequest) error {
	if !req.Role.Valid() {
		return fmt.Errorf("role %q: want one of %s: %w", req.Role, rolesText(control.Roles), ErrMalformed)
	}
	if req.Name == "" || len(req.Name) > maxNameLen {
		return fmt.Errorf("name must be 1 to %d characters (the host name): %w", maxNameLen, ErrMalformed)
	}
	for _, c := range req.Name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("name %q: only letters, digits, '.', '_' and '-' are allowed: %w", req.Name, ErrMalformed)
		}
	}
	if req.Address != "" {
		host, port, err := net.SplitHostPort(req.Address)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("address %q: want host:port: %w", req.Address, ErrMalformed)
		}
	}
	if len(req.Version) > maxVersionLen {
		return fmt.Errorf("version is %d characters, at most %d: %w", len(req.Version), maxVersionLen, ErrMalformed)
	}
	return nil
}

// parseCSR reads one PEM CERTIFICATE REQUEST and checks it (CheckCSR).
func parseCSR(b []byte) (*x509.CertificateRequest, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("csr: want a PEM CERTIFICATE REQUEST: %w", ErrMalformed)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %v: %w", err, ErrMalformed)
	}
	if err := CheckCSR(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

// Renew issues a new certificate with peer's identity for the key of
// csrPEM. peer is the identity of the certificate the request came with,
// already verified (Verifier.Require). The server must be registered with
// that role and not revoked.
func (r *Registrar) Renew(ctx context.Context, peer Identity, csrPEM []byte) (RenewResponse, error) {
	resp, err := r.renew(ctx, peer, csrPEM)
	r.audit(ctx, "server:"+peer.String(), "server.renew", "server/"+peer.String(), err, "")
	return resp, err
}

func (r *Registrar) renew(ctx context.Context, peer Identity, csrPEM []byte) (RenewResponse, error) {
	srv, err := r.registered(ctx, peer)
	if err != nil {
		return RenewResponse{}, err
	}
	if srv.Revoked {
		return RenewResponse{}, fmt.Errorf("certificate of server %s is %w; it cannot renew (join again with a new token if this was a mistake)", peer, ErrRevoked)
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return RenewResponse{}, err
	}
	der, cert, err := r.sign(csr, peer)
	if err != nil {
		return RenewResponse{}, err
	}
	srv.CertSerial, srv.CertExpires = SerialString(cert), cert.NotAfter.UTC()
	if err := r.Store.UpdateServer(ctx, srv); err != nil {
		return RenewResponse{}, fmt.Errorf("record renewed certificate of %s: %w", peer, err)
	}
	return RenewResponse{CertPEM: pemBytes("CERTIFICATE", der), CAPEM: r.CA.CertPEM()}, nil
}

// registered is the stored server of id, which must have id's role.
func (r *Registrar) registered(ctx context.Context, id Identity) (control.Server, error) {
	srv, err := r.Store.GetServer(ctx, id.ID)
	if errors.Is(err, store.ErrNotFound) {
		return control.Server{}, fmt.Errorf("server %s is not registered (removed?); join again with a new token: %w", id, ErrNotJoined)
	}
	if err != nil {
		return control.Server{}, fmt.Errorf("look up server %s: %w", id, err)
	}
	if srv.Role != id.Role {
		return control.Server{}, fmt.Errorf("certificate names %s but server %s is registered as %s: %w", id, id.ID, srv.Role, ErrWrongRole)
	}
	return srv, nil
}

// revokedTimeout bounds the store lookup Revoked makes inside a TLS
// handshake, which has no context of its own.
const revokedTimeout = 5 * time.Second

// Revoked is the configuration server's revocation check for a Verifier:
// a certificate is refused when its server is revoked, removed, or
// registered with another role. It fails closed: when the store cannot
// answer, the certificate is refused and the store error logged.
func (r *Registrar) Revoked(serial string, id Identity) bool {
	if id.Role == RoleServer {
		return false // the server's own certificate is not in its store
	}
	ctx, cancel := context.WithTimeout(context.Background(), revokedTimeout)
	defer cancel()
	srv, err := r.registered(ctx, id)
	if err != nil {
		if !errors.Is(err, ErrNotJoined) && !errors.Is(err, ErrWrongRole) {
			r.log().Error("revocation check failed; refusing the certificate", "server", id.String(), "serial", serial, "err", err)
		}
		return true
	}
	return srv.Revoked
}
