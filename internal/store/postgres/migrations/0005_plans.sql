-- Recovery plans (docs/plans.md) and their runs. A plan's groups and
-- drill are JSON ([]control.PlanGroup; *control.DrillPolicy, 'null':
-- none). A run is keyed by its job's ID and names its plan by name, with
-- no foreign key: runs outlive their plan (the record of what was done).
-- seq orders runs started at the same time (newest first).
CREATE TABLE plans (
	id          text PRIMARY KEY,
	name        text NOT NULL UNIQUE,
	description text NOT NULL,
	groups      json NOT NULL,
	drill       json NOT NULL,
	version     bigint NOT NULL,
	created_at  timestamptz,
	updated_at  timestamptz
);

CREATE TABLE plan_runs (
	seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id          text NOT NULL UNIQUE,
	plan        text NOT NULL,
	operation   text NOT NULL,
	point       text NOT NULL,
	dry_run     boolean NOT NULL,
	retry_of    text NOT NULL,
	skip        text NOT NULL,
	state       text NOT NULL,
	steps       json NOT NULL,
	machines    json NOT NULL,
	started_at  timestamptz,
	ended_at    timestamptz,
	rto_seconds double precision NOT NULL,
	error       text NOT NULL,
	signals     json NOT NULL,
	version     bigint NOT NULL
);
CREATE INDEX plan_runs_plan ON plan_runs (plan, started_at, seq);
