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
		{"bad-values.yaml", []string{"listen:", "cache_quota:", "master_target:", "tls.key: required", "tls.ca: required", "bandwidth_limit:", "compression:"}},
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
