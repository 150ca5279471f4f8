package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/internal/codec"
	"github.com/standby-dr/standby/internal/store/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are this binary's schema migrations, in order.
func Migrations() ([]migrate.Migration, error) { return migrate.Load(migrationFiles, "migrations") }

// migrationLock is the advisory lock key that serializes migrations of one
// database across every process that opens it ("standby!" in ASCII).
const migrationLock int64 = 0x7374616e64627921

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool      *pgxpool.Pool
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn (a postgres:// URL or a key=value
// DSN, as libpq takes them) and applies the migrations it lacks. Several
// processes may open one database at once: migrations run under an
// advisory lock, so each is applied exactly once.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included: do not wrap it.
		return nil, fmt.Errorf("open postgres store: cannot parse the DSN (want postgres://user:password@host:5432/dbname?sslmode=...): %w", store.ErrInvalid)
	}
	ms, err := Migrations()
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store %s: %w", where(cfg), err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx, ms); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store %s: %w", where(cfg), err)
	}
	return s, nil
}

// where names the database of cfg for messages, without its password.
func where(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// migrate applies the pending migrations in one transaction that holds
// the migration lock: a second process opening the database meanwhile
// waits, then finds them applied.
func (s *Store) migrate(ctx context.Context, ms []migrate.Migration) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var applied int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&applied); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	pending, err := migrate.Pending(applied, ms)
	if err != nil {
		return err
	}
	for _, m := range pending {
		// No arguments: pgx sends it with the simple protocol, which runs
		// every statement of the file.
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			m.Version, m.Name, time.Now().UTC()); err != nil {
			return fmt.Errorf("migration %04d_%s: record: %w", m.Version, m.Name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// SchemaVersion implements store.Store.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

// Close closes the pool; later calls do nothing.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// isUnique says whether err is a unique_violation.
func isUnique(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23505"
}

// exists turns a unique violation into store.ErrExists.
func exists(what string, err error) error {
	if isUnique(err) {
		return fmt.Errorf("%s: %w", what, store.ErrExists)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// found turns pgx.ErrNoRows into store.ErrNotFound.
func found(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// one checks that an UPDATE by ID found its row.
func one(what string, tag pgconn.CommandTag) error {
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// collect scans every row; an empty result is an empty, non-nil slice.
func collect[T any](rows pgx.Rows, what string, scan func(pgx.Row) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		x, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// ts is how a time is passed: UTC microseconds, NULL for the zero time.
func ts(t time.Time) any {
	t = codec.Time(t)
	if t.IsZero() {
		return nil
	}
	return t
}

// tsCol scans a timestamptz into a time in UTC (pgx gives local times).
type tsCol struct{ t *time.Time }

func (c *tsCol) ScanTimestamptz(v pgtype.Timestamptz) error {
	if !v.Valid {
		*c.t = time.Time{}
		return nil
	}
	if v.InfinityModifier != pgtype.Finite {
		return fmt.Errorf("timestamp is infinite")
	}
	*c.t = v.Time.UTC()
	return nil
}

func tm(t *time.Time) *tsCol { return &tsCol{t} }

// jsonCol scans a json column into a value.
type jsonCol struct{ v any }

func (c *jsonCol) ScanBytes(b []byte) error {
	if b == nil {
		return fmt.Errorf("JSON column is NULL")
	}
	return codec.Unjson("column", b, c.v)
}

func js(v any) *jsonCol { return &jsonCol{v} }

// u64Col scans a bigint holding a uint64's bit pattern.
type u64Col struct{ u *uint64 }

func (c *u64Col) ScanInt64(v pgtype.Int8) error {
	if !v.Valid {
		return fmt.Errorf("integer column is NULL")
	}
	*c.u = uint64(v.Int64)
	return nil
}

func u64(u *uint64) *u64Col { return &u64Col{u} }

// text passes a JSON document as text, so that pgx sends it verbatim.
func text(b []byte) string { return string(b) }

// nullText passes "" as NULL (unique columns where empty means none).
func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}
