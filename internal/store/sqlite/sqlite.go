package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/internal/codec"
	"github.com/standby-dr/standby/internal/store/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are this binary's schema migrations, in order.
func Migrations() ([]migrate.Migration, error) { return migrate.Load(migrationFiles, "migrations") }

// readers is how many read connections run at once. Readers never block
// the writer in WAL mode; more than the machine's cores buys nothing.
const readers = 4

// busyTimeout is how long a connection waits for a lock another process
// holds (a backup tool, the sqlite3 shell) before it gives up. Writers of
// this process never wait on each other here: they queue for the one
// write connection instead.
const busyTimeout = 10 * time.Second

// Store is the SQLite implementation of store.Store.
type Store struct {
	path string
	// w has exactly one connection: every write goes through it, so
	// writers queue in database/sql (honouring their contexts) and never
	// meet SQLITE_BUSY from each other. Transactions on it begin
	// IMMEDIATE, so a read-then-write transaction holds the write lock
	// from its first statement.
	w *sql.DB
	// r serves reads concurrently with the writer (WAL).
	r         *sql.DB
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it when missing) the SQLite database at path and
// applies the migrations it lacks. path is a file name; ":memory:" is
// refused, since the store's readers and writer are separate connections.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("open sqlite store %q: want the path of a database file: %w", path, store.ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	ms, err := Migrations()
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	s := &Store{path: abs}
	// journal_mode=WAL is a property of the file, set by the writer before
	// any reader opens it. synchronous=NORMAL in WAL mode keeps the
	// database consistent after a power cut and loses at most the last
	// transactions; it is what lets heartbeats of a thousand agents be
	// written every second.
	s.w, err = sql.Open("sqlite", dsn(abs, "_txlock=immediate", "_pragma=journal_mode(WAL)", "_pragma=synchronous(NORMAL)"))
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.migrate(ctx, ms); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	s.r, err = sql.Open("sqlite", dsn(abs, "_pragma=query_only(1)"))
	if err == nil {
		s.r.SetMaxOpenConns(readers)
		s.r.SetMaxIdleConns(readers)
		err = s.r.PingContext(ctx)
	}
	if err != nil {
		s.w.Close()
		if s.r != nil {
			s.r.Close()
		}
		return nil, fmt.Errorf("open sqlite store %s: readers: %w", path, err)
	}
	return s, nil
}

// dsn is the driver's name for the file at abs with the settings every
// connection shares and extra ones. The path is a URI path, escaped, so
// that a '?' or '#' in a file name stays part of it.
func dsn(abs string, extra ...string) string {
	params := append([]string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeout.Milliseconds()),
		"_pragma=foreign_keys(1)",
	}, extra...)
	return "file:" + (&url.URL{Path: abs}).EscapedPath() + "?" + strings.Join(params, "&")
}

// migrate applies the pending migrations in one IMMEDIATE transaction, so
// two processes opening one new file do not both apply them.
func (s *Store) migrate(ctx context.Context, ms []migrate.Migration) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var applied int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&applied); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	pending, err := migrate.Pending(applied, ms)
	if err != nil {
		return err
	}
	for _, m := range pending {
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.Version, m.Name, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("migration %04d_%s: record: %w", m.Version, m.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// Path is the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// SchemaVersion implements store.Store.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

// Check runs SQLite's integrity and foreign key checks and returns what
// they found, nil when the database is sound.
func (s *Store) Check(ctx context.Context) error { return check(ctx, s.r, s.path) }

// CheckFile checks the database at path as Check does, without migrating
// it (it may be one this binary refuses to open).
func CheckFile(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", dsn(path, "_pragma=query_only(1)"))
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	defer db.Close()
	return check(ctx, db, path)
}

func check(ctx context.Context, db *sql.DB, path string) error {
	var problems []string
	for _, q := range []string{`PRAGMA integrity_check`, `PRAGMA foreign_key_check`} {
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			return fmt.Errorf("check %s: %w", path, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return fmt.Errorf("check %s: %w", path, err)
			}
			if len(vals) == 1 && fmt.Sprint(vals[0]) == "ok" {
				continue
			}
			problems = append(problems, fmt.Sprint(vals...))
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("check %s: %w", path, err)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("check %s: %s", path, strings.Join(problems, "; "))
	}
	return nil
}

// Close closes the database; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// isUnique says whether err is a violated UNIQUE or PRIMARY KEY constraint.
func isUnique(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// exists turns a unique violation into store.ErrExists.
func exists(what string, err error) error {
	if isUnique(err) {
		return fmt.Errorf("%s: %w", what, store.ErrExists)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// affected returns how many rows a statement changed.
func affected(res sql.Result) (int64, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	return n, nil
}

// micro is how a time is stored: microseconds since the epoch, NULL for
// the zero time.
func micro(t time.Time) any {
	t = codec.Time(t)
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// timeCol scans a micro column into a time.
type timeCol struct{ t *time.Time }

func (c timeCol) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*c.t = time.Time{}
	case int64:
		*c.t = time.UnixMicro(v).UTC()
	default:
		return fmt.Errorf("time column holds %T, want an integer", v)
	}
	return nil
}

// jsonCol scans a JSON text column into a value.
type jsonCol struct{ v any }

func (c jsonCol) Scan(v any) error {
	switch b := v.(type) {
	case string:
		return json.Unmarshal([]byte(b), c.v)
	case []byte:
		return json.Unmarshal(b, c.v)
	default:
		return fmt.Errorf("JSON column holds %T, want text", v)
	}
}

// u64Col scans an int64 column holding a uint64's bit pattern.
type u64Col struct{ u *uint64 }

func (c u64Col) Scan(v any) error {
	n, ok := v.(int64)
	if !ok {
		return fmt.Errorf("integer column holds %T", v)
	}
	*c.u = uint64(n)
	return nil
}

// nullText stores "" as NULL (for unique columns where empty means none).
func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

type scanner interface{ Scan(dest ...any) error }
