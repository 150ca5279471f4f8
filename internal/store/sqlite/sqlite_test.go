package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/storetest"
)

// MustOpen opens a store at path and registers its close. With check, the
// test ends with an integrity check of the file (after every store of the
// test was closed: cleanups run last-in, first-out).
func MustOpen(tb testing.TB, path string) *Store {
	tb.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// mustCheck registers an integrity check of the database at path, run at
// the end of the test (STYLE habit 12).
func mustCheck(tb testing.TB, path string) {
	tb.Helper()
	tb.Cleanup(func() {
		if err := CheckFile(context.Background(), path); err != nil {
			tb.Errorf("integrity: %v", err)
		}
	})
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		path := filepath.Join(t.TempDir(), "standby.db")
		mustCheck(t, path)
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.WithReopen(func(t *testing.T) func() store.Store {
		path := filepath.Join(t.TempDir(), "standby.db")
		mustCheck(t, path)
		return func() store.Store {
			s, err := Open(t.Context(), path)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}))
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "standby.db")
	mustCheck(t, path)
	s := MustOpen(t, path)
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.SchemaVersion(t.Context()); err != nil || v != len(ms) {
		t.Fatalf("schema version %d, %v; want %d", v, err, len(ms))
	}
	if _, err := s.w.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_the_future', 0)`, len(ms)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(t.Context(), path)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("open a database of a newer standby: got %v, want ErrSchemaTooNew", err)
	}
}

func TestOpenSettings(t *testing.T) {
	// A '?' and a '#' in the path are part of the file name.
	path := filepath.Join(t.TempDir(), "odd ?name#.db")
	mustCheck(t, path)
	s := MustOpen(t, path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
	for _, tc := range []struct {
		db     *sql.DB
		pragma string
		want   string
	}{
		{s.w, "journal_mode", "wal"},
		{s.w, "foreign_keys", "1"},
		{s.w, "synchronous", "1"}, // NORMAL
		{s.w, "busy_timeout", "10000"},
		{s.r, "foreign_keys", "1"},
		{s.r, "query_only", "1"},
	} {
		var got string
		if err := tc.db.QueryRowContext(t.Context(), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !strings.EqualFold(got, tc.want) {
			t.Errorf("PRAGMA %s: got %s, want %s", tc.pragma, got, tc.want)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	for _, path := range []string{"", ":memory:", "file:x.db?mode=memory"} {
		if _, err := Open(t.Context(), path); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Open(%q): got %v, want ErrInvalid", path, err)
		}
	}
	_, err := Open(t.Context(), filepath.Join(t.TempDir(), "missing", "dir", "x.db"))
	if err == nil {
		t.Error("Open in a missing directory: got no error")
	}
}
