package trust

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// memStore is the Registrar's Store in memory, with store.Store's
// semantics for join tokens and servers (the real store is another
// package's; this package must not depend on its implementations).
type memStore struct {
	mu      sync.Mutex
	tokens  map[string]control.JoinToken // by hash
	servers map[string]control.Server
}

func newMemStore() *memStore {
	return &memStore{tokens: map[string]control.JoinToken{}, servers: map[string]control.Server{}}
}

func (m *memStore) addToken(t control.JoinToken) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[t.Hash] = t
}

func (m *memStore) UseJoinToken(ctx context.Context, hash string, now time.Time, usedBy string) (control.JoinToken, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[hash]
	switch {
	case !ok:
		return control.JoinToken{}, fmt.Errorf("join token: %w", store.ErrNotFound)
	case !t.UsedAt.IsZero():
		return control.JoinToken{}, fmt.Errorf("join token %s: %w", t.ID, store.ErrTokenUsed)
	case !now.Before(t.ExpiresAt):
		return control.JoinToken{}, fmt.Errorf("join token %s: %w", t.ID, store.ErrTokenExpired)
	}
	t.UsedAt, t.UsedBy = now.UTC(), usedBy
	m.tokens[hash] = t
	return t, nil
}

func (m *memStore) CreateServer(ctx context.Context, s control.Server) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, x := range m.servers {
		if x.ID == s.ID || x.Role == s.Role && x.Name == s.Name {
			return fmt.Errorf("server %s: %w", s.ID, store.ErrExists)
		}
	}
	m.servers[s.ID] = s
	return nil
}

func (m *memStore) GetServer(ctx context.Context, id string) (control.Server, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.servers[id]
	if !ok {
		return control.Server{}, fmt.Errorf("server %s: %w", id, store.ErrNotFound)
	}
	return s, nil
}

func (m *memStore) UpdateServer(ctx context.Context, s control.Server) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.servers[s.ID]
	if !ok {
		return fmt.Errorf("server %s: %w", s.ID, store.ErrNotFound)
	}
	s.Role, s.JoinedAt = old.Role, old.JoinedAt
	m.servers[s.ID] = s
	return nil
}

func (m *memStore) ListServers(ctx context.Context, role control.Role) ([]control.Server, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []control.Server
	for _, s := range m.servers {
		if role == "" || s.Role == role {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Role+control.Role(out[i].Name) < out[j].Role+control.Role(out[j].Name)
	})
	return out, nil
}

func (m *memStore) revoke(t testing.TB, id string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.servers[id]
	if !ok {
		t.Fatalf("revoke: no server %s", id)
	}
	s.Revoked = true
	m.servers[id] = s
}

// testServer is a configuration server's trust endpoints on a real TLS
// listener over loopback.
type testServer struct {
	CA       *CA
	Store    *memStore
	Reg      *Registrar
	URL      string
	Requests atomic.Int64 // requests that reached the handler
}

func mustCA(tb testing.TB) *CA {
	tb.Helper()
	ca, err := LoadOrCreateCA(filepath.Join(tb.TempDir(), "ca"))
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

func mustServer(tb testing.TB) *testServer {
	tb.Helper()
	ts := &testServer{CA: mustCA(tb), Store: newMemStore()}
	ts.Reg = &Registrar{CA: ts.CA, Store: ts.Store}
	cert, err := ts.CA.IssueServerCert([]string{"127.0.0.1", "localhost"})
	if err != nil {
		tb.Fatal(err)
	}
	h := ts.Reg.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.Requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	srv.TLS = ListenerTLS(ts.CA.Pool(), cert)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refusals are asserted on, not printed
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	ts.URL = srv.URL
	return ts
}

// token makes and stores a join token for role, valid ttl from now.
func (ts *testServer) token(tb testing.TB, role control.Role, now time.Time, ttl time.Duration) string {
	tb.Helper()
	s, tok, err := NewJoinToken(role, ttl, "user:admin", ts.CA.Pin(), now)
	if err != nil {
		tb.Fatal(err)
	}
	ts.Store.addToken(tok)
	return s
}

// join joins a role named name into a new directory.
func (ts *testServer) join(tb testing.TB, role control.Role, name string) (Identity, string) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), name)
	id, err := Join(context.Background(), JoinOptions{
		ServerURL: ts.URL, Token: ts.token(tb, role, time.Now(), time.Hour), Role: role,
		Name: name, Address: "127.0.0.1:7000", Version: "test", Dir: dir, Hosts: []string{"127.0.0.1", name},
	})
	if err != nil {
		tb.Fatalf("join %s: %v", name, err)
	}
	return id, dir
}

func mustLoad(tb testing.TB, dir string) *Local {
	tb.Helper()
	l, err := Load(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func leafOf(tb testing.TB, certPEM []byte) *x509.Certificate {
	tb.Helper()
	c, err := parseCertPEM(certPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func mustGet(tb testing.TB, url string) *http.Request {
	tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return req
}
