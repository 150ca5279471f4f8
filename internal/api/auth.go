package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Identity is a component's identity, from its client certificate: its
// role (agent, process, target) and the server ID the CA issued.
type Identity struct {
	Role control.Role
	ID   string
}

// ErrPeerForbidden is wrapped by Identify's errors for a peer that is
// known but refused (revoked, wrong role): 403 rather than 401.
var ErrPeerForbidden = errors.New("peer refused")

// principal is who makes a call: a user (API token) or a component
// (client certificate).
type principal struct {
	user *control.User
	comp *Identity
}

// actor names the principal in the audit log.
func (p principal) actor() string {
	switch {
	case p.user != nil:
		return "user:" + p.user.Name
	case p.comp != nil:
		return "server:" + string(p.comp.Role) + "/" + p.comp.ID
	}
	return "anonymous"
}

type principalKey struct{}

func principalOf(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// rank orders user roles: a route open to a role is open to the ones
// above it.
func rank(r control.UserRole) int {
	switch r {
	case control.UserViewer:
		return 1
	case control.UserOperator:
		return 2
	case control.UserAdmin:
		return 3
	}
	return 0
}

// userRoles lists the user roles, for validation messages.
var userRoles = []control.UserRole{control.UserAdmin, control.UserOperator, control.UserViewer}

// tokenPrefix marks Standby API tokens (so that a join token or a
// password pasted by mistake is told apart).
const tokenPrefix = "sbu_"

// NewAPIToken makes a user's API token and the hash the store keeps.
func NewAPIToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashAPIToken(token), nil
}

// HashAPIToken is what the store keeps of an API token.
func HashAPIToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// authUser authenticates a user by the bearer token of r.
func (s *Server) authUser(r *http.Request) (*control.User, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errorf(http.StatusUnauthorized, "no API token: send Authorization: Bearer TOKEN (an admin makes one with `standby users create`)")
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || !strings.HasPrefix(tok, tokenPrefix) {
		return nil, errorf(http.StatusUnauthorized, "malformed Authorization header: want Bearer %s...", tokenPrefix)
	}
	u, err := s.o.Store.UserByTokenHash(r.Context(), HashAPIToken(tok))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(http.StatusUnauthorized, "unknown API token")
	}
	if err != nil {
		return nil, err
	}
	if u.Disabled {
		return nil, errorf(http.StatusForbidden, "user %s is disabled", u.Name)
	}
	return &u, nil
}

// forUser wraps a handler open to users of role at least min.
func (s *Server) forUser(min control.UserRole, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, err := s.authUser(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if rank(u.Role) < rank(min) {
			writeError(w, errorf(http.StatusForbidden, "user %s is %s; this needs %s", u.Name, u.Role, min))
			return
		}
		s.serve(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, principal{user: u})), h)
	}
}

// forComponent wraps a handler open to components of the given roles,
// identified by their client certificates (authComponent).
func (s *Server) forComponent(roles []control.Role, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := s.authComponent(r, roles)
		if err != nil {
			writeError(w, err)
			return
		}
		s.serve(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, principal{comp: id})), h)
	}
}

// authComponent identifies the component making r (HTTP/JSON or gRPC:
// both come as HTTPS requests on the API listener) and checks it may
// make a call open to roles. The server's store is asked whether the
// server is still registered and not revoked: the certificate alone is
// not enough.
func (s *Server) authComponent(r *http.Request, roles []control.Role) (*Identity, error) {
	if s.o.Identify == nil {
		return nil, errorf(http.StatusForbidden, "this server does not accept component calls")
	}
	id, err := s.o.Identify(r)
	if err != nil {
		status := http.StatusUnauthorized
		if errors.Is(err, ErrPeerForbidden) {
			status = http.StatusForbidden
		}
		return nil, errorf(status, "%v", err)
	}
	if !slices.Contains(roles, id.Role) {
		return nil, errorf(http.StatusForbidden, "certificate is for a %s; this endpoint is for %s", id.Role, joinRoles(roles))
	}
	srv, err := s.o.Store.GetServer(r.Context(), id.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errorf(http.StatusForbidden, "server %s/%s is not registered", id.Role, id.ID)
	case err != nil:
		return nil, err
	case srv.Revoked:
		return nil, errorf(http.StatusForbidden, "server %s/%s is revoked", id.Role, id.ID)
	case srv.Role != id.Role:
		return nil, errorf(http.StatusForbidden, "server %s is registered as a %s, its certificate says %s", id.ID, srv.Role, id.Role)
	}
	return &id, nil
}

func joinRoles(roles []control.Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " or ")
}
