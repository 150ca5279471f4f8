package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// newID makes an object ID: 16 random bytes, base32, lower case.
func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// validName is what a name of a site, group, user or machine may be.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func checkName(what, name string) error {
	if !validName.MatchString(name) {
		return errorf(http.StatusBadRequest, "%s name %q: want 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", what, name)
	}
	return nil
}

// --- sites ---------------------------------------------------------------

type createSiteRequest struct {
	Name string `json:"name"`
}

func (s *Server) listSites(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.ListSites(r.Context())
}

func (s *Server) createSite(w http.ResponseWriter, r *http.Request) (any, error) {
	var req createSiteRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	if err := checkName("site", req.Name); err != nil {
		return nil, err
	}
	site := control.Site{ID: newID(), Name: req.Name, CreatedAt: s.now()}
	err := s.o.Store.CreateSite(r.Context(), site)
	s.audit(r.Context(), "site.create", "site/"+req.Name, err, "")
	if err != nil {
		return nil, err
	}
	return &response{http.StatusCreated, site}, nil
}

// --- servers -------------------------------------------------------------

func (s *Server) listServers(w http.ResponseWriter, r *http.Request) (any, error) {
	role := control.Role(r.URL.Query().Get("role"))
	if role != "" && !role.Valid() {
		return nil, errorf(http.StatusBadRequest, "role %q: want agent, process or target", role)
	}
	return s.o.Store.ListServers(r.Context(), role)
}

func (s *Server) getServer(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.GetServer(r.Context(), r.PathValue("id"))
}

func (s *Server) revokeServer(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.PathValue("id")
	srv, err := s.o.Store.GetServer(r.Context(), id)
	if err == nil {
		srv.Revoked = true
		err = s.o.Store.UpdateServer(r.Context(), srv)
	}
	s.audit(r.Context(), "server.revoke", "server/"+id, err, "")
	if err != nil {
		return nil, err
	}
	s.revoked.notify() // its desired-state watches end now, not at their next round
	return srv, nil
}

// --- join tokens -----------------------------------------------------------

type createTokenRequest struct {
	Role control.Role `json:"role"`
	TTL  string       `json:"ttl"` // e.g. "1h"; default 1h
}

type createTokenResponse struct {
	Token string            `json:"token"` // the secret: shown once
	Info  control.JoinToken `json:"info"`
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.ListJoinTokens(r.Context())
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) (any, error) {
	if s.o.NewJoinToken == nil {
		return nil, errorf(http.StatusNotImplemented, "this server has no CA: it cannot make join tokens")
	}
	var req createTokenRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	if !req.Role.Valid() {
		return nil, errorf(http.StatusBadRequest, "role %q: want agent, process or target", req.Role)
	}
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "ttl %q: want a duration such as 30m or 24h", req.TTL)
		}
		ttl = d
	}
	actor := principalOf(r.Context()).actor()
	secret, tok, err := s.o.NewJoinToken(req.Role, ttl, actor, s.now())
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%v", err)
	}
	err = s.o.Store.CreateJoinToken(r.Context(), tok)
	s.audit(r.Context(), "token.create", "token/"+tok.ID, err, "role "+string(req.Role)+", expires "+tok.ExpiresAt.Format(time.RFC3339))
	if err != nil {
		return nil, err
	}
	return &response{http.StatusCreated, createTokenResponse{Token: secret, Info: tok}}, nil
}

// --- users -------------------------------------------------------------------

type createUserRequest struct {
	Name string           `json:"name"`
	Role control.UserRole `json:"role"`
}

type createUserResponse struct {
	User  control.User `json:"user"`
	Token string       `json:"token"` // the API token: shown once
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.ListUsers(r.Context())
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) (any, error) {
	var req createUserRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	if err := checkName("user", req.Name); err != nil {
		return nil, err
	}
	if rank(req.Role) == 0 {
		return nil, errorf(http.StatusBadRequest, "role %q: want one of %v", req.Role, userRoles)
	}
	u, token, err := CreateUser(r.Context(), s.o.Store, req.Name, req.Role, s.now())
	s.audit(r.Context(), "user.create", "user/"+req.Name, err, "role "+string(req.Role))
	if err != nil {
		return nil, err
	}
	return &response{http.StatusCreated, createUserResponse{User: u, Token: token}}, nil
}

// CreateUser makes a user with a new API token, which it returns (the
// store keeps only its hash). `standby server` uses it for the first
// admin.
func CreateUser(ctx context.Context, st store.Store, name string, role control.UserRole, now time.Time) (control.User, string, error) {
	token, hash, err := NewAPIToken()
	if err != nil {
		return control.User{}, "", err
	}
	u := control.User{ID: newID(), Name: name, Role: role, TokenHash: hash, CreatedAt: now}
	if err := st.CreateUser(ctx, u); err != nil {
		return control.User{}, "", err
	}
	return u, token, nil
}
