// Package server is the configuration server role (`standby server`): it
// opens the store, loads the internal CA, serves the API over HTTPS
// (users with API tokens, components with the client certificates the CA
// issued at join), assesses every machine's health, raises and clears
// alerts, and sends them to a webhook.
package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/open"
	"github.com/standby-dr/standby/internal/trust"
)

// Files in the data directory.
const (
	caDir      = "ca"          // the CA's key and certificate
	caFile     = "ca.crt"      // the CA certificate, for clients' --ca
	adminToken = "admin.token" // the first admin's API token, written once
)

// Options configure a Server.
type Options struct {
	Config  Config
	Log     *slog.Logger
	Version string
	// AssessEvery is the period of the health assessment; 0: 5 s.
	AssessEvery time.Duration
	// HeartbeatLost is how long an agent may stay silent before its
	// protected machines go critical; 0: 60 s.
	HeartbeatLost time.Duration
	Now           func() time.Time
}

// Server is a running configuration server.
type Server struct {
	o     Options
	st    store.Store
	ca    *trust.CA
	reg   *trust.Registrar
	api   *api.Server
	cert  tls.Certificate
	hooks *webhook
	jobs  *orchestrate.Runner

	mu       sync.Mutex
	previous map[string]control.ReplicationReport // last assessed report per machine

	verified verifiedCerts
	changes  changes // machines written: waiting jobs look again
}

// verifiedCerts remembers the certificates whose chain was verified: a
// component sends thousands of calls over one connection, and an ECDSA
// chain verification per call was the server's largest cost with many
// agents. An entry holds until the certificate expires; revocation is
// checked per call against the store (api forComponent), not here.
type verifiedCerts struct {
	mu sync.Mutex
	m  map[[32]byte]verifiedCert
}

type verifiedCert struct {
	id       trust.Identity
	notAfter time.Time
}

// maxVerified bounds the cache; past it, it starts again empty.
const maxVerified = 100_000

func (v *verifiedCerts) verify(ver *trust.Verifier, chain []*x509.Certificate, now time.Time) (trust.Identity, error) {
	if len(chain) == 0 {
		return ver.Verify(chain) // its error says what is missing
	}
	key := sha256.Sum256(chain[0].Raw)
	v.mu.Lock()
	c, ok := v.m[key]
	v.mu.Unlock()
	if ok && now.Before(c.notAfter) {
		return c.id, nil
	}
	id, err := ver.Verify(chain)
	if err != nil {
		return id, err
	}
	v.mu.Lock()
	if v.m == nil || len(v.m) >= maxVerified {
		v.m = map[[32]byte]verifiedCert{}
	}
	v.m[key] = verifiedCert{id: id, notAfter: chain[0].NotAfter}
	v.mu.Unlock()
	return id, nil
}

func parseValidity(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 720h", s)
	}
	if d < time.Hour || d > 5*365*24*time.Hour {
		return 0, fmt.Errorf("%s: want 1h to 43800h", s)
	}
	return d, nil
}

// New opens the store and the CA, and makes the first admin when there
// is no user yet (its token goes to DataDir/admin.token, mode 0600).
func New(ctx context.Context, o Options) (*Server, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("configuration:\n%w", err)
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AssessEvery == 0 {
		o.AssessEvery = 5 * time.Second
	}
	if o.HeartbeatLost == 0 {
		o.HeartbeatLost = 60 * time.Second
	}
	dir := o.Config.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := trust.LoadOrCreateCA(filepath.Join(dir, caDir))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, caFile), ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	cert, err := ca.IssueServerCert(o.Config.Hosts)
	if err != nil {
		return nil, err
	}
	st, err := open.Open(ctx, o.Config.StoreURL())
	if err != nil {
		return nil, err
	}
	validity, _ := parseValidity(o.Config.CertValidity)
	s := &Server{o: o, ca: ca, cert: cert, previous: map[string]control.ReplicationReport{}, hooks: newWebhook(o.Config.AlertWebhook, o.Log)}
	s.st = notifyingStore{Store: st, c: &s.changes}
	s.reg = &trust.Registrar{CA: ca, Store: st, Validity: validity, Now: o.Now, Log: o.Log,
		Audit: func(ctx context.Context, e control.AuditEntry) {
			if _, err := st.AppendAudit(context.WithoutCancel(ctx), e); err != nil {
				o.Log.Error("audit log", "action", e.Action, "err", err)
			}
		}}
	s.jobs = &orchestrate.Runner{Store: st, Log: o.Log, Now: o.Now, Planners: map[string]orchestrate.Planner{
		JobProtect:             orchestrate.PlannerFunc(s.protectPlanner),
		api.JobTestFailover:    orchestrate.PlannerFunc(s.testFailoverPlanner),
		api.JobFailover:        orchestrate.PlannerFunc(s.failoverPlanner),
		api.JobCommit:          orchestrate.PlannerFunc(s.commitPlanner),
		api.JobPlannedFailover: orchestrate.PlannerFunc(s.plannedFailoverPlanner),
		api.JobReprotect:       orchestrate.PlannerFunc(s.reprotectPlanner),
		api.JobFailback:        orchestrate.PlannerFunc(s.failbackPlanner),
		api.JobPlanRun:         orchestrate.PlannerFunc(s.planRunPlanner),
		api.JobTestCleanup:     orchestrate.PlannerFunc(s.testCleanupPlanner),
	}}
	regHandler := s.reg.Handler()
	// Every component call is checked against the CA, whatever the
	// listener let through; revocation and registration are checked by
	// the API on every call, against the store.
	verifier := &trust.Verifier{Roots: ca.Pool(), Roles: control.Roles, Now: o.Now}
	s.api, err = api.New(api.Options{
		Store: s.st, Log: o.Log, Now: o.Now, Version: o.Version,
		Identify: func(r *http.Request) (api.Identity, error) {
			if r.TLS == nil {
				return api.Identity{}, errors.New("component calls need TLS with a client certificate")
			}
			id, err := s.verified.verify(verifier, r.TLS.PeerCertificates, o.Now())
			if errors.Is(err, trust.ErrRevoked) || errors.Is(err, trust.ErrWrongRole) {
				err = fmt.Errorf("%w: %w", api.ErrPeerForbidden, err)
			}
			return api.Identity{Role: id.Role, ID: id.ID}, err
		},
		NewJoinToken: func(role control.Role, ttl time.Duration, by string, now time.Time) (string, control.JoinToken, error) {
			return trust.NewJoinToken(role, ttl, by, ca.Pin(), now)
		},
		Join: regHandler, Renew: regHandler, Revocations: regHandler,
		Jobs: s.jobs,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	if err := s.bootstrapAdmin(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// bootstrapAdmin makes user "admin" when the store has no user, and
// writes its token where only root reads it.
func (s *Server) bootstrapAdmin(ctx context.Context) error {
	users, err := s.st.ListUsers(ctx)
	if err != nil || len(users) > 0 {
		return err
	}
	_, token, err := api.CreateUser(ctx, s.st, "admin", control.UserAdmin, s.o.Now().UTC())
	if err != nil {
		return fmt.Errorf("first admin: %w", err)
	}
	path := filepath.Join(s.o.Config.DataDir, adminToken)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("first admin: %w", err)
	}
	s.o.Log.Info("made the first admin user; its API token is in "+path, "user", "admin")
	return nil
}

// Store is the server's store (tests).
func (s *Server) Store() store.Store { return s.st }

// CA is the server's CA.
func (s *Server) CA() *trust.CA { return s.ca }

// Handler is the API (tests call it without TLS for user calls).
func (s *Server) Handler() http.Handler { return s.api.Handler() }

// TLSConfig is the listener's: the server's certificate; client
// certificates asked for and, when given, checked against the CA and
// revocations (the join call comes without one).
func (s *Server) TLSConfig() *tls.Config {
	return trust.ListenerTLS(s.ca.Pool(), s.cert)
}

// Serve serves the API on ln until ctx ends, and runs the health
// assessment meanwhile.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.api.Handler(), TLSConfig: s.TLSConfig(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.o.Log.Handler(), slog.LevelDebug)}
	// The components' gRPC calls come on this listener too (api.Handler
	// routes them); their desired-state watches would hold Shutdown up.
	hs.RegisterOnShutdown(s.api.StopStreams)
	// Jobs a previous run left running go on (or fail cleanly) first.
	if n, err := s.jobs.Resume(ctx); err != nil {
		return fmt.Errorf("resume jobs: %w", err)
	} else if n > 0 {
		s.o.Log.Info("resumed jobs left by the previous run", "jobs", n)
	}
	jctx, stopJobs := context.WithCancel(ctx)
	defer stopJobs()
	go s.jobs.Run(jctx)
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.jobs.Close(cctx)
	}()
	errc := make(chan error, 2)
	go func() { errc <- hs.ServeTLS(ln, "", "") }()
	if s.o.Config.Status != "" {
		sl, err := net.Listen("tcp", s.o.Config.Status)
		if err != nil {
			return fmt.Errorf("status listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", s.MetricsHandler())
		ss := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- ss.Serve(sl) }()
		defer ss.Close()
	}
	go s.assessLoop(ctx)
	if every, _ := s.o.Config.consistencyInterval(); every > 0 {
		go s.consistencyLoop(ctx, every)
	}
	go s.drillLoop(ctx)
	s.o.Log.Info("configuration server listening", "addr", ln.Addr().String(), "store", redact(s.o.Config.StoreURL()))
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		return nil
	case err := <-errc:
		return err
	}
}

// Close closes the store.
func (s *Server) Close() error {
	s.hooks.close()
	return s.st.Close()
}

func (s *Server) assessLoop(ctx context.Context) {
	t := time.NewTicker(s.o.AssessEvery)
	defer t.Stop()
	for {
		if err := s.Assess(ctx); err != nil && ctx.Err() == nil {
			s.o.Log.Error("health assessment", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Assess assesses every machine's health, moves machines whose agent
// went silent to critical, and raises and clears alerts.
func (s *Server) Assess(ctx context.Context) error {
	now := s.o.Now().UTC()
	servers, err := s.st.ListServers(ctx, "")
	if err != nil {
		return err
	}
	byID := map[string]control.Server{}
	for _, srv := range servers {
		byID[srv.ID] = srv
	}
	machines, err := s.st.ListMachines(ctx, store.MachineFilter{})
	if err != nil {
		return err
	}
	groups := map[string]control.Policy{}
	var inputs []control.HealthInput
	for _, m := range machines {
		pol, ok := groups[m.Group]
		if !ok && m.Group != "" {
			g, err := s.st.GetGroup(ctx, m.Group)
			if err != nil {
				return err
			}
			pol, groups[m.Group] = g.Policy, g.Policy
		}
		s.mu.Lock()
		prev := s.previous[m.ID]
		s.previous[m.ID] = m.Replication
		s.mu.Unlock()
		ag, pr, tg, _ := m.Replicating()
		in := control.HealthInput{Machine: m, Policy: pol, Agent: byID[ag], Process: byID[pr], Target: byID[tg], Previous: prev}
		h, reasons := control.AssessHealth(in, now)
		state := m.State
		if agent := byID[ag]; agent.ID != "" && now.Sub(agent.HeartbeatAt) > s.o.HeartbeatLost {
			if next, err := control.Transition(m.State, control.EventHeartbeatLost); err == nil {
				state = next
			}
		}
		if h != m.Health || state != m.State || !equalStrings(reasons, m.HealthReasons) {
			before := m.State
			m.Health, m.HealthReasons, m.State = h, reasons, state
			upd, err := s.st.UpdateMachine(ctx, m)
			switch {
			case errors.Is(err, store.ErrConflict):
				continue // a report came meanwhile: the next round sees it
			case err != nil:
				return err
			}
			m = upd
			if state != before {
				s.st.AppendAudit(ctx, control.AuditEntry{At: now, Actor: "system", Action: "machine.state", Object: "machine/" + m.Name, Result: "ok", Detail: fmt.Sprintf("%s -> %s (agent heartbeat lost)", before, state)})
			}
		}
		in.Machine = m
		inputs = append(inputs, in)
	}
	drills, err := s.drillInputs(ctx)
	if err != nil {
		return err
	}
	return s.syncAlerts(ctx, control.DesiredAlerts(control.AlertInput{Machines: inputs, Servers: servers, Drills: drills}, now), now)
}

// syncAlerts raises the desired alerts and clears the active ones that
// are not desired any more; new and cleared alerts go to the webhook.
func (s *Server) syncAlerts(ctx context.Context, want []control.Alert, now time.Time) error {
	active, err := s.st.ListAlerts(ctx, true)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, a := range want {
		keep[a.Key] = true
		stored, isNew, err := s.st.RaiseAlert(ctx, a)
		if err != nil {
			return err
		}
		if isNew {
			s.o.Log.Warn("alert raised", "key", stored.Key, "severity", stored.Severity, "message", stored.Message)
			s.hooks.send("raised", stored)
		}
	}
	for _, a := range active {
		if keep[a.Key] {
			continue
		}
		if err := s.st.ClearAlert(ctx, a.Key, now); err != nil {
			return err
		}
		a.ClearedAt = now
		s.o.Log.Info("alert cleared", "key", a.Key)
		s.hooks.send("cleared", a)
	}
	return nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// webhook posts alert events to a URL, one at a time, in order, with a
// bounded queue: a slow or dead receiver never stalls the assessment.
type webhook struct {
	url  string
	log  *slog.Logger
	q    chan webhookEvent
	done chan struct{}
}

type webhookEvent struct {
	Event string        `json:"event"` // raised or cleared
	Alert control.Alert `json:"alert"`
}

func newWebhook(url string, log *slog.Logger) *webhook {
	w := &webhook{url: url, log: log, q: make(chan webhookEvent, 256), done: make(chan struct{})}
	if url == "" {
		close(w.done)
		return w
	}
	go w.run()
	return w
}

func (w *webhook) send(event string, a control.Alert) {
	if w.url == "" {
		return
	}
	select {
	case w.q <- webhookEvent{Event: event, Alert: a}:
	default:
		w.log.Warn("alert webhook queue full: event dropped", "key", a.Key, "event", event)
	}
}

func (w *webhook) run() {
	defer close(w.done)
	c := &http.Client{Timeout: 10 * time.Second}
	for ev := range w.q {
		b, _ := json.Marshal(ev)
		for attempt := 0; attempt < 3; attempt++ {
			resp, err := c.Post(w.url, "application/json", bytes.NewReader(b))
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 300 {
					break
				}
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			w.log.Warn("alert webhook", "url", w.url, "attempt", attempt+1, "err", err)
			time.Sleep(time.Duration(attempt+1) * time.Second)
		}
	}
}

func (w *webhook) close() {
	if w.url != "" {
		close(w.q)
	}
	<-w.done
}

// redact hides a password in a store URL, for logs.
func redact(store string) string {
	if u, err := url.Parse(store); err == nil && u.User != nil {
		return u.Redacted()
	}
	return store
}
