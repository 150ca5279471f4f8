// Package postgres is the PostgreSQL implementation of store.Store, for a
// control plane that outgrows one node, on github.com/jackc/pgx/v5 with a
// connection pool.
//
// Atomic operations are single statements or short transactions, never
// read-modify-write in Go:
//
//	UseJoinToken    UPDATE ... WHERE hash AND used_at IS NULL AND expires_at > now RETURNING
//	Update*         UPDATE ... SET version = version + 1 WHERE id AND version RETURNING
//	RaiseAlert      INSERT ... ON CONFLICT (alert_key) WHERE cleared_at IS NULL DO UPDATE
//	ReplacePoints   SELECT machine FOR UPDATE; DELETE; COPY
//
// Migrations (migrations/*.sql, see package migrate) run at Open in one
// transaction holding an advisory lock, so processes opening one database
// at once apply each migration once.
//
// Times are timestamptz, returned in UTC; nested values are json (not
// jsonb: json keeps the text verbatim). The tests run against a real server
// from package pgtest.
package postgres
