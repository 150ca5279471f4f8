package open

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/postgres"
	"github.com/standby-dr/standby/internal/store/sqlite"
)

// Forms lists the accepted URL forms, for help texts and error messages.
const Forms = "sqlite:PATH, sqlite://PATH, a bare PATH (SQLite), postgres://... or postgresql://... (PostgreSQL)"

// Backend names a store implementation.
type Backend string

// The backends.
const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

var scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)

// Parse says which backend url selects and what to open it with: the
// file's path for SQLite, the URL itself for PostgreSQL.
func Parse(url string) (Backend, string, error) {
	switch {
	case url == "":
		return "", "", fmt.Errorf("store URL is empty: want %s: %w", Forms, store.ErrInvalid)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return Postgres, url, nil
	case strings.HasPrefix(url, "sqlite://"):
		return sqlitePath(strings.TrimPrefix(url, "sqlite://"))
	case strings.HasPrefix(url, "sqlite:"):
		return sqlitePath(strings.TrimPrefix(url, "sqlite:"))
	case scheme.MatchString(url):
		// Only the scheme is quoted: the rest may hold a password.
		return "", "", fmt.Errorf("store URL scheme %q: want %s: %w", scheme.FindString(url), Forms, store.ErrInvalid)
	default:
		return sqlitePath(url)
	}
}

func sqlitePath(p string) (Backend, string, error) {
	if p == "" {
		return "", "", fmt.Errorf("store URL names no SQLite file: want %s: %w", Forms, store.ErrInvalid)
	}
	return SQLite, p, nil
}

// Open opens the store url names, applying its migrations.
func Open(ctx context.Context, url string) (store.Store, error) {
	backend, target, err := Parse(url)
	if err != nil {
		return nil, err
	}
	switch backend {
	case SQLite:
		return sqlite.Open(ctx, target)
	default:
		return postgres.Open(ctx, target)
	}
}
