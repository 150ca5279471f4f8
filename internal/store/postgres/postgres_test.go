package postgres

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/postgres/pgtest"
	"github.com/standby-dr/standby/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// mustOpen opens the store at dsn; the test fails on an error.
func mustOpen(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return mustOpen(t, pgtest.DSN(t))
	}, storetest.WithReopen(func(t *testing.T) func() store.Store {
		dsn := pgtest.DSN(t)
		return func() store.Store { return mustOpen(t, dsn) }
	}))
}

func TestSchemaTooNew(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := mustOpen(t, dsn)
	defer s.Close()
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.SchemaVersion(t.Context()); err != nil || v != len(ms) {
		t.Fatalf("schema version %d, %v; want %d", v, err, len(ms))
	}
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'from_the_future', now())`, len(ms)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(t.Context(), dsn); !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("open a database of a newer standby: got %v, want ErrSchemaTooNew", err)
	}
}

// TestConcurrentOpen: processes that open one new database at once apply
// each migration once (schema_migrations' primary key would make a second
// application fail that Open).
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.DSN(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	stores := make([]*Store, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stores[i], errs[i] = Open(context.Background(), dsn)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	var rows, max int
	if err := stores[0].pool.QueryRow(t.Context(), `SELECT count(*), max(version) FROM schema_migrations`).Scan(&rows, &max); err != nil {
		t.Fatal(err)
	}
	ms, _ := Migrations()
	if rows != len(ms) || max != len(ms) {
		t.Fatalf("schema_migrations: %d rows up to %d; want %d", rows, max, len(ms))
	}
}

func TestOpenRefuses(t *testing.T) {
	_, err := Open(t.Context(), "postgres://u:secret@host:notaport/db")
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad DSN: got %v, want ErrInvalid", err)
	}
	if err != nil && strings.Contains(err.Error(), "secret") {
		t.Fatalf("bad DSN: the error shows the password: %v", err)
	}
}
