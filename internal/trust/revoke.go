package trust

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// CRLValidity is how long a CRL the CA signs stays current (NextUpdate).
// Roles fetch a fresh one far more often (RevocationPoller).
const CRLValidity = 24 * time.Hour

// CRL signs an X.509 revocation list of serials (SerialString form),
// current from now for CRLValidity, numbered by now so later lists have
// higher numbers.
func (ca *CA) CRL(serials []string, now time.Time) ([]byte, error) {
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(now.UnixNano()),
		ThisUpdate: now.UTC(),
		NextUpdate: now.Add(CRLValidity).UTC(),
	}
	for _, s := range serials {
		n, ok := new(big.Int).SetString(s, 16)
		if !ok || n.Sign() <= 0 {
			return nil, fmt.Errorf("crl: serial %q is not a positive hex number: %w", s, ErrMalformed)
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now.UTC()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		return nil, fmt.Errorf("crl: %w", err)
	}
	return der, nil
}

// Revocations is what a role knows of revoked servers: the serials of a
// CRL the CA signed, and revoked identities as the configuration server
// listed them. Its Revoked method is a Verifier.Revoked. Immutable.
type Revocations struct {
	Number     *big.Int // the CRL number, or nil
	ThisUpdate time.Time
	serials    map[string]bool
	ids        map[Identity]bool
}

// Revoked says whether serial or id is listed.
func (rv *Revocations) Revoked(serial string, id Identity) bool {
	if rv == nil {
		return false
	}
	return rv.serials[serial] || rv.ids[id]
}

// ParseCRL checks that der is a CRL signed by ca and current at now, and
// returns its revocations.
func ParseCRL(der []byte, ca *x509.Certificate, now time.Time) (*Revocations, error) {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("crl: %v: %w", err, ErrMalformed)
	}
	if err := rl.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("crl: %w (%v)", ErrWrongCA, err)
	}
	if now.After(rl.NextUpdate) {
		return nil, fmt.Errorf("crl number %s was current until %s; it is stale (replayed?): %w", rl.Number, rl.NextUpdate.UTC().Format(time.RFC3339), ErrCertInvalid)
	}
	rv := &Revocations{Number: rl.Number, ThisUpdate: rl.ThisUpdate, serials: map[string]bool{}, ids: map[Identity]bool{}}
	for _, e := range rl.RevokedCertificateEntries {
		rv.serials[e.SerialNumber.Text(16)] = true
	}
	return rv, nil
}

// RevokedServer is one entry of GET /v1/revoked.
type RevokedServer struct {
	Role   control.Role `json:"role"`
	ID     string       `json:"id"`
	Serial string       `json:"serial,omitempty"`
}

// RevokedList is the answer of GET /v1/revoked: every revoked server, by
// identity (which covers certificates issued before its last renewal,
// whose serials the store no longer knows) and current serial.
type RevokedList struct {
	At      time.Time       `json:"at"`
	Servers []RevokedServer `json:"servers"`
}

// Revocations turns l into a Revocations.
func (l RevokedList) Revocations() *Revocations {
	rv := &Revocations{ThisUpdate: l.At, serials: map[string]bool{}, ids: map[Identity]bool{}}
	for _, s := range l.Servers {
		rv.ids[Identity{Role: s.Role, ID: s.ID}] = true
		if s.Serial != "" {
			rv.serials[s.Serial] = true
		}
	}
	return rv
}

// revokedServers lists the store's revoked servers.
func (r *Registrar) revokedServers(ctx context.Context) ([]control.Server, error) {
	all, err := r.Store.ListServers(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	var out []control.Server
	for _, s := range all {
		if s.Revoked {
			out = append(out, s)
		}
	}
	return out, nil
}

func (r *Registrar) serveCRL(w http.ResponseWriter, req *http.Request) {
	revoked, err := r.revokedServers(req.Context())
	if err != nil {
		r.writeError(w, err)
		return
	}
	var serials []string
	for _, s := range revoked {
		if s.CertSerial != "" {
			serials = append(serials, s.CertSerial)
		}
	}
	der, err := r.CA.CRL(serials, r.now())
	if err != nil {
		r.writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(der)
}

func (r *Registrar) serveRevoked(w http.ResponseWriter, req *http.Request) {
	revoked, err := r.revokedServers(req.Context())
	if err != nil {
		r.writeError(w, err)
		return
	}
	l := RevokedList{At: r.now().UTC(), Servers: []RevokedServer{}}
	for _, s := range revoked {
		l.Servers = append(l.Servers, RevokedServer{Role: s.Role, ID: s.ID, Serial: s.CertSerial})
	}
	writeJSON(w, http.StatusOK, l)
}

// RevocationSet holds the newest Revocations a role knows, for its
// Verifiers: pass set.Revoked as Verifier.Revoked. Safe for concurrent
// use. Empty until the first Set.
type RevocationSet struct {
	mu  sync.RWMutex
	cur *Revocations
}

// Set installs rv (nil is ignored).
func (s *RevocationSet) Set(rv *Revocations) {
	if rv == nil {
		return
	}
	s.mu.Lock()
	s.cur = rv
	s.mu.Unlock()
}

// Revoked asks the newest Revocations.
func (s *RevocationSet) Revoked(serial string, id Identity) bool {
	s.mu.RLock()
	cur := s.cur
	s.mu.RUnlock()
	return cur.Revoked(serial, id)
}

// FetchRevocations asks the configuration server at serverURL for the
// revoked servers (GET /v1/revoked), over mutual TLS with l's
// certificate. Roles call it every few minutes and install the answer in
// their RevocationSet. When the server cannot be reached, a role keeps the
// list it has: replication must not stop because the control plane is
// away.
func FetchRevocations(ctx context.Context, l *Local, serverURL string) (*Revocations, error) {
	u, err := endpoint(serverURL, RevokedPath)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, joinTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	var l2 RevokedList
	if err := do(ClientTLS(l.Roots, l.Cert, Identity{Role: RoleServer}), req, &l2); err != nil {
		return nil, fmt.Errorf("fetch revocations from %s: %w", u.Host, err)
	}
	return l2.Revocations(), nil
}
