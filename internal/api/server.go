// Package api is the configuration server's HTTP/JSON and gRPC surface:
// the API users call (HTTP/JSON: the CLI, the console; API tokens with
// roles admin, operator and viewer) and the calls components make
// (agents, process servers and master targets; mutual TLS, identified by
// their certificates): the gRPC service of package componentpb, and the
// same calls as HTTP/JSON endpoints. Both are served by one handler on
// one listener. Every change is recorded in the audit log. The OpenAPI
// document of the HTTP API is served at /v1/openapi.json.
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Options configure a Server. Store is required.
type Options struct {
	Store store.Store
	Log   *slog.Logger
	Now   func() time.Time
	// Identify returns the identity of the component making r, from its
	// client certificate; nil refuses every component call.
	Identify func(r *http.Request) (Identity, error)
	// NewJoinToken makes a join token for role valid for ttl (the CA's
	// business: internal/trust); nil refuses token creation.
	NewJoinToken func(role control.Role, ttl time.Duration, createdBy string, now time.Time) (secret string, t control.JoinToken, err error)
	// Join and Renew serve POST /v1/join and POST /v1/renew, Revocations
	// GET /v1/crl and GET /v1/revoked, when set (internal/trust).
	Join, Renew, Revocations http.Handler
	// Version is this server's version, in GET /v1/info.
	Version string
	// Jobs runs long operations; nil: operations that need a job are
	// refused.
	Jobs Jobs
}

// Jobs submits jobs (internal/orchestrate's Runner).
type Jobs interface {
	Submit(ctx context.Context, kind, object string, params any, createdBy string) (control.Job, error)
	Cancel(ctx context.Context, id string) error
}

// Server serves the API.
type Server struct {
	o   Options
	mux *http.ServeMux
	// patterns lists the routes, for the OpenAPI document's test.
	patterns []string
	// desired wakes desired-state long polls and watches.
	desired notifier
	// revoked wakes desired-state watches when a server is revoked.
	revoked notifier
	// barriers are the consistency barriers in progress (consistency.go).
	barriers barrierSet
	// actions are the commands given to components (actions.go).
	actions actionSet
	// grpc serves the components' calls (grpc.go).
	grpc *grpc.Server
}

// handlerFunc is an API handler: it returns the response body (written
// as JSON with 200, or with the status of a *response) or an error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) (any, error)

// response is a body with a status other than 200.
type response struct {
	status int
	body   any
}

// New makes a Server.
func New(o Options) (*Server, error) {
	if o.Store == nil {
		return nil, fmt.Errorf("api: a store is required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o, mux: http.NewServeMux()}
	s.routes()
	s.grpc = s.newGRPC()
	return s, nil
}

func (s *Server) now() time.Time { return s.o.Now().UTC() }

var (
	components = []control.Role{control.RoleAgent, control.RoleProcess, control.RoleTarget}
	agents     = []control.Role{control.RoleAgent}
	targets    = []control.Role{control.RoleTarget}
)

// mux records the patterns it registers.
type recordingMux struct {
	s *Server
}

func (m recordingMux) HandleFunc(pattern string, h http.HandlerFunc) {
	m.s.patterns = append(m.s.patterns, pattern)
	m.s.mux.HandleFunc(pattern, h)
}

func (m recordingMux) Handle(pattern string, h http.Handler) {
	m.s.patterns = append(m.s.patterns, pattern)
	m.s.mux.Handle(pattern, h)
}

func (s *Server) routes() {
	m := recordingMux{s}
	viewer, operator, admin := control.UserViewer, control.UserOperator, control.UserAdmin
	m.HandleFunc("GET /v1/openapi.json", s.openAPI)
	m.HandleFunc("GET /v1/info", s.forUser(viewer, s.info))
	if s.o.Join != nil {
		m.Handle("POST /v1/join", s.o.Join)
	}
	if s.o.Renew != nil {
		m.Handle("POST /v1/renew", s.o.Renew)
	}
	if s.o.Revocations != nil {
		m.Handle("GET /v1/crl", s.o.Revocations)
		m.Handle("GET /v1/revoked", s.o.Revocations)
	}

	m.HandleFunc("GET /v1/sites", s.forUser(viewer, s.listSites))
	m.HandleFunc("POST /v1/sites", s.forUser(admin, s.createSite))
	m.HandleFunc("GET /v1/servers", s.forUser(viewer, s.listServers))
	m.HandleFunc("GET /v1/servers/{id}", s.forUser(viewer, s.getServer))
	m.HandleFunc("POST /v1/servers/{id}/revoke", s.forUser(admin, s.revokeServer))
	m.HandleFunc("GET /v1/tokens", s.forUser(admin, s.listTokens))
	m.HandleFunc("POST /v1/tokens", s.forUser(admin, s.createToken))
	m.HandleFunc("GET /v1/users", s.forUser(admin, s.listUsers))
	m.HandleFunc("POST /v1/users", s.forUser(admin, s.createUser))
	m.HandleFunc("GET /v1/groups", s.forUser(viewer, s.listGroups))
	m.HandleFunc("POST /v1/groups", s.forUser(operator, s.createGroup))
	m.HandleFunc("GET /v1/groups/{name}", s.forUser(viewer, s.getGroup))
	m.HandleFunc("PUT /v1/groups/{name}", s.forUser(operator, s.updateGroup))
	m.HandleFunc("GET /v1/machines", s.forUser(viewer, s.listMachines))
	m.HandleFunc("GET /v1/machines/{name}", s.forUser(viewer, s.getMachine))
	m.HandleFunc("GET /v1/machines/{name}/points", s.forUser(viewer, s.listPoints))
	m.HandleFunc("POST /v1/machines/{name}/protect", s.forUser(operator, s.protect))
	m.HandleFunc("POST /v1/machines/{name}/unprotect", s.forUser(operator, s.unprotect))
	m.HandleFunc("POST /v1/machines/{name}/test-failover", s.forUser(operator, s.testFailover))
	m.HandleFunc("POST /v1/machines/{name}/test-cleanup", s.forUser(operator, s.testCleanup))
	m.HandleFunc("POST /v1/machines/{name}/failover", s.forUser(operator, s.failover))
	m.HandleFunc("POST /v1/machines/{name}/planned-failover", s.forUser(operator, s.plannedFailover))
	m.HandleFunc("POST /v1/machines/{name}/reprotect", s.forUser(operator, s.reprotect))
	m.HandleFunc("POST /v1/plans/{name}/run", s.forUser(operator, s.planRun))
	m.HandleFunc("GET /v1/plans/{name}/runs", s.forUser(control.UserViewer, s.planRunList))
	m.HandleFunc("GET /v1/plans/{name}/points", s.forUser(control.UserViewer, s.planPoints))
	m.HandleFunc("GET /v1/plans/{name}/runs/{run}", s.forUser(control.UserViewer, s.planRunGet))
	m.HandleFunc("POST /v1/plans/{name}/runs/{run}/continue", s.forUser(operator, s.planSignal("continue")))
	m.HandleFunc("POST /v1/plans/{name}/runs/{run}/abort", s.forUser(operator, s.planSignal("abort")))
	m.HandleFunc("POST /v1/plans/{name}/runs/{run}/retry", s.forUser(operator, s.planRetry(false)))
	m.HandleFunc("POST /v1/plans/{name}/runs/{run}/skip", s.forUser(operator, s.planRetry(true)))
	m.HandleFunc("POST /v1/machines/{name}/failback", s.forUser(operator, s.failback))
	m.HandleFunc("POST /v1/machines/{name}/commit", s.forUser(operator, s.commit))
	m.HandleFunc("GET /v1/plans", s.forUser(viewer, s.listPlans))
	m.HandleFunc("GET /v1/plans/{name}", s.forUser(viewer, s.getPlan))
	m.HandleFunc("PUT /v1/plans/{name}", s.forUser(operator, s.applyPlan))
	m.HandleFunc("DELETE /v1/plans/{name}", s.forUser(operator, s.deletePlan))
	m.HandleFunc("GET /v1/jobs", s.forUser(viewer, s.listJobs))
	m.HandleFunc("GET /v1/jobs/{id}", s.forUser(viewer, s.getJob))
	m.HandleFunc("POST /v1/jobs/{id}/cancel", s.forUser(operator, s.cancelJob))
	m.HandleFunc("GET /v1/alerts", s.forUser(viewer, s.listAlerts))
	m.HandleFunc("GET /v1/audit", s.forUser(viewer, s.listAudit))

	m.HandleFunc("POST /v1/heartbeat", s.forComponent(components, s.heartbeat))
	m.HandleFunc("POST /v1/agent/report", s.forComponent(agents, s.agentReport))
	m.HandleFunc("POST /v1/target/points", s.forComponent(targets, s.targetPoints))
	m.HandleFunc("POST /v1/target/recovery", s.forComponent(targets, s.targetRecovery))
	m.HandleFunc("POST /v1/component/action", s.forComponent([]control.Role{control.RoleProcess, control.RoleTarget}, s.componentAction))
	m.HandleFunc("GET /v1/desired", s.forComponent(components, s.desiredState))

	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errorf(http.StatusNotFound, "no endpoint %s %s (the API is described at /v1/openapi.json)", r.Method, r.URL.Path))
	})
}

// serve runs h and writes its answer. A panic in a handler is a 500 and
// a log line, never a crashed server.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, h handlerFunc) {
	defer func() {
		if v := recover(); v != nil {
			s.o.Log.Error("api handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			writeError(w, fmt.Errorf("handler panicked: %v", v))
		}
	}()
	body, err := h(w, r)
	switch {
	case err != nil:
		if statusOf(err) >= 500 && r.Context().Err() == nil { // not a caller that went away
			s.o.Log.Error("api call", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeError(w, err)
	case body == nil:
		w.WriteHeader(http.StatusNoContent)
	default:
		if rsp, ok := body.(*response); ok {
			writeJSON(w, rsp.status, rsp.body)
			return
		}
		writeJSON(w, http.StatusOK, body)
	}
}

// audit records a change made by the caller of ctx. An audit entry that
// cannot be written is logged: the change is made already.
func (s *Server) audit(ctx context.Context, action, object string, err error, detail string) {
	result := "ok"
	if err != nil {
		result = err.Error()
	}
	e := control.AuditEntry{At: s.now(), Actor: principalOf(ctx).actor(), Action: action, Object: object, Result: result, Detail: detail}
	if _, aerr := s.o.Store.AppendAudit(context.WithoutCancel(ctx), e); aerr != nil {
		s.o.Log.Error("audit log", "action", action, "object", object, "err", aerr)
	}
}

type infoBody struct {
	Version string `json:"version"`
	User    string `json:"user"`
	Role    string `json:"role"`
	Schema  int    `json:"schema"`
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) (any, error) {
	p := principalOf(r.Context())
	v, err := s.o.Store.SchemaVersion(r.Context())
	if err != nil {
		return nil, err
	}
	return infoBody{Version: s.o.Version, User: p.user.Name, Role: string(p.user.Role), Schema: v}, nil
}
