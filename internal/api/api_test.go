package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/sqlite"
	"github.com/standby-dr/standby/internal/trust"
)

// fixture is an API server on a real SQLite store with one user of each
// role.
type fixture struct {
	t      testing.TB
	st     store.Store
	srv    *Server
	tokens map[control.UserRole]string
}

func newFixture(t testing.TB, mod ...func(*Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "standby.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := trust.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	jobs := &orchestrate.Runner{Store: st, Planners: map[string]orchestrate.Planner{
		"protect": orchestrate.PlannerFunc(func(control.Job) ([]orchestrate.StepSpec, error) {
			return []orchestrate.StepSpec{{Name: "wait", Run: func(context.Context, *orchestrate.StepRun) error { return nil }}}, nil
		}),
	}} // not run: jobs stay queued
	o := Options{Store: st, Version: "test", Jobs: jobs, NewJoinToken: func(role control.Role, ttl time.Duration, by string, now time.Time) (string, control.JoinToken, error) {
		return trust.NewJoinToken(role, ttl, by, ca.Pin(), now)
	}}
	for _, m := range mod {
		m(&o)
	}
	// Components: a registered server of each role. The real mutual-TLS
	// identity is tested with the server (internal/server); here the
	// handlers behind it are, so the identity comes from a header.
	for _, r := range control.Roles {
		if err := st.CreateServer(ctx, control.Server{ID: string(r) + "1", Role: r, Name: string(r) + "1", JoinedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	o.Identify = func(r *http.Request) (Identity, error) {
		role, id, ok := strings.Cut(r.Header.Get(testIdentity), "/")
		if !ok {
			return Identity{}, errors.New("no client certificate")
		}
		return Identity{Role: control.Role(role), ID: id}, nil
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, st: st, srv: srv, tokens: map[control.UserRole]string{}}
	for _, r := range userRoles {
		_, tok, err := CreateUser(ctx, st, string(r)+"1", r, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[r] = tok
	}
	return f
}

// testIdentity is the header the fixture's Identify reads: ROLE/ID.
const testIdentity = "X-Test-Identity"

// call makes one request as role ("" for none; "component:ROLE" for the
// registered server of that role) and returns the status and the body.
func (f *fixture) call(role control.UserRole, method, path string, body string) (int, string) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if c, ok := strings.CutPrefix(string(role), "component:"); ok {
		req.Header.Set(testIdentity, c+"/"+c+"1")
	} else if role != "" {
		req.Header.Set("Authorization", "Bearer "+f.tokens[role])
	}
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func (f *fixture) must(role control.UserRole, method, path, body string, want int) string {
	f.t.Helper()
	code, out := f.call(role, method, path, body)
	if code != want {
		f.t.Fatalf("%s %s as %q: HTTP %d, want %d: %s", method, path, role, code, want, out)
	}
	return out
}

func TestAuthentication(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, header string
		want         int
		says         string
	}{
		{"no token", "", 401, "no API token"},
		{"not bearer", "Basic abc", 401, "malformed Authorization"},
		{"join token pasted", "Bearer SBJ1.x.y.z", 401, "malformed Authorization"},
		{"unknown token", "Bearer sbu_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 401, "unknown API token"},
	} {
		req := httptest.NewRequest("GET", "/v1/machines", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		rec := httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.says) {
			t.Errorf("%s: HTTP %d %s, want %d saying %q", tc.name, rec.Code, rec.Body, tc.want, tc.says)
		}
	}
	out := f.must(control.UserViewer, "GET", "/v1/info", "", 200)
	if !strings.Contains(out, `"role":"viewer"`) {
		t.Errorf("info as viewer: %s", out)
	}
}

// Every change a viewer tries is refused (403), and so is every admin
// call an operator tries; nothing is changed.
func TestRolesAreEnforced(t *testing.T) {
	f := newFixture(t)
	for _, e := range endpoints {
		if e.method == "GET" || strings.HasPrefix(e.auth, "component") || e.auth == "none" || e.auth == "join token" {
			continue
		}
		path := strings.NewReplacer("{id}", "x", "{name}", "x").Replace(e.path)
		if code, out := f.call(control.UserViewer, e.method, path, "{}"); code != 403 {
			t.Errorf("viewer %s %s: HTTP %d %s, want 403", e.method, path, code, out)
		}
		if e.auth == "admin" {
			if code, out := f.call(control.UserOperator, e.method, path, "{}"); code != 403 {
				t.Errorf("operator %s %s: HTTP %d %s, want 403", e.method, path, code, out)
			}
		}
	}
	var audit []control.AuditEntry
	json.Unmarshal([]byte(f.must(control.UserAdmin, "GET", "/v1/audit", "", 200)), &audit)
	if len(audit) != 0 {
		t.Errorf("refused calls left %d audit entries: %+v", len(audit), audit)
	}
}

func TestGroupsUsersAndAudit(t *testing.T) {
	f := newFixture(t)
	out := f.must(control.UserOperator, "POST", "/v1/groups", `{"name": "web", "policy": {"point_interval": "5s", "rpo_threshold": "1m"}}`, 201)
	var g control.Group
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatal(err)
	}
	if g.Policy.PointInterval.D() != 5*time.Second || g.Policy.RPOThreshold.D() != time.Minute || g.Policy.Compression != control.DefaultPolicy().Compression {
		t.Errorf("group policy %+v: want the two fields given over the defaults", g.Policy)
	}
	f.must(control.UserOperator, "POST", "/v1/groups", `{"name": "web"}`, 409)
	f.must(control.UserOperator, "POST", "/v1/groups", `{"name": "bad", "policy": {"point_interval": "10ms"}}`, 400)
	f.must(control.UserOperator, "PUT", "/v1/groups/web", `{"policy": {"bandwidth_limit": 1000000}}`, 200)
	json.Unmarshal([]byte(f.must(control.UserViewer, "GET", "/v1/groups/web", "", 200)), &g)
	if g.Policy.BandwidthLimit != 1000000 || g.Policy.PointInterval.D() != 5*time.Second {
		t.Errorf("after update: %+v", g.Policy)
	}
	out = f.must(control.UserAdmin, "POST", "/v1/users", `{"name": "ops", "role": "operator"}`, 201)
	var cu createUserResponse
	json.Unmarshal([]byte(out), &cu)
	if !strings.HasPrefix(cu.Token, tokenPrefix) || cu.User.Role != control.UserOperator {
		t.Fatalf("create user: %s", out)
	}
	f.tokens["ops"] = cu.Token
	f.must("ops", "GET", "/v1/groups", "", 200)
	f.must(control.UserAdmin, "POST", "/v1/users", `{"name": "x", "role": "root"}`, 400)
	var audit []control.AuditEntry
	json.Unmarshal([]byte(f.must(control.UserViewer, "GET", "/v1/audit", "", 200)), &audit)
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Actor+" "+a.Action+" "+a.Object+" "+a.Result)
	}
	want := []string{"user:admin1 user.create user/ops ok", "user:operator1 group.update group/web ok", "user:operator1 group.create group/web ok"}
	got := strings.Join(actions, "\n")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("audit log lacks %q:\n%s", w, got)
		}
	}
}

// Bad bodies get a 4xx that says what was wrong, never a 5xx.
func TestMalformedBodies(t *testing.T) {
	f := newFixture(t)
	bodies := map[string]string{
		"empty":         "",
		"not json":      "hello",
		"truncated":     `{"name": "a`,
		"array":         `[1, 2]`,
		"unknown field": `{"name": "a", "nmae": "b"}`,
		"wrong type":    `{"name": 12}`,
		"two values":    `{"name": "a"} {"name": "b"}`,
		"huge":          `{"name": "` + strings.Repeat("a", 2<<20) + `"}`,
		"null":          `null`,
	}
	for _, e := range endpoints {
		if e.method == "GET" || e.auth == "none" || e.auth == "join token" || e.path == "/v1/renew" {
			continue
		}
		caller := control.UserAdmin
		if roles, ok := strings.CutPrefix(e.auth, "component:"); ok {
			caller = control.UserRole("component:" + strings.Split(roles, ",")[0])
		}
		path := strings.NewReplacer("{id}", "x", "{name}", "web").Replace(e.path)
		for name, b := range bodies {
			code, out := f.call(caller, e.method, path, b)
			if code < 400 || code >= 500 {
				if name == "null" && code < 400 {
					continue // null decodes as an empty request, which may be valid
				}
				t.Errorf("%s %s with %s body: HTTP %d %s, want 4xx", e.method, path, name, code, out)
			}
			var eb errorBody
			if code >= 400 && (json.Unmarshal([]byte(out), &eb) != nil || eb.Error == "") {
				t.Errorf("%s %s with %s body: HTTP %d without a JSON error: %s", e.method, path, name, code, out)
			}
		}
	}
}

// The OpenAPI document describes every route the server has, and no other.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.Join, o.Renew, o.Revocations = http.NotFoundHandler(), http.NotFoundHandler(), http.NotFoundHandler()
	})
	documented := map[string]bool{}
	for _, e := range endpoints {
		documented[e.method+" "+e.path] = true
	}
	for _, p := range f.srv.patterns {
		if !documented[p] {
			t.Errorf("route %s is not in the OpenAPI document", p)
		}
		delete(documented, p)
	}
	for p := range documented {
		t.Errorf("the OpenAPI document has %s, which the server does not serve", p)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(f.must("", "GET", "/v1/openapi.json", "", 200)), &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	for _, n := range []string{"ControlMachine", "ControlPolicy", "ControlJob", "Error"} {
		if schemas[n] == nil {
			t.Errorf("OpenAPI schemas lack %s", n)
		}
	}
}

// FuzzHandlers: no request, however malformed, makes the server answer
// 5xx or panic.
func FuzzHandlers(f *testing.F) {
	fx := newFixture(f)
	for _, e := range endpoints {
		f.Add(e.method, e.path, `{}`, 3)
	}
	f.Add("POST", "/v1/groups", `{"name":"g","policy":{"retention":{"max":-1}}}`, 2)
	f.Add("GET", "/v1/machines/x/points?at=garbage", ``, 1)
	f.Fuzz(func(t *testing.T, method, path, body string, role int) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") || !validMethod(method) {
			return
		}
		// Users of each role, and components of each role.
		callers := []string{"admin", "operator", "viewer", "agent", "process", "target"}
		r := callers[uint(role)%uint(len(callers))]
		req, err := http.NewRequest(method, "http://x"+path, bytes.NewBufferString(body))
		if err != nil {
			return
		}
		if tok, ok := fx.tokens[control.UserRole(r)]; ok {
			req.Header.Set("Authorization", "Bearer "+tok)
		} else {
			req.Header.Set(testIdentity, r+"/"+r+"1")
		}
		rec := httptest.NewRecorder()
		fx.srv.Handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q as %s: HTTP %d %s", method, path, body, r, rec.Code, rec.Body)
		}
	})
}

func validMethod(m string) bool {
	switch m {
	case "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD":
		return true
	}
	return false
}
