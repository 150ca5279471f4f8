package pgtest

import "testing"

func TestExternal(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:pw@db:5432/postgres?sslmode=disable", "postgres://u:pw@db:5432/standby_x?sslmode=disable"},
		{"postgresql://u@/postgres?host=/run/postgresql", "postgresql://u@/standby_x?host=/run/postgresql"},
		{"host=db user=u dbname=postgres", "host=db user=u dbname=postgres dbname=standby_x"},
	} {
		s, skip, err := external(tc.dsn)
		if err != nil || skip != "" {
			t.Fatalf("external(%q): %q, %v", tc.dsn, skip, err)
		}
		if got := s.dsn("standby_x"); got != tc.want {
			t.Errorf("external(%q): database DSN %q, want %q", tc.dsn, got, tc.want)
		}
		if s.admin != tc.dsn || s.stop != nil {
			t.Errorf("external(%q): admin %q, stop %v; want the DSN itself and nothing to stop", tc.dsn, s.admin, s.stop != nil)
		}
	}
}
