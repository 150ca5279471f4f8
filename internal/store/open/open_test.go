package open

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/postgres"
	"github.com/standby-dr/standby/internal/store/postgres/pgtest"
	"github.com/standby-dr/standby/internal/store/sqlite"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		url     string
		backend Backend
		target  string
	}{
		{"sqlite:/var/lib/standby/standby.db", SQLite, "/var/lib/standby/standby.db"},
		{"sqlite:standby.db", SQLite, "standby.db"},
		{"sqlite:///var/lib/standby/standby.db", SQLite, "/var/lib/standby/standby.db"},
		{"sqlite://standby.db", SQLite, "standby.db"},
		{"/var/lib/standby/standby.db", SQLite, "/var/lib/standby/standby.db"},
		{"./standby.db", SQLite, "./standby.db"},
		{"standby.db", SQLite, "standby.db"},
		{"postgres://standby:pw@db:5432/standby?sslmode=verify-full", Postgres, "postgres://standby:pw@db:5432/standby?sslmode=verify-full"},
		{"postgresql:///standby?host=/run/postgresql", Postgres, "postgresql:///standby?host=/run/postgresql"},
	} {
		b, target, err := Parse(tc.url)
		if err != nil || b != tc.backend || target != tc.target {
			t.Errorf("Parse(%q): got %s %q %v, want %s %q", tc.url, b, target, err, tc.backend, tc.target)
		}
	}
	for _, url := range []string{"", "sqlite:", "sqlite://", "mysql://root:hunter2@db/standby", "postgress://u:hunter2@db/x"} {
		_, _, err := Parse(url)
		if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "postgresql://") {
			t.Errorf("Parse(%q): got %v, want ErrInvalid listing the forms", url, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Parse(%q): the error shows the password: %v", url, err)
		}
	}
}

// TestOpen opens each backend by URL and checks it is the one asked for,
// working.
func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "standby.db")
	for _, url := range []string{"sqlite:" + path, "sqlite://" + path, path} {
		s, err := Open(t.Context(), url)
		if err != nil {
			t.Fatalf("Open(%q): %v", url, err)
		}
		if _, ok := s.(*sqlite.Store); !ok {
			t.Fatalf("Open(%q): got %T, want *sqlite.Store", url, s)
		}
		use(t, s)
	}
	if err := sqlite.CheckFile(t.Context(), path); err != nil {
		t.Fatal(err)
	}

	s, err := Open(t.Context(), pgtest.DSN(t))
	if err != nil {
		t.Fatalf("Open(postgres): %v", err)
	}
	if _, ok := s.(*postgres.Store); !ok {
		t.Fatalf("Open(postgres): got %T, want *postgres.Store", s)
	}
	use(t, s)
}

// use writes to s, reads it back and closes it.
func use(t *testing.T, s store.Store) {
	t.Helper()
	defer s.Close()
	if _, err := s.AppendAudit(t.Context(), control.AuditEntry{At: testTime, Action: "test.open"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListAudit(t.Context(), 1)
	if err != nil || len(got) != 1 || got[0].Action != "test.open" {
		t.Fatalf("audit read back: %+v, %v", got, err)
	}
}

var testTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
