package codec

import (
	"errors"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

func TestTime(t *testing.T) {
	zone := time.FixedZone("X", -7*3600)
	for _, tc := range []struct{ in, want time.Time }{
		{time.Time{}, time.Time{}},
		{time.Date(2025, 1, 2, 3, 4, 5, 999999999, zone), time.Date(2025, 1, 2, 10, 4, 5, 999999000, time.UTC)},
		{time.Date(1969, 12, 31, 23, 59, 59, 1500, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 1000, time.UTC)},
	} {
		got := Time(tc.in)
		if got != tc.want { // == : location and monotonic reading too
			t.Errorf("Time(%v): got %v, want %v", tc.in, got, tc.want)
		}
	}
	if now := Time(time.Now()); now != now.Round(0) {
		t.Error("Time(time.Now()) kept the monotonic reading")
	}
}

// TestCopies: normalising never changes the caller's slices.
func TestCopies(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6789, time.Local)
	j := control.Job{ID: "j", Kind: "k", State: control.JobQueued,
		Steps: []control.Step{{StartedAt: at}}, Log: []control.LogLine{{At: at}}, Params: []byte(`{}`)}
	n, err := Job(j)
	if err != nil {
		t.Fatal(err)
	}
	n.Params[0] = '['
	if j.Steps[0].StartedAt != at || j.Log[0].At != at || string(j.Params) != `{}` {
		t.Fatalf("Job changed its argument: %+v", j)
	}
	m := control.Machine{ID: "m", Name: "m", Disks: []control.Disk{{Name: "a"}}, HealthReasons: []string{"x"}}
	nm, err := Machine(m)
	if err != nil {
		t.Fatal(err)
	}
	nm.Disks[0].Name, nm.HealthReasons[0] = "b", "y"
	if m.Disks[0].Name != "a" || m.HealthReasons[0] != "x" {
		t.Fatalf("Machine shares its argument's slices: %+v", m)
	}
}

func TestInvalid(t *testing.T) {
	for name, err := range map[string]error{
		"NUL":       texts("x", nil, "name", "a\x00"),
		"not UTF-8": texts("x", nil, "name", "\xc3"),
		"empty":     texts("x", []string{"id"}, "id", ""),
		"role":      validRole("x", "queen"),
		"no expiry": func() error {
			_, err := JoinToken(control.JoinToken{ID: "k", Hash: "h", Role: control.RoleAgent})
			return err
		}(),
		"point twice": func() error { _, err := Points("m", []control.RecoveryPoint{{ID: 1}, {ID: 1}}); return err }(),
	} {
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	if err := texts("x", []string{"id"}, "id", "ok", "name", "ünï ✓\t\n"); err != nil {
		t.Errorf("valid text: %v", err)
	}
}
