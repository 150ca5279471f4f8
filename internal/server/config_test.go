package server

import (
	"strings"
	"testing"
)

func TestSampleConfig(t *testing.T) {
	c, err := LoadConfig("../../configs/server.sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("sample config: %v", err)
	}
	if got := c.StoreURL(); got != "sqlite:/var/lib/standby/server/standby.db" {
		t.Errorf("default store %q", got)
	}
}

func TestInvalidConfigs(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"bad.yaml", []string{"listen", "data_dir", "hosts", "cert_validity", "alert_webhook", "log_level"}},
		{"unknown-field.yaml", []string{"stor"}},
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
