-- The control plane's first schema. Times are INTEGER microseconds since
-- the Unix epoch, UTC, NULL for "not set". Nested values (policy, disks,
-- steps, logs, params, capacity, tags) are TEXT holding JSON. uint64
-- values (epochs, recovery point IDs and sequence numbers) are stored as
-- their int64 bit pattern.

CREATE TABLE sites (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	created_at INTEGER
) STRICT;

CREATE TABLE servers (
	id           TEXT PRIMARY KEY,
	role         TEXT NOT NULL,
	name         TEXT NOT NULL,
	site         TEXT NOT NULL,
	address      TEXT NOT NULL,
	version      TEXT NOT NULL,
	capacity     TEXT NOT NULL,   -- JSON control.Capacity
	cert_serial  TEXT NOT NULL,
	cert_expires INTEGER,
	revoked      INTEGER NOT NULL,
	joined_at    INTEGER,
	heartbeat_at INTEGER,
	UNIQUE (role, name)
) STRICT;

CREATE TABLE join_tokens (
	id         TEXT PRIMARY KEY,
	hash       TEXT NOT NULL UNIQUE,
	role       TEXT NOT NULL,
	created_by TEXT NOT NULL,
	created_at INTEGER,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER,
	used_by    TEXT NOT NULL
) STRICT;

CREATE TABLE users (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	role       TEXT NOT NULL,
	token_hash TEXT UNIQUE,       -- NULL: no token
	created_at INTEGER,
	disabled   INTEGER NOT NULL
) STRICT;

CREATE TABLE protection_groups (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL UNIQUE,
	policy     TEXT NOT NULL,     -- JSON control.Policy
	created_at INTEGER,
	updated_at INTEGER
) STRICT;

CREATE TABLE machines (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL UNIQUE,
	agent_id       TEXT NOT NULL,
	group_id       TEXT NOT NULL,
	process_id     TEXT NOT NULL,
	target_id      TEXT NOT NULL,
	epoch          INTEGER NOT NULL,
	state          TEXT NOT NULL,
	health         TEXT NOT NULL,
	health_reasons TEXT NOT NULL, -- JSON []string
	disks          TEXT NOT NULL, -- JSON []control.Disk
	replication    TEXT NOT NULL, -- JSON control.ReplicationReport
	version        INTEGER NOT NULL,
	updated_at     INTEGER
) STRICT;
CREATE INDEX machines_agent ON machines (agent_id);
CREATE INDEX machines_group ON machines (group_id);
CREATE INDEX machines_process ON machines (process_id);
CREATE INDEX machines_target ON machines (target_id);

CREATE TABLE recovery_points (
	machine_id     TEXT NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
	id             INTEGER NOT NULL,
	seq            INTEGER NOT NULL,
	point_time     INTEGER,
	app_consistent INTEGER NOT NULL,
	label          TEXT NOT NULL,
	tags           TEXT NOT NULL, -- JSON []string
	PRIMARY KEY (machine_id, id)
) STRICT;
CREATE INDEX recovery_points_time ON recovery_points (machine_id, point_time);

-- seq orders rows created at the same time (newest first); an INTEGER
-- PRIMARY KEY, so VACUUM keeps it.
CREATE TABLE jobs (
	seq          INTEGER PRIMARY KEY,
	id           TEXT NOT NULL UNIQUE,
	kind         TEXT NOT NULL,
	object       TEXT NOT NULL,
	params       TEXT,            -- the planner's JSON, verbatim; NULL: none
	state        TEXT NOT NULL,
	steps        TEXT NOT NULL,   -- JSON []control.Step
	current_step INTEGER NOT NULL,
	progress     REAL NOT NULL,
	result       TEXT NOT NULL,
	error        TEXT NOT NULL,
	log          TEXT NOT NULL,   -- JSON []control.LogLine
	created_by   TEXT NOT NULL,
	created_at   INTEGER,
	updated_at   INTEGER,
	ended_at     INTEGER,
	attempts     INTEGER NOT NULL,
	version      INTEGER NOT NULL
) STRICT;
CREATE INDEX jobs_created ON jobs (created_at, seq);
CREATE INDEX jobs_object ON jobs (object);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state NOT IN ('succeeded', 'failed', 'cancelled');

CREATE TABLE alerts (
	seq        INTEGER PRIMARY KEY,
	id         TEXT NOT NULL UNIQUE,
	alert_key  TEXT NOT NULL,
	machine_id TEXT NOT NULL,
	server_id  TEXT NOT NULL,
	severity   TEXT NOT NULL,
	message    TEXT NOT NULL,
	raised_at  INTEGER,
	last_seen  INTEGER,
	count      INTEGER NOT NULL,
	cleared_at INTEGER
) STRICT;
-- At most one active alert per key: RaiseAlert's upsert targets this index.
CREATE UNIQUE INDEX alerts_active ON alerts (alert_key) WHERE cleared_at IS NULL;
CREATE INDEX alerts_raised ON alerts (raised_at, seq);

-- AUTOINCREMENT: an audit ID is never reused.
CREATE TABLE audit (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	at     INTEGER NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	object TEXT NOT NULL,
	result TEXT NOT NULL,
	detail TEXT NOT NULL
) STRICT;
