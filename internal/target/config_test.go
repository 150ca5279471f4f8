package target

import (
	"strings"
	"testing"
)

func TestSampleConfig(t *testing.T) {
	c, err := LoadConfig("../../configs/target.sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("sample config: %v", err)
	}
	p, _ := c.Retention.Policy()
	if p.Hourly != 24 || p.KeepAll.Hours() != 1 {
		t.Fatalf("sample retention read as %+v", p)
	}
}

func TestInvalidConfigs(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"bad-retention.yaml", []string{"retention.keep_all", "prune_interval"}},
		{"unknown-field.yaml", []string{"retension"}},
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
