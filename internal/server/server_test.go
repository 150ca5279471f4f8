package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// clock is the server's clock in these tests: real time plus an offset
// the test moves forward.
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// deployment is a configuration server on loopback with real TLS and a
// client for its first admin.
type deployment struct {
	t     *testing.T
	s     *Server
	url   string
	dir   string
	admin *client.Client
	clock *clock
	// stop stops the server (and is done at cleanup if the test did not).
	stop func()
}

func startServer(t *testing.T, mod ...func(*Config)) *deployment {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	cfg := Defaults()
	cfg.Listen, cfg.DataDir = "127.0.0.1:0", dir
	for _, m := range mod {
		m(&cfg)
	}
	ck := &clock{}
	s, err := New(ctx, Options{Config: cfg, Version: "test", AssessEvery: time.Hour, Now: ck.now})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			s.Close()
		})
	}
	t.Cleanup(stop)
	tok, err := os.ReadFile(filepath.Join(dir, adminToken))
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{t: t, s: s, url: "https://" + ln.Addr().String(), dir: dir, clock: ck, stop: stop}
	d.admin = d.user(strings.TrimSpace(string(tok)))
	return d
}

func (d *deployment) user(token string) *client.Client {
	c, err := client.New(client.Options{Server: d.url, Token: token, CAFile: filepath.Join(d.dir, caFile)})
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

func (d *deployment) call(c *client.Client, method, path string, body, out any) {
	d.t.Helper()
	if err := c.Do(context.Background(), method, path, body, out); err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// joinToken makes a join token as the admin.
func (d *deployment) joinToken(role control.Role, ttl string) string {
	var r struct {
		Token string `json:"token"`
	}
	d.call(d.admin, "POST", "/v1/tokens", map[string]string{"role": string(role), "ttl": ttl}, &r)
	return r.Token
}

// component is a joined agent, process server or master target, calling
// the API with its certificate.
type component struct {
	id   trust.Identity
	dir  string
	http *http.Client
	d    *deployment
}

func (d *deployment) join(role control.Role, name, addr string) *component {
	d.t.Helper()
	dir := d.t.TempDir()
	id, err := trust.Join(context.Background(), trust.JoinOptions{ServerURL: d.url, Token: d.joinToken(role, "10m"), Role: role, Name: name, Address: addr, Dir: dir})
	if err != nil {
		d.t.Fatalf("join %s %s: %v", role, name, err)
	}
	l, err := trust.Load(dir)
	if err != nil {
		d.t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{l.Cert}, RootCAs: l.Roots, MinVersion: tls.VersionTLS13}
	return &component{id: id, dir: dir, d: d, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}}
}

// do calls the API as the component; it returns the status and body.
func (c *component) do(method, path string, body any) (int, string) {
	c.d.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, c.d.url+path, rd)
	resp, err := c.http.Do(req)
	if err != nil {
		c.d.t.Fatalf("%s %s as %s: %v", method, path, c.id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *component) must(method, path string, body any, want int) string {
	c.d.t.Helper()
	code, out := c.do(method, path, body)
	if code != want {
		c.d.t.Fatalf("%s %s as %s: HTTP %d, want %d: %s", method, path, c.id, code, want, out)
	}
	return out
}

func (d *deployment) machine(name string) control.Machine {
	var m control.Machine
	d.call(d.admin, "GET", "/v1/machines/"+name, nil, &m)
	return m
}

// The whole protection life cycle through the API, with real TLS and
// joined components: join, heartbeats, discovery, protect (servers picked
// by capacity), desired state by long poll, state moved on by the agent's
// reports, points catalogue, health and alerts (to a webhook) when the
// agent goes silent, unprotect.
func TestProtectionLifeCycle(t *testing.T) {
	var hookMu sync.Mutex
	var hooks []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		hooks = append(hooks, string(b))
		hookMu.Unlock()
	}))
	defer hook.Close()
	d := startServer(t, func(c *Config) { c.AlertWebhook = hook.URL })
	ctx := context.Background()

	target := d.join(control.RoleTarget, "mt1", "127.0.0.1:9830")
	busy := d.join(control.RoleProcess, "ps-busy", "127.0.0.1:9821")
	idle := d.join(control.RoleProcess, "ps-idle", "127.0.0.1:9822")
	agent := d.join(control.RoleAgent, "host1", "")
	target.must("POST", "/v1/heartbeat", map[string]any{"version": "t", "address": "127.0.0.1:9830", "capacity": map[string]any{"machines": 0}}, 204)
	busy.must("POST", "/v1/heartbeat", map[string]any{"version": "t", "address": "127.0.0.1:9821", "capacity": map[string]any{"machines": 5}}, 204)
	idle.must("POST", "/v1/heartbeat", map[string]any{"version": "t", "address": "127.0.0.1:9822", "capacity": map[string]any{"machines": 1}}, 204)
	agent.must("POST", "/v1/heartbeat", map[string]any{"version": "t"}, 204)
	report := func(state string) control.Machine {
		var m control.Machine
		out := agent.must("POST", "/v1/agent/report", map[string]any{"id": "m-web01", "name": "web01",
			"disks": []map[string]any{{"name": "vda", "size": 1 << 30}}, "replication": map[string]any{"state": state, "rpo_seconds": 0.4}}, 200)
		json.Unmarshal([]byte(out), &m)
		return m
	}
	if m := report("connecting"); m.State != control.StateUnprotected {
		t.Fatalf("a new machine is %s, want unprotected", m.State)
	}

	// Nothing desired yet; a long poll waits for the change.
	var des struct {
		Version  string `json:"version"`
		Machines []struct {
			ID      string `json:"id"`
			Process *struct {
				ID, Address string
			} `json:"process"`
			Policy control.Policy `json:"policy"`
		} `json:"machines"`
	}
	json.Unmarshal([]byte(agent.must("GET", "/v1/desired", nil, 200)), &des)
	if len(des.Machines) != 0 {
		t.Fatalf("desired before protect: %+v", des)
	}
	polled := make(chan string, 1)
	go func() {
		_, out := agent.do("GET", "/v1/desired?have="+des.Version+"&wait=20s", nil)
		polled <- out
	}()

	var op struct {
		Token string `json:"token"`
	}
	d.call(d.admin, "POST", "/v1/users", map[string]string{"name": "ops", "role": "operator"}, &op)
	ops := d.user(op.Token)
	d.call(ops, "POST", "/v1/groups", map[string]any{"name": "web", "policy": map[string]any{"point_interval": "5s"}}, nil)
	var pr struct {
		Machine control.Machine `json:"machine"`
		Job     control.Job     `json:"job"`
	}
	d.call(ops, "POST", "/v1/machines/web01/protect", map[string]string{"group": "web"}, &pr)
	m, job := pr.Machine, pr.Job
	if job.Kind != "protect" || job.Object != "machine/web01" {
		t.Fatalf("protect made job %+v", job)
	}
	if m.State != control.StateEnabling || m.Process != idle.id.ID || m.Target != target.id.ID {
		t.Fatalf("after protect: state %s, process %s (want the idle %s), target %s", m.State, m.Process, idle.id.ID, m.Target)
	}
	select {
	case out := <-polled:
		json.Unmarshal([]byte(out), &des)
		if len(des.Machines) != 1 || des.Machines[0].Process == nil || des.Machines[0].Process.Address != "127.0.0.1:9822" || des.Machines[0].Policy.PointInterval.D() != 5*time.Second {
			t.Fatalf("the long poll answered %s", out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the desired-state long poll did not wake on protect")
	}
	// The same through the components' client.
	cc, err := client.NewComponent(d.url, agent.dir)
	if err != nil {
		t.Fatal(err)
	}
	cd, err := cc.Desired(ctx, "", 0)
	if err != nil || len(cd.Machines) != 1 || cd.Machines[0].Process.ID != idle.id.ID || cd.Version != des.Version {
		t.Fatalf("component client's desired state: %+v, %v (long poll said version %s)", cd, err, des.Version)
	}
	var pdes struct {
		Machines []struct {
			Target *struct{ ID, Address string } `json:"target"`
		} `json:"machines"`
	}
	json.Unmarshal([]byte(idle.must("GET", "/v1/desired", nil, 200)), &pdes)
	if len(pdes.Machines) != 1 || pdes.Machines[0].Target.Address != "127.0.0.1:9830" {
		t.Fatalf("process server's desired state: %+v", pdes)
	}

	if m := report("initial-replication"); m.State != control.StateInitialReplication {
		t.Fatalf("after the agent's stream: %s", m.State)
	}
	if m := report("protected"); m.State != control.StateProtected {
		t.Fatalf("after the initial copy: %s", m.State)
	}
	waitFor(t, "the protect job to succeed", func() bool {
		d.call(ops, "GET", "/v1/jobs/"+job.ID, nil, &job)
		return job.State.Done()
	})
	if job.State != control.JobSucceeded || job.Progress != 1 || !strings.Contains(job.Result, "protected") {
		t.Fatalf("protect job ended %s (progress %.2f, result %q, error %q)", job.State, job.Progress, job.Result, job.Error)
	}
	now := d.clock.now().UTC()
	target.must("POST", "/v1/target/points", map[string]any{"machine": "m-web01", "points": []map[string]any{
		{"id": 1, "seq": 10, "time": now.Add(-time.Minute), "app_consistent": true, "label": "app"},
		{"id": 2, "seq": 20, "time": now.Add(-10 * time.Second)},
	}}, 204)
	busy.must("POST", "/v1/target/points", map[string]any{"machine": "m-web01", "points": []any{}}, 403) // a process server is not a target
	var pts struct {
		Points    []control.RecoveryPoint `json:"points"`
		Latest    *control.RecoveryPoint  `json:"latest"`
		LatestApp *control.RecoveryPoint  `json:"latest_app_consistent"`
	}
	d.call(ops, "GET", "/v1/machines/web01/points", nil, &pts)
	if len(pts.Points) != 2 || pts.Latest.ID != 2 || pts.LatestApp.ID != 1 {
		t.Fatalf("points: %+v", pts)
	}

	// The agent goes silent: the machine goes critical, an alert is
	// raised and posted; it comes back and reports: cleared.
	d.clock.advance(3 * time.Minute)
	for _, c := range []*component{target, idle, busy} {
		c.must("POST", "/v1/heartbeat", map[string]any{"version": "t"}, 204)
	}
	if err := d.s.Assess(ctx); err != nil {
		t.Fatal(err)
	}
	if m := d.machine("web01"); m.State != control.StateCritical || m.Health != control.HealthCritical {
		t.Fatalf("agent silent 3 min: state %s health %s %v", m.State, m.Health, m.HealthReasons)
	}
	var alerts []control.Alert
	d.call(ops, "GET", "/v1/alerts", nil, &alerts)
	if !hasAlert(alerts, "heartbeat/"+agent.id.ID) {
		t.Fatalf("alerts: %+v", alerts)
	}
	agent.must("POST", "/v1/heartbeat", map[string]any{"version": "t"}, 204)
	if m := report("protected"); m.State != control.StateProtected {
		t.Fatalf("agent back, protected: %s", m.State)
	}
	target.must("POST", "/v1/target/points", map[string]any{"machine": "m-web01", "points": []map[string]any{{"id": 3, "seq": 30, "time": d.clock.now().UTC()}}}, 204)
	if err := d.s.Assess(ctx); err != nil {
		t.Fatal(err)
	}
	d.call(ops, "GET", "/v1/alerts", nil, &alerts)
	if hasAlert(alerts, "heartbeat/"+agent.id.ID) {
		t.Fatalf("heartbeat alert still active: %+v", alerts)
	}
	waitFor(t, "the webhook to get the raise and the clear", func() bool {
		hookMu.Lock()
		defer hookMu.Unlock()
		all := strings.Join(hooks, "\n")
		return strings.Contains(all, `"event":"raised"`) && strings.Contains(all, `"event":"cleared"`) && strings.Contains(all, "heartbeat/"+agent.id.ID)
	})

	rec := httptest.NewRecorder()
	d.s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`standby_machine_rpo_seconds{machine="web01"} 0.4`, `standby_machine_state{machine="web01",state="protected"} 1`,
		`standby_machine_health{health=`, `standby_server_heartbeat_age_seconds{name="mt1"`, `standby_jobs{kind="protect",state="succeeded"} 1`,
		`standby_job_duration_seconds_count{kind="protect"} 1`, `standby_alerts_active{severity="critical"} 0`, `standby_server_store_up 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, rec.Body)
		}
	}

	m = control.Machine{} // omitempty fields absent from the answer must not keep old values
	d.call(ops, "POST", "/v1/machines/web01/unprotect", map[string]any{}, &m)
	if m.State != control.StateUnprotected || m.Process != "" {
		t.Fatalf("after unprotect: %+v", m)
	}
	json.Unmarshal([]byte(agent.must("GET", "/v1/desired", nil, 200)), &des)
	if len(des.Machines) != 0 {
		t.Fatalf("desired after unprotect: %+v", des)
	}
}

func hasAlert(as []control.Alert, key string) bool {
	for _, a := range as {
		if a.Key == key && a.Active() {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Abuse of the component and join paths is refused with clear errors.
func TestComponentAbuse(t *testing.T) {
	d := startServer(t)
	agent := d.join(control.RoleAgent, "host1", "")
	target := d.join(control.RoleTarget, "mt1", "127.0.0.1:9830")

	// A token works once, and not after it expired.
	tok := d.joinToken(control.RoleAgent, "1m")
	if _, err := trust.Join(context.Background(), trust.JoinOptions{ServerURL: d.url, Token: tok, Role: control.RoleAgent, Name: "host2", Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	_, err := trust.Join(context.Background(), trust.JoinOptions{ServerURL: d.url, Token: tok, Role: control.RoleAgent, Name: "host3", Dir: t.TempDir()})
	if !errors.Is(err, trust.ErrTokenUsed) {
		t.Errorf("second join with one token: %v, want ErrTokenUsed", err)
	}
	tok = d.joinToken(control.RoleAgent, "1m")
	d.clock.advance(2 * time.Minute)
	_, err = trust.Join(context.Background(), trust.JoinOptions{ServerURL: d.url, Token: tok, Role: control.RoleAgent, Name: "host4", Dir: t.TempDir()})
	if !errors.Is(err, trust.ErrTokenExpired) {
		t.Errorf("join with an expired token: %v, want ErrTokenExpired", err)
	}

	// A certificate of the wrong role.
	if code, out := agent.do("POST", "/v1/target/points", map[string]any{"machine": "x", "points": []any{}}); code != 403 || !strings.Contains(out, "for target") {
		t.Errorf("agent posting points: HTTP %d %s, want 403 naming the role", code, out)
	}
	// No certificate at all on a component endpoint.
	anon := &component{d: d, http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: d.s.CA().Pool()}}}}
	if code, out := anon.do("POST", "/v1/heartbeat", map[string]any{}); code != 401 {
		t.Errorf("heartbeat without a certificate: HTTP %d %s, want 401", code, out)
	}
	// A certificate of another CA: the handshake fails.
	other, err := trust.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.IssueServerCert([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	alien := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: d.s.CA().Pool(), Certificates: []tls.Certificate{stranger}}}}
	if resp, err := alien.Post(d.url+"/v1/heartbeat", "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		t.Errorf("a certificate of another CA got HTTP %d", resp.StatusCode)
	}
	// A revoked server.
	d.call(d.admin, "POST", "/v1/servers/"+target.id.ID+"/revoke", nil, nil)
	if code, out := target.do("POST", "/v1/heartbeat", map[string]any{"version": "t"}); code != 403 || !strings.Contains(out, "revoked") {
		t.Errorf("revoked target's heartbeat: HTTP %d %s, want 403 saying revoked", code, out)
	}
	// Malformed bodies from a component: 4xx.
	for _, body := range []string{"", "{", `{"version": 1}`, `{"nope": true}`} {
		req, _ := http.NewRequest("POST", d.url+"/v1/agent/report", strings.NewReader(body))
		resp, err := agent.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("agent report %q: HTTP %d, want 4xx", body, resp.StatusCode)
		}
	}
}
