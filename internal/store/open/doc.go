// Package open opens a store.Store by URL, choosing the backend from the
// URL's scheme. It is the one place that knows both backends, for cmd/
// to call with the value of `standby server --store`:
//
//	sqlite:PATH, sqlite://PATH, PATH   the embedded SQLite file at PATH (the default)
//	postgres://..., postgresql://...   a PostgreSQL database (libpq URL)
package open
