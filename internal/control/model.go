package control

import (
	"time"

	"github.com/standby-dr/standby/internal/retention"
)

// Role is what a registered server does. Certificates name it; every call
// between components checks it.
type Role string

// The roles a server joins as.
const (
	RoleAgent   Role = "agent"   // a protected host or physical server
	RoleProcess Role = "process" // a process server (primary site)
	RoleTarget  Role = "target"  // a master target (secondary site)
)

// Roles lists the roles a server may join as, for validation messages.
var Roles = []Role{RoleAgent, RoleProcess, RoleTarget}

// Valid says whether r is one of Roles.
func (r Role) Valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// Site is a location: the primary site with the protected machines and
// process servers, the secondary with the master targets and the server.
type Site struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"` // unique
	CreatedAt time.Time `json:"created_at"`
}

// Server is a registered component: an agent, a process server or a master
// target. Its ID is issued at join and named in its certificate.
type Server struct {
	ID      string `json:"id"`
	Role    Role   `json:"role"`
	Name    string `json:"name"` // host name it reported; unique per role
	Site    string `json:"site,omitempty"`
	Address string `json:"address,omitempty"` // where peers reach it (process servers, master targets)
	Version string `json:"version,omitempty"`
	// Capacity is what it reported with its last heartbeat.
	Capacity Capacity `json:"capacity"`
	// CertSerial and CertExpires describe its current certificate.
	CertSerial  string    `json:"cert_serial,omitempty"`
	CertExpires time.Time `json:"cert_expires,omitempty"`
	// Revoked servers are refused on every call and connection.
	Revoked     bool      `json:"revoked"`
	JoinedAt    time.Time `json:"joined_at"`
	HeartbeatAt time.Time `json:"heartbeat_at,omitempty"`
}

// Capacity is what a server can still take, as it reports it.
type Capacity struct {
	Machines    int   `json:"machines"`               // protected machines it serves now
	MaxMachines int   `json:"max_machines,omitempty"` // 0: no limit
	FreeBytes   int64 `json:"free_bytes,omitempty"`   // cache (process server) or replica store (master target)
}

// Policy is a protection group's replication policy: it applies to every
// machine in the group.
type Policy struct {
	// PointInterval is the interval of crash-consistent recovery points
	// (default 10 s, at least 1 s).
	PointInterval Duration `json:"point_interval"`
	// AppInterval is the interval of app-consistent points; 0 turns them off.
	AppInterval Duration `json:"app_interval"`
	// Retention says which points the master target keeps.
	Retention retention.Policy `json:"retention"`
	// RPOThreshold raises an alert when the achieved RPO exceeds it.
	RPOThreshold Duration `json:"rpo_threshold"`
	// InitialStart delays initial replication until then; zero: now.
	InitialStart time.Time `json:"initial_start,omitempty"`
	// Compression is the process server's: auto, off, fastest, standard, better, best.
	Compression string `json:"compression"`
	// BandwidthLimit in bytes per second to the master target; 0: none.
	BandwidthLimit int64 `json:"bandwidth_limit"`
}

// Group is a protection group (the seed's "cloud"): machines that share a
// policy.
type Group struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"` // unique
	Policy    Policy    `json:"policy"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Disk is one disk of a machine, as its agent reports it.
type Disk struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// Path is the disk's file or block device at the agent's host: the
	// seed of a re-protection (reverse.go).
	Path string `json:"path,omitempty"`
}

// Machine is a machine an agent reported, protected or not.
type Machine struct {
	ID    string `json:"id"`
	Name  string `json:"name"`  // unique
	Agent string `json:"agent"` // the agent server's ID
	Disks []Disk `json:"disks"`
	// Group, Process and Target are set while protection is enabled.
	Group   string `json:"group,omitempty"`
	Process string `json:"process,omitempty"`
	Target  string `json:"target,omitempty"`
	// Epoch is the replication epoch; failover increments it (fencing).
	Epoch uint64       `json:"epoch"`
	State MachineState `json:"state"`
	// TestFailover says whether a test failover of the machine exists
	// (TestTransition moves it); Test is that one, or the last one.
	TestFailover TestFailoverState `json:"test_failover,omitempty"`
	Test         *TestFailover     `json:"test,omitempty"`
	// Failover is the machine's current or last failover (failover.go).
	Failover *Failover `json:"failover,omitempty"`
	// Reverse is its protection back to the primary site, while the
	// machine runs at the secondary (reverse.go).
	Reverse *Reverse `json:"reverse,omitempty"`
	Health  Health   `json:"health"`
	// Reasons say why the health is what it is, for the operator.
	HealthReasons []string `json:"health_reasons,omitempty"`
	// Replication is what the agent last reported.
	Replication ReplicationReport `json:"replication"`
	// Version increases with every update; an update that names an older
	// version is refused (optimistic concurrency).
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ReplicationReport is a machine's replication as its agent reports it.
type ReplicationReport struct {
	State        string    `json:"state,omitempty"` // the agent's replication state
	RPOSeconds   float64   `json:"rpo_seconds"`     // -1 before anything was applied
	BacklogBytes int64     `json:"backlog_bytes"`   // journal and dirty bytes not yet shipped
	ResyncBytes  int64     `json:"resync_bytes"`    // what the last comparison found to send
	ResyncLeft   int64     `json:"resync_left"`     // what is still to send of it
	LastPointAt  time.Time `json:"last_point_at,omitempty"`
	ReportedAt   time.Time `json:"reported_at,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
	// Epoch is the agent's journal epoch.
	Epoch uint64 `json:"epoch,omitempty"`
}

// RecoveryPoint is a master target's recovery point, in the catalogue.
type RecoveryPoint struct {
	Machine       string    `json:"machine"`
	ID            uint64    `json:"id"`
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	AppConsistent bool      `json:"app_consistent"`
	Label         string    `json:"label,omitempty"`
	Tags          []string  `json:"tags,omitempty"`
}

// JoinToken is a one-time, expiring secret that lets a server join with a
// role. The store keeps only a hash of the secret.
type JoinToken struct {
	ID        string    `json:"id"`
	Hash      string    `json:"-"` // hex SHA-256 of the secret
	Role      Role      `json:"role"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitempty"`
	UsedBy    string    `json:"used_by,omitempty"` // the server ID it made
}

// UserRole is what an API user may do.
type UserRole string

// The user roles, from most to least powerful.
const (
	UserAdmin    UserRole = "admin"    // everything, users and tokens included
	UserOperator UserRole = "operator" // protection and recovery, not users
	UserViewer   UserRole = "viewer"   // reads only
)

// User is an API user with a token.
type User struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"` // unique
	Role      UserRole  `json:"role"`
	TokenHash string    `json:"-"` // hex SHA-256 of the API token
	CreatedAt time.Time `json:"created_at"`
	Disabled  bool      `json:"disabled"`
}

// AuditEntry records one change: who, what, when, with what result.
type AuditEntry struct {
	ID     int64     `json:"id"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`  // "user:NAME", "server:ROLE/ID" or "system"
	Action string    `json:"action"` // e.g. "machine.protect"
	Object string    `json:"object"` // e.g. "machine/web01"
	Result string    `json:"result"` // "ok" or the error
	Detail string    `json:"detail,omitempty"`
}

// Severity of an alert or a health.
type Severity string

// Alert severities.
const (
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Alert is raised once per Key while its condition holds; repeats count,
// and it is cleared when the condition goes away.
type Alert struct {
	ID        string    `json:"id"`
	Key       string    `json:"key"` // dedup key, e.g. "rpo/machine-id"
	Machine   string    `json:"machine,omitempty"`
	Server    string    `json:"server,omitempty"`
	Severity  Severity  `json:"severity"`
	Message   string    `json:"message"`
	RaisedAt  time.Time `json:"raised_at"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int       `json:"count"`
	ClearedAt time.Time `json:"cleared_at,omitempty"`
}

// Active says whether the alert has not been cleared.
func (a Alert) Active() bool { return a.ClearedAt.IsZero() }
