-- The control plane's first schema. Times are timestamptz (microseconds),
-- NULL for "not set". Nested values (policy, disks, steps, logs, params,
-- capacity, tags) are json, not jsonb: json keeps the text exactly as
-- written (a job's params come back byte for byte) and accepts \u0000,
-- and nothing queries inside them. uint64 values (epochs, recovery point
-- IDs and sequence numbers) are stored as their int64 bit pattern.

CREATE TABLE sites (
	id         text PRIMARY KEY,
	name       text NOT NULL UNIQUE,
	created_at timestamptz
);

CREATE TABLE servers (
	id           text PRIMARY KEY,
	role         text NOT NULL,
	name         text NOT NULL,
	site         text NOT NULL,
	address      text NOT NULL,
	version      text NOT NULL,
	capacity     json NOT NULL,
	cert_serial  text NOT NULL,
	cert_expires timestamptz,
	revoked      boolean NOT NULL,
	joined_at    timestamptz,
	heartbeat_at timestamptz,
	UNIQUE (role, name)
);

CREATE TABLE join_tokens (
	id         text PRIMARY KEY,
	hash       text NOT NULL UNIQUE,
	role       text NOT NULL,
	created_by text NOT NULL,
	created_at timestamptz,
	expires_at timestamptz NOT NULL,
	used_at    timestamptz,
	used_by    text NOT NULL
);

CREATE TABLE users (
	id         text PRIMARY KEY,
	name       text NOT NULL UNIQUE,
	role       text NOT NULL,
	token_hash text UNIQUE,        -- NULL: no token
	created_at timestamptz,
	disabled   boolean NOT NULL
);

CREATE TABLE protection_groups (
	id         text PRIMARY KEY,
	name       text NOT NULL UNIQUE,
	policy     json NOT NULL,
	created_at timestamptz,
	updated_at timestamptz
);

CREATE TABLE machines (
	id             text PRIMARY KEY,
	name           text NOT NULL UNIQUE,
	agent_id       text NOT NULL,
	group_id       text NOT NULL,
	process_id     text NOT NULL,
	target_id      text NOT NULL,
	epoch          bigint NOT NULL,
	state          text NOT NULL,
	health         text NOT NULL,
	health_reasons json NOT NULL,
	disks          json NOT NULL,
	replication    json NOT NULL,
	version        bigint NOT NULL,
	updated_at     timestamptz
);
CREATE INDEX machines_agent ON machines (agent_id);
CREATE INDEX machines_group ON machines (group_id);
CREATE INDEX machines_process ON machines (process_id);
CREATE INDEX machines_target ON machines (target_id);

CREATE TABLE recovery_points (
	machine_id     text NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
	id             bigint NOT NULL,
	seq            bigint NOT NULL,
	point_time     timestamptz,
	app_consistent boolean NOT NULL,
	label          text NOT NULL,
	tags           json NOT NULL,
	PRIMARY KEY (machine_id, id)
);
CREATE INDEX recovery_points_time ON recovery_points (machine_id, point_time);

-- seq orders rows created at the same time (newest first).
CREATE TABLE jobs (
	seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id           text NOT NULL UNIQUE,
	kind         text NOT NULL,
	object       text NOT NULL,
	params       json,             -- the planner's JSON, verbatim; NULL: none
	state        text NOT NULL,
	steps        json NOT NULL,
	current_step integer NOT NULL,
	progress     double precision NOT NULL,
	result       text NOT NULL,
	error        text NOT NULL,
	log          json NOT NULL,
	created_by   text NOT NULL,
	created_at   timestamptz,
	updated_at   timestamptz,
	ended_at     timestamptz,
	attempts     integer NOT NULL,
	version      bigint NOT NULL
);
CREATE INDEX jobs_created ON jobs (created_at, seq);
CREATE INDEX jobs_object ON jobs (object);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state NOT IN ('succeeded', 'failed', 'cancelled');

CREATE TABLE alerts (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id         text NOT NULL UNIQUE,
	alert_key  text NOT NULL,
	machine_id text NOT NULL,
	server_id  text NOT NULL,
	severity   text NOT NULL,
	message    text NOT NULL,
	raised_at  timestamptz,
	last_seen  timestamptz,
	count      integer NOT NULL,
	cleared_at timestamptz
);
-- At most one active alert per key: RaiseAlert's upsert targets this index.
CREATE UNIQUE INDEX alerts_active ON alerts (alert_key) WHERE cleared_at IS NULL;
CREATE INDEX alerts_raised ON alerts (raised_at, seq);

CREATE TABLE audit (
	id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at     timestamptz NOT NULL,
	actor  text NOT NULL,
	action text NOT NULL,
	object text NOT NULL,
	result text NOT NULL,
	detail text NOT NULL
);
