package migrate

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/standby-dr/standby/internal/store"
)

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"m/0002_jobs.sql": {Data: []byte("CREATE TABLE jobs (id TEXT);")},
		"m/0001_init.sql": {Data: []byte("CREATE TABLE sites (id TEXT);")},
	}
	ms, err := Load(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Version != 1 || ms[0].Name != "init" || ms[1].Version != 2 || ms[1].SQL != "CREATE TABLE jobs (id TEXT);" {
		t.Fatalf("got %+v, want init then jobs", ms)
	}
}

func TestLoadRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		files []string
		want  string
	}{
		"gap":       {[]string{"0001_a.sql", "0003_c.sql"}, "want version 2"},
		"duplicate": {[]string{"0001_a.sql", "0001_b.sql", "0002_c.sql"}, "want version 2"},
		"no one":    {[]string{"0002_b.sql"}, "want version 1"},
		"misnamed":  {[]string{"0001_a.sql", "2_b.sql"}, "want NNNN_name.sql"},
		"upper":     {[]string{"0001_Init.sql"}, "want NNNN_name.sql"},
		"not sql":   {[]string{"0001_a.sql", "README"}, "want NNNN_name.sql"},
		"empty":     {nil, "none in m"},
	} {
		t.Run(name, func(t *testing.T) {
			fsys := fstest.MapFS{"m": {Mode: fs.ModeDir | 0o755}}
			for _, f := range tc.files {
				fsys["m/"+f] = &fstest.MapFile{Data: []byte("SELECT 1;")}
			}
			_, err := Load(fsys, "m")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestPending(t *testing.T) {
	all := []Migration{{Version: 1}, {Version: 2}, {Version: 3}}
	for applied, want := range map[int]int{0: 3, 1: 2, 3: 0} {
		got, err := Pending(applied, all)
		if err != nil || len(got) != want || (want > 0 && got[0].Version != applied+1) {
			t.Errorf("Pending(%d): got %v, %v; want %d migrations from %d", applied, got, err, want, applied+1)
		}
	}
	if _, err := Pending(4, all); !errors.Is(err, store.ErrSchemaTooNew) {
		t.Errorf("Pending(4) of 3: got %v, want ErrSchemaTooNew", err)
	}
}
