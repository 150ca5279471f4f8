-- Recovery plans (docs/plans.md) and their runs. A plan's groups and
-- drill are JSON ([]control.PlanGroup; *control.DrillPolicy, 'null':
-- none). A run is keyed by its job's ID and names its plan by name, with
-- no foreign key: runs outlive their plan (the record of what was done).
-- seq orders runs started at the same time (newest first).
CREATE TABLE plans (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	description TEXT NOT NULL,
	groups      TEXT NOT NULL, -- JSON []control.PlanGroup
	drill       TEXT NOT NULL, -- JSON *control.DrillPolicy
	version     INTEGER NOT NULL,
	created_at  INTEGER,
	updated_at  INTEGER
) STRICT;

CREATE TABLE plan_runs (
	seq         INTEGER PRIMARY KEY,
	id          TEXT NOT NULL UNIQUE,
	plan        TEXT NOT NULL,
	operation   TEXT NOT NULL,
	point       TEXT NOT NULL,
	dry_run     INTEGER NOT NULL,
	retry_of    TEXT NOT NULL,
	skip        TEXT NOT NULL,
	state       TEXT NOT NULL,
	steps       TEXT NOT NULL, -- JSON []control.PlanStepReport
	machines    TEXT NOT NULL, -- JSON []control.PlanMachineReport
	started_at  INTEGER,
	ended_at    INTEGER,
	rto_seconds REAL NOT NULL,
	error       TEXT NOT NULL,
	signals     TEXT NOT NULL, -- JSON map[string]string
	version     INTEGER NOT NULL
) STRICT;
CREATE INDEX plan_runs_plan ON plan_runs (plan, started_at, seq);
