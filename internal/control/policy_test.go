package control

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/retention"
)

func TestDefaultPolicyIsValid(t *testing.T) {
	p := DefaultPolicy()
	if err := p.Validate(); err != nil {
		t.Fatalf("DefaultPolicy().Validate() = %v", err)
	}
	if p.PointInterval.D() != 10*time.Second || p.RPOThreshold.D() != 30*time.Second ||
		p.AppInterval.D() != time.Hour || p.Compression != "auto" || p.BandwidthLimit != 0 ||
		p.Retention != retention.Defaults() || !p.InitialStart.IsZero() {
		t.Errorf("DefaultPolicy() = %+v", p)
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Policy)
		want   []string // substrings, one per invalid field; none: valid
	}{
		{"defaults", func(*Policy) {}, nil},
		{"app off", func(p *Policy) { p.AppInterval = 0 }, nil},
		{"app equal to point", func(p *Policy) { p.AppInterval = p.PointInterval }, nil},
		{"point 1s", func(p *Policy) { p.PointInterval = Duration(time.Second) }, nil},
		{"bandwidth", func(p *Policy) { p.BandwidthLimit = 50 << 20 }, nil},
		{"each compression", func(p *Policy) { p.Compression = "best" }, nil},
		{"point too small", func(p *Policy) { p.PointInterval = Duration(500 * time.Millisecond) },
			[]string{"point_interval = 500ms: allowed: at least 1s"}},
		{"app below point", func(p *Policy) { p.AppInterval = Duration(5 * time.Second) },
			[]string{"app_interval = 5s: allowed: 0 (off) or at least the point interval (10s)"}},
		{"app negative", func(p *Policy) { p.AppInterval = Duration(-time.Hour) },
			[]string{"app_interval = -1h0m0s"}},
		{"rpo zero", func(p *Policy) { p.RPOThreshold = 0 },
			[]string{"rpo_threshold = 0s: allowed: a positive duration"}},
		{"compression", func(p *Policy) { p.Compression = "zstd" },
			[]string{`compression = "zstd": allowed: auto, off, fastest, standard, better, best`}},
		{"compression empty", func(p *Policy) { p.Compression = "" },
			[]string{`compression = ""`}},
		{"bandwidth negative", func(p *Policy) { p.BandwidthLimit = -1 },
			[]string{"bandwidth_limit = -1: allowed: 0 (no limit)"}},
		{"retention", func(p *Policy) { p.Retention.Hourly = -1; p.Retention.Daily = -2 },
			[]string{"retention policy: Hourly = -1", "retention policy: Daily = -2"}},
		{"everything", func(p *Policy) { *p = Policy{AppInterval: Duration(-1), BandwidthLimit: -5} },
			[]string{"point_interval", "app_interval", "retention policy", "rpo_threshold", "compression", "bandwidth_limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := DefaultPolicy()
			tt.change(&p)
			err := p.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want %q", tt.want)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("Validate() = %v; does not wrap ErrInvalidPolicy", err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("Validate() gave %d errors; want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v; want it to say %q", err, w)
				}
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "replication policy: ") {
					t.Errorf("error line %q does not say it is about the replication policy", l)
				}
			}
		})
	}
}

func TestPolicyRetentionErrorsWrapBoth(t *testing.T) {
	p := DefaultPolicy()
	p.Retention.Daily = -1
	err := p.Validate()
	var fe *retention.FieldError
	if !errors.Is(err, retention.ErrInvalidPolicy) || !errors.As(err, &fe) || fe.Field != "Daily" {
		t.Errorf("Validate() = %v; want a retention.FieldError for Daily", err)
	}
	p = DefaultPolicy()
	p.Compression = "max"
	var pe *PolicyFieldError
	if err := p.Validate(); !errors.As(err, &pe) || pe.Field != "compression" {
		t.Errorf("Validate() = %v; want a PolicyFieldError for compression", err)
	}
}

func TestPolicyJSONRoundTrip(t *testing.T) {
	p := DefaultPolicy()
	p.BandwidthLimit = 10 << 20
	p.InitialStart = time.Date(2025, 3, 1, 22, 0, 0, 0, time.UTC)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"point_interval":"10s"`, `"app_interval":"1h0m0s"`, `"rpo_threshold":"30s"`, `"compression":"auto"`} {
		if !strings.Contains(string(b), w) {
			t.Errorf("JSON %s lacks %s", b, w)
		}
	}
	var back Policy
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, p) {
		t.Errorf("round trip: got %+v; want %+v", back, p)
	}

	// An operator writes durations as text.
	in := `{"point_interval":"5s","app_interval":"0s","rpo_threshold":"1m","compression":"off","bandwidth_limit":0,
		"retention":{"keep_all":3600000000000,"hourly":24,"daily":7,"max":604800000000000,"keep_app_consistent":0}}`
	var q Policy
	if err := json.Unmarshal([]byte(in), &q); err != nil {
		t.Fatal(err)
	}
	if q.PointInterval.D() != 5*time.Second || q.RPOThreshold.D() != time.Minute || q.AppInterval != 0 {
		t.Errorf("parsed %+v", q)
	}
	if err := q.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	if err := json.Unmarshal([]byte(`{"point_interval":"ten seconds"}`), &q); err == nil ||
		!strings.Contains(err.Error(), `want text such as "10s"`) {
		t.Errorf("bad duration: got %v", err)
	}
}
