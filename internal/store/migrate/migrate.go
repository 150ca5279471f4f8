package migrate

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"

	"github.com/standby-dr/standby/internal/store"
)

// Migration is one schema change.
type Migration struct {
	Version int    // 1, 2, ...
	Name    string // the file name without the number and ".sql"
	SQL     string // statements, run in one transaction
}

var fileName = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.sql$`)

// Load reads the migrations in dir of fsys, ordered by version. Every file
// in dir must be a migration; a misnamed file, a duplicate or a gap is an
// error, so that a mistake shows up in the first test run, not in the field.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			return nil, fmt.Errorf("migration file %q: want NNNN_name.sql (four digits, lowercase name)", e.Name())
		}
		v, _ := strconv.Atoi(m[1])
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		ms = append(ms, Migration{Version: v, Name: m[2], SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration %04d_%s: want version %d (versions start at 1, without gaps or duplicates)", m.Version, m.Name, i+1)
		}
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("read migrations: none in %s", dir)
	}
	return ms, nil
}

// Pending returns the migrations a database at version applied still
// needs, in order. A version beyond the newest known gives
// store.ErrSchemaTooNew.
func Pending(applied int, all []Migration) ([]Migration, error) {
	if applied > len(all) {
		return nil, fmt.Errorf("database schema version %d, this standby knows up to %d: %w (run the newer standby, or restore a backup taken before the upgrade)",
			applied, len(all), store.ErrSchemaTooNew)
	}
	if applied < 0 {
		return nil, fmt.Errorf("database schema version %d is negative: the schema_migrations table is damaged", applied)
	}
	return all[applied:], nil
}
