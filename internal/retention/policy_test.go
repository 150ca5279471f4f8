package retention

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDefaultsValid(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("Defaults().Validate() = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		fields []string // the fields the errors name, in order; nil for valid
	}{
		{"only KeepAll", Policy{KeepAll: time.Minute}, nil},
		{"only app-consistent", Policy{KeepAppConsistent: 1}, nil},
		{"Max 0 means no limit", Policy{Daily: 400}, nil},
		{"Max equal to the daily window", Policy{Daily: 7, Max: 7 * day}, nil},
		{"negative KeepAll", Policy{KeepAll: -time.Second, Hourly: 1}, []string{"KeepAll"}},
		{"negative Hourly", Policy{Hourly: -1, Daily: 1}, []string{"Hourly"}},
		{"negative Daily", Policy{Daily: -1, Hourly: 1}, []string{"Daily"}},
		{"negative KeepAppConsistent", Policy{KeepAppConsistent: -2, Hourly: 1}, []string{"KeepAppConsistent"}},
		{"negative Max", Policy{Hourly: 1, Max: -time.Hour}, []string{"Max"}},
		{"Max shorter than KeepAll", Policy{KeepAll: 2 * time.Hour, Max: time.Hour}, []string{"Max"}},
		{"Max shorter than Hourly", Policy{Hourly: 48, Max: day}, []string{"Max"}},
		{"Max shorter than Daily", Policy{Daily: 8, Max: 7 * day}, []string{"Max"}},
		{"keeps nothing", Policy{Max: day}, []string{"KeepAll, Hourly, Daily, KeepAppConsistent"}},
		{"zero value keeps nothing", Policy{}, []string{"KeepAll, Hourly, Daily, KeepAppConsistent"}},
		{"several at once", Policy{Hourly: -1, Daily: -1}, []string{"Hourly", "Daily"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if tt.fields == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("Validate() = %v, want ErrInvalidPolicy", err)
			}
			var fields []string
			for _, e := range unjoin(err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("error %v is not a *FieldError", e)
				}
				if fe.Allowed == "" || !strings.Contains(fe.Error(), "allowed: ") {
					t.Errorf("error %q does not list the allowed values", fe)
				}
				fields = append(fields, fe.Field)
			}
			if strings.Join(fields, "|") != strings.Join(tt.fields, "|") {
				t.Errorf("errors name %q, want %q", fields, tt.fields)
			}
		})
	}
}

func TestValidateMessage(t *testing.T) {
	err := Policy{Daily: 8, Max: 7 * day}.Validate()
	want := "retention policy: Max = 7 days: allowed: 0 (no limit) or at least 8 days, the window of KeepAll, Hourly and Daily"
	if err == nil || err.Error() != want {
		t.Errorf("Validate() = %v\nwant %s", err, want)
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestPolicyString(t *testing.T) {
	got := Defaults().String()
	want := "keep all within 1h0m0s, 24 hourly, 7 daily, 3 app-consistent, max 7 days"
	if got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (Policy{Hourly: 1}).String(); !strings.HasSuffix(got, "max unlimited") {
		t.Errorf("String() = %q, want max unlimited", got)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Hour:           "1h0m0s",
		day:                 "1 day",
		7 * day:             "7 days",
		36 * time.Hour:      "36h0m0s",
		0:                   "0s",
		90 * time.Minute:    "1h30m0s",
		30 * 24 * time.Hour: "30 days",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
