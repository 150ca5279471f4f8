package process

import (
	"strings"
	"testing"
)

func TestSampleConfig(t *testing.T) {
	c, err := LoadConfig("../../configs/process.sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("sample config: %v", err)
	}
}

func TestInvalidConfigs(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"no-quota.yaml", []string{"cache_quota: required"}},
		{"bad-values.yaml", []string{"listen:", "cache_quota:", "master_target:", "tls.key: required", "tls.ca: required", "bandwidth_limit:", "compression:", "copies: \"direct\": want tunnel or relay"}},
	} {
		c, err := LoadConfig("testdata/" + tc.file)
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("%s: valid, want errors", tc.file)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", tc.file, err, w)
			}
		}
	}
}

// A managed configuration needs neither tls: nor master_target; its
// address defaults to listen.
func TestManagedConfig(t *testing.T) {
	c, err := LoadConfig("testdata/managed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS != nil || o.Control == nil || o.Control.Address != "10.0.0.4:9820" || o.Control.Heartbeat.Seconds() != 10 {
		t.Fatalf("managed options: TLS %v, control %+v", o.TLS, o.Control)
	}
	c, err = LoadConfig("testdata/bad-control.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	for _, w := range []string{"control.server", "control.identity", "control.heartbeat", "control.address", "master_target"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("bad-control.yaml: error %v does not mention %s", err, w)
		}
	}
}
