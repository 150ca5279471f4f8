// Package store persists the control plane's state (internal/control)
// behind one interface, Store, with two implementations: SQLite (embedded,
// the default) and PostgreSQL. Both pass the same conformance suite
// (storetest). Schema changes are versioned migrations, applied in order
// at Open and recorded in the database.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// Errors every implementation returns, wrapped with context; callers test
// them with errors.Is.
var (
	// ErrNotFound: no object with that ID or name.
	ErrNotFound = errors.New("not found")
	// ErrExists: an object with that ID or unique name exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the object changed since it was read (its Version
	// differs); read it again and retry.
	ErrConflict = errors.New("changed meanwhile")
	// ErrTokenUsed, ErrTokenExpired: a join token was used before, or has
	// expired.
	ErrTokenUsed    = errors.New("join token already used")
	ErrTokenExpired = errors.New("join token expired")
	// ErrSchemaTooNew: the database was migrated by a newer Standby.
	ErrSchemaTooNew = errors.New("database schema is newer than this standby")
	// ErrInvalid: the input was refused (an empty ID or name, an unknown
	// role or state, text with a NUL byte); the message names the field.
	// It is permanent: the same call fails the same way.
	ErrInvalid = errors.New("invalid")
)

// Store is the control plane's persistence. Every method is safe for
// concurrent use. Times are stored with at least microsecond precision and
// returned in UTC. Lists are ordered as each method says.
type Store interface {
	// Sites, ordered by name.
	CreateSite(ctx context.Context, s control.Site) error
	ListSites(ctx context.Context) ([]control.Site, error)

	// Servers. Name is unique per role. UpdateServer replaces every field
	// but ID, Role and JoinedAt. ListServers with role "" lists all, by
	// role then name.
	CreateServer(ctx context.Context, s control.Server) error
	GetServer(ctx context.Context, id string) (control.Server, error)
	ListServers(ctx context.Context, role control.Role) ([]control.Server, error)
	UpdateServer(ctx context.Context, s control.Server) error
	// Heartbeat sets a server's HeartbeatAt, Version and Capacity only.
	Heartbeat(ctx context.Context, id string, at time.Time, version string, c control.Capacity) error

	// Join tokens. UseJoinToken marks the token with that secret hash
	// used by usedBy at now, atomically: of two concurrent calls one
	// wins, the other gets ErrTokenUsed. An expired token gives
	// ErrTokenExpired and stays unused; an unknown hash ErrNotFound.
	CreateJoinToken(ctx context.Context, t control.JoinToken) error
	UseJoinToken(ctx context.Context, hash string, now time.Time, usedBy string) (control.JoinToken, error)
	ListJoinTokens(ctx context.Context) ([]control.JoinToken, error)

	// Users. UserByTokenHash finds a user by its API token's hash.
	CreateUser(ctx context.Context, u control.User) error
	UserByTokenHash(ctx context.Context, hash string) (control.User, error)
	ListUsers(ctx context.Context) ([]control.User, error)

	// Protection groups, ordered by name. UpdateGroup replaces Name,
	// Policy and UpdatedAt.
	CreateGroup(ctx context.Context, g control.Group) error
	GetGroup(ctx context.Context, id string) (control.Group, error)
	GroupByName(ctx context.Context, name string) (control.Group, error)
	ListGroups(ctx context.Context) ([]control.Group, error)
	UpdateGroup(ctx context.Context, g control.Group) error

	// Machines, ordered by name. CreateMachine stores m with Version 1.
	// UpdateMachine stores m if the stored Version equals m.Version (else
	// ErrConflict) and returns it with Version incremented.
	CreateMachine(ctx context.Context, m control.Machine) (control.Machine, error)
	GetMachine(ctx context.Context, id string) (control.Machine, error)
	MachineByName(ctx context.Context, name string) (control.Machine, error)
	ListMachines(ctx context.Context, f MachineFilter) ([]control.Machine, error)
	UpdateMachine(ctx context.Context, m control.Machine) (control.Machine, error)

	// Recovery points catalogue. ReplacePoints sets a machine's points to
	// exactly pts (a master target reports them all). ListPoints orders
	// them by time, newest first.
	ReplacePoints(ctx context.Context, machine string, pts []control.RecoveryPoint) error
	ListPoints(ctx context.Context, machine string) ([]control.RecoveryPoint, error)

	// Jobs. CreateJob stores j with Version 1; UpdateJob as UpdateMachine.
	// ListJobs orders by CreatedAt, newest first.
	CreateJob(ctx context.Context, j control.Job) (control.Job, error)
	GetJob(ctx context.Context, id string) (control.Job, error)
	UpdateJob(ctx context.Context, j control.Job) (control.Job, error)
	ListJobs(ctx context.Context, f JobFilter) ([]control.Job, error)

	// Plans, ordered by name. CreatePlan stores p with Version 1
	// (ErrExists when the name or ID is taken); UpdatePlan as
	// UpdateMachine (by ID; ErrConflict on a stale Version); DeletePlan
	// removes it (ErrNotFound). Groups and drill come back as they went
	// in, through JSON (an empty list JSON leaves out comes back nil).
	// A plan's runs outlive it.
	CreatePlan(ctx context.Context, p control.Plan) (control.Plan, error)
	GetPlan(ctx context.Context, name string) (control.Plan, error)
	ListPlans(ctx context.Context) ([]control.Plan, error)
	UpdatePlan(ctx context.Context, p control.Plan) (control.Plan, error)
	DeletePlan(ctx context.Context, name string) error
	// Plan runs (control.PlanRun, keyed by its ID = its job's ID).
	// CreatePlanRun stores r with Version 1; UpdatePlanRun as
	// UpdateMachine; ListPlanRuns returns a plan's runs, newest first (by
	// StartedAt, a run not started yet first; runs started at the same
	// time, the one created last first), at most limit (0: all).
	CreatePlanRun(ctx context.Context, r control.PlanRun) (control.PlanRun, error)
	GetPlanRun(ctx context.Context, id string) (control.PlanRun, error)
	UpdatePlanRun(ctx context.Context, r control.PlanRun) (control.PlanRun, error)
	ListPlanRuns(ctx context.Context, plan string, limit int) ([]control.PlanRun, error)

	// Alerts. RaiseAlert creates the active alert with a.Key, or, when one
	// is active, increments its Count and sets LastSeen, Message and
	// Severity; it returns the stored alert and whether it is new.
	// ClearAlert clears the active alert with that key (no error when
	// none). ListAlerts orders by RaisedAt, newest first.
	RaiseAlert(ctx context.Context, a control.Alert) (control.Alert, bool, error)
	ClearAlert(ctx context.Context, key string, at time.Time) error
	ListAlerts(ctx context.Context, activeOnly bool) ([]control.Alert, error)

	// Audit log, append-only. AppendAudit sets the entry's ID. ListAudit
	// returns the newest entries first, at most limit (0: all).
	AppendAudit(ctx context.Context, e control.AuditEntry) (control.AuditEntry, error)
	ListAudit(ctx context.Context, limit int) ([]control.AuditEntry, error)

	// SchemaVersion is the newest migration applied.
	SchemaVersion(ctx context.Context) (int, error)
	Close() error
}

// MachineFilter selects machines; zero fields match all.
type MachineFilter struct {
	Group     string
	Agent     string
	Process   string
	Target    string
	Protected bool // only machines in a group
}

// JobFilter selects jobs; zero fields match all.
type JobFilter struct {
	Object     string
	Kind       string
	Unfinished bool // only jobs not Done
	Limit      int  // 0: no limit
}
