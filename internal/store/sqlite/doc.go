// Package sqlite is the embedded, default implementation of store.Store,
// on modernc.org/sqlite (pure Go, no cgo).
//
// One file, in WAL mode, with two pools of connections:
//
//	writes ──▶ w: one connection ──▶ BEGIN IMMEDIATE ... COMMIT   (queued in Go)
//	reads  ──▶ r: up to 4 connections, query_only              (never blocked by w)
//
// Writers queue for the single write connection inside database/sql, which
// honours their contexts, instead of racing for SQLite's lock and getting
// SQLITE_BUSY. synchronous=NORMAL: a power cut can lose the last
// transactions but never corrupts the file; that is what lets the store
// take heartbeats from a thousand agents every second. busy_timeout only
// matters for other processes (a backup, the sqlite3 shell).
//
// Times are INTEGER microseconds since the Unix epoch (NULL: not set);
// nested values are JSON text. The schema is in migrations/, applied at
// Open (see package migrate and docs/store.md).
package sqlite
