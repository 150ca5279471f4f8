package api

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// endpoint describes one route for the OpenAPI document. The schemas are
// generated from the Go types the handlers decode and return, so the
// document cannot drift from the code.
type endpoint struct {
	method, path, summary string
	auth                  string // "viewer", "operator", "admin", "component:ROLES", "none", "join token"
	req, resp             any
	status                int // success status; 0: 200
}

var endpoints = []endpoint{
	{"GET", "/v1/openapi.json", "This document", "none", nil, nil, 0},
	{"GET", "/v1/info", "Server version, the caller's user and role, schema version", "viewer", nil, infoBody{}, 0},
	{"POST", "/v1/join", "Join: exchange a one-time join token and a CSR for a certificate naming role and server ID", "join token", nil, nil, 0},
	{"POST", "/v1/renew", "Renew a component's certificate (mutual TLS, same identity)", "component:agent,process,target", nil, nil, 0},
	{"GET", "/v1/crl", "The CA's certificate revocation list (DER)", "none", nil, nil, 0},
	{"GET", "/v1/revoked", "Revoked servers by identity, for roles' connection checks", "component:agent,process,target", nil, nil, 0},
	{"GET", "/v1/sites", "List sites", "viewer", nil, []control.Site{}, 0},
	{"POST", "/v1/sites", "Create a site", "admin", createSiteRequest{}, control.Site{}, 201},
	{"GET", "/v1/servers", "List registered servers (?role=agent|process|target)", "viewer", nil, []control.Server{}, 0},
	{"GET", "/v1/servers/{id}", "One registered server", "viewer", nil, control.Server{}, 0},
	{"POST", "/v1/servers/{id}/revoke", "Revoke a server: its certificate is refused on every call", "admin", nil, control.Server{}, 0},
	{"GET", "/v1/tokens", "List join tokens (not their secrets)", "admin", nil, []control.JoinToken{}, 0},
	{"POST", "/v1/tokens", "Make a one-time, expiring join token that pins the CA", "admin", createTokenRequest{}, createTokenResponse{}, 201},
	{"GET", "/v1/users", "List API users", "admin", nil, []control.User{}, 0},
	{"POST", "/v1/users", "Create an API user; the token is in the answer only", "admin", createUserRequest{}, createUserResponse{}, 201},
	{"GET", "/v1/groups", "List protection groups", "viewer", nil, []control.Group{}, 0},
	{"POST", "/v1/groups", "Create a protection group; policy fields left out take their defaults", "operator", groupRequest{}, control.Group{}, 201},
	{"GET", "/v1/groups/{name}", "One protection group", "viewer", nil, control.Group{}, 0},
	{"PUT", "/v1/groups/{name}", "Change a group's policy; fields left out keep their values", "operator", groupRequest{}, control.Group{}, 0},
	{"GET", "/v1/machines", "List machines (?group=NAME, ?protected=true)", "viewer", nil, []control.Machine{}, 0},
	{"GET", "/v1/machines/{name}", "One machine: state, health and its reasons, replication", "viewer", nil, control.Machine{}, 0},
	{"GET", "/v1/machines/{name}/points", "A machine's recovery points, newest first; latest, latest app-consistent, and ?at=TIME", "viewer", nil, pointsBody{}, 0},
	{"POST", "/v1/machines/{name}/protect", "Enable protection in a group: picks a process server and a master target by capacity", "operator", protectRequest{}, protectResponse{}, 0},
	{"POST", "/v1/machines/{name}/unprotect", "Disable protection; the replica is kept unless delete_replica (refused while a test failover exists)", "operator", unprotectRequest{}, control.Machine{}, 0},
	{"POST", "/v1/machines/{name}/test-failover", "Test failover: the master target exports the chosen point (latest, latest-app, ID, TIME) and starts an isolated replica machine from it; returns the job", "operator", testFailoverRequest{}, testResponse{}, 0},
	{"POST", "/v1/machines/{name}/test-cleanup", "Clean up a test failover: the replica machine is stopped, the export and its overlay removed; returns the job", "operator", testCleanupRequest{}, testResponse{}, 0},
	{"POST", "/v1/machines/{name}/failover", "Failover: the epoch is raised (the old primary is fenced), the master target exports the chosen point (latest, latest-app, ID, TIME), starts the replica machine on its network and hydrates its disks; again before commit: another point; returns the job", "operator", failoverRequest{}, failoverResponse{}, 0},
	{"POST", "/v1/machines/{name}/planned-failover", "Planned failover, no data loss: the agent stops the source machine through its driver, refuses writes and drains its journal to a final bookmark; then the epoch is raised and the machine fails over to that point; returns the job", "operator", plannedFailoverRequest{}, failoverResponse{}, 0},
	{"POST", "/v1/machines/{name}/reprotect", "Re-protect a failed-over machine back to the primary site: the old primary's agent stops the source and refuses writes, the named master target (target) receives in place over the old primary's disks, the failover's master target ships the replica machine's writes, sending only what differs; refused while the old primary holds unreplicated writes unless force; returns the job", "operator", reprotectRequest{}, reverseResponse{}, 0},
	{"POST", "/v1/machines/{name}/failback", "Fail back a machine protected in reverse, no data loss: the replica machine is stopped and drained to the primary site, then the original agent continues on the primary's disks at a new epoch and starts the source machine; protected in the original direction again; returns the job", "operator", failbackRequest{}, reverseResponse{}, 0},
	{"POST", "/v1/plans/{name}/run", "Run a recovery plan: operation (test-failover, test-cleanup, planned-failover, failover, commit, reprotect, failback) group by group, machines of a group in parallel, with the groups' scripts and manual actions; point (latest, latest-app, latest-consistent, ID, TIME); dry_run lists the steps with estimates from earlier runs; returns the run and its job", "operator", planRunRequest{}, planRunResponse{}, 0},
	{"GET", "/v1/plans/{name}/points", "A plan's multi-machine consistent points, newest first: labels every machine holds, with each machine's point id", "viewer", nil, []ConsistentPoint{}, 0},
	{"GET", "/v1/plans/{name}/runs", "A plan's runs, newest first, each with its report", "viewer", nil, []control.PlanRun{}, 0},
	{"GET", "/v1/plans/{name}/runs/{run}", "A run's report: per step start, end and result; per machine the point used, the data loss window and when it ran; the achieved RTO", "viewer", nil, control.PlanRun{}, 0},
	{"POST", "/v1/plans/{name}/runs/{run}/continue", "Continue a run waiting at a manual action (step: which one; default the one waiting)", "operator", planSignalRequest{}, control.PlanRun{}, 0},
	{"POST", "/v1/plans/{name}/runs/{run}/abort", "Abort a run waiting at a manual action: the run fails there", "operator", planSignalRequest{}, control.PlanRun{}, 0},
	{"POST", "/v1/plans/{name}/runs/{run}/retry", "Retry a failed run from its failed step (what succeeded is not done again); returns the new run", "operator", planRetryRequest{}, planRunResponse{}, 0},
	{"POST", "/v1/plans/{name}/runs/{run}/skip", "Retry a failed run past its failed step; returns the new run", "operator", planRetryRequest{}, planRunResponse{}, 0},
	{"POST", "/v1/machines/{name}/commit", "Commit a failover: the failed-over point is made final and every other point released (refused while a test failover exists); returns the job", "operator", commitRequest{}, failoverResponse{}, 0},
	{"GET", "/v1/plans", "List recovery plans, by name", "viewer", nil, []control.Plan{}, 0},
	{"GET", "/v1/plans/{name}", "One recovery plan: its groups, actions and drill", "viewer", nil, control.Plan{}, 0},
	{"PUT", "/v1/plans/{name}", "Apply a recovery plan (declarative, idempotent): it is validated (every problem listed) and its machines must be known; created, or updated when its description, groups or drill differ (nothing is written when they do not); a version in the body must be the stored one; the answer says whether it changed and lists what changed; ?dry_run=true only says what would change", "operator", control.Plan{}, planApplyResponse{}, 0},
	{"DELETE", "/v1/plans/{name}", "Delete a recovery plan (refused while a run of it is queued or running; its runs are kept); answers the deleted plan", "operator", nil, control.Plan{}, 0},
	{"GET", "/v1/jobs", "List jobs, newest first (?object=, ?kind=, ?unfinished=true, ?limit=)", "viewer", nil, []control.Job{}, 0},
	{"GET", "/v1/jobs/{id}", "One job: steps, progress, log, result", "viewer", nil, control.Job{}, 0},
	{"POST", "/v1/jobs/{id}/cancel", "Cancel a queued or running job", "operator", nil, control.Job{}, 0},
	{"GET", "/v1/alerts", "Active alerts (?all=true: cleared ones too)", "viewer", nil, []control.Alert{}, 0},
	{"GET", "/v1/audit", "The audit log, newest first (?limit=)", "viewer", nil, []control.AuditEntry{}, 0},
	{"POST", "/v1/heartbeat", "A component's heartbeat: version, address, capacity", "component:agent,process,target", HeartbeatRequest{}, nil, 204},
	{"POST", "/v1/agent/report", "An agent reports its machine: disks and replication", "component:agent", AgentReport{}, control.Machine{}, 0},
	{"GET", "/v1/desired", "A component's desired state (?have=VERSION&wait=30s long-polls for a change)", "component:agent,process,target", nil, Desired{}, 0},
	{"POST", "/v1/target/points", "A master target reports a machine's recovery points (all of them)", "component:target", PointsReport{}, nil, 204},
	{"POST", "/v1/component/action", "A process server or a master target reports an action its desired state gave it (a recovery plan's script): exit 0 or not, the end of its output", "component:process,target", ActionReport{}, nil, 204},
	{"POST", "/v1/target/recovery", "A master target reports what it did of a machine's test failover or failover", "component:target", RecoveryReport{}, nil, 204},
}

var (
	docOnce sync.Once
	docJSON []byte
)

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	docOnce.Do(func() { docJSON, _ = json.MarshalIndent(openAPIDoc(s.o.Version), "", "  ") })
	w.Header().Set("Content-Type", "application/json")
	w.Write(docJSON)
}

func openAPIDoc(version string) map[string]any {
	g := &schemaGen{defs: map[string]any{}}
	paths := map[string]map[string]any{}
	for _, e := range endpoints {
		op := map[string]any{"summary": e.summary, "x-standby-auth": e.auth}
		switch {
		case e.auth == "none", e.auth == "join token":
			op["security"] = []any{}
		case strings.HasPrefix(e.auth, "component:"):
			op["security"] = []any{map[string]any{"mutualTLS": []string{}}}
		default:
			op["security"] = []any{map[string]any{"apiToken": []string{}}}
		}
		var params []any
		for _, seg := range strings.Split(e.path, "/") {
			if strings.HasPrefix(seg, "{") {
				params = append(params, map[string]any{"name": strings.Trim(seg, "{}"), "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
			}
		}
		if params != nil {
			op["parameters"] = params
		}
		if e.req != nil {
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(e.req))}}}
		}
		status := e.status
		if status == 0 {
			status = 200
		}
		ok := map[string]any{"description": http.StatusText(status)}
		if e.resp != nil {
			ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(e.resp))}}
		}
		errResp := map[string]any{"description": "an error, in words", "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}}
		op["responses"] = map[string]any{itoa(status): ok, "default": errResp}
		if paths[e.path] == nil {
			paths[e.path] = map[string]any{}
		}
		paths[e.path][strings.ToLower(e.method)] = op
	}
	g.defs["Error"] = map[string]any{"type": "object", "properties": map[string]any{"error": map[string]any{"type": "string"}}, "required": []string{"error"}}
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "Standby configuration server", "version": version, "description": "Users send Authorization: Bearer TOKEN (roles admin > operator > viewer); components authenticate with the client certificate the server's CA issued at join (the roles make these calls over gRPC on the same listener: service standby.control.v1.Components, the same calls as the component endpoints here). Request bodies are JSON objects; unknown fields are refused."},
		"paths":   paths,
		"components": map[string]any{
			"schemas": g.defs,
			"securitySchemes": map[string]any{
				"apiToken":  map[string]any{"type": "http", "scheme": "bearer"},
				"mutualTLS": map[string]any{"type": "mutualTLS"},
			},
		},
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// schemaGen makes JSON schemas from Go types, named structs as
// components.
type schemaGen struct {
	defs map[string]any
}

var (
	timeType     = reflect.TypeOf(time.Time{})
	durationType = reflect.TypeOf(control.Duration(0))
	rawType      = reflect.TypeOf(json.RawMessage(nil))
)

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	switch t {
	case timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case durationType:
		return map[string]any{"type": "string", "example": "10s"}
	case rawType:
		return map[string]any{"type": "object"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		return g.schema(t.Elem())
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Struct:
		name := schemaName(t)
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = nil // placeholder against recursion
			props := map[string]any{}
			g.fields(t, props)
			g.defs[name] = map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return map[string]any{}
}

func (g *schemaGen) fields(t reflect.Type, props map[string]any) {
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			g.fields(f.Type, props)
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.schema(f.Type)
	}
}

func schemaName(t reflect.Type) string {
	pkg := t.PkgPath()
	pkg = pkg[strings.LastIndex(pkg, "/")+1:]
	n := t.Name()
	if n == "" {
		return "Anonymous"
	}
	if pkg == "api" {
		return n
	}
	return strings.ToUpper(pkg[:1]) + pkg[1:] + strings.ToUpper(n[:1]) + n[1:]
}

// Route is one route of the API as the OpenAPI document describes it.
type Route struct {
	Method, Path string
	// Auth is the user role it needs (viewer, operator, admin),
	// "component:ROLES", "none" or "join token".
	Auth string
}

// Routes lists the API's routes (for the CLI's coverage test).
func Routes() []Route {
	out := make([]Route, len(endpoints))
	for i, e := range endpoints {
		out[i] = Route{Method: e.method, Path: e.path, Auth: e.auth}
	}
	return out
}
