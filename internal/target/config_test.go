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

// A managed configuration needs no tls: section; its address and
// heartbeat reach Control.
func TestManagedConfig(t *testing.T) {
	c, err := LoadConfig("testdata/managed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS != nil || o.Control == nil || o.Control.Address != "mt1.example.com:9830" || o.Control.Heartbeat.Seconds() != 15 || o.Control.Identity != "/etc/standby/target" {
		t.Fatalf("managed options: TLS %v, control %+v", o.TLS, o.Control)
	}
	// Without address, listen is the default unless it is a wildcard.
	c.Control.Address = ""
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "control.address") {
		t.Fatalf("wildcard listen without control.address: %v", err)
	}
	c.Listen = "10.0.0.5:9830"
	if o, err := c.Options(); err != nil || o.Control.Address != "10.0.0.5:9830" {
		t.Fatalf("address from listen: %+v, %v", o.Control, err)
	}
	c, err = LoadConfig("testdata/bad-control.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	for _, w := range []string{"control.server", "control.identity", "control.heartbeat", "control.address"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("bad-control.yaml: error %v does not mention %s", err, w)
		}
	}
}

// A driver: section is kept for cmd/ to build; it needs a name, control:
// (test failovers come from the server) and exports: (replica machines
// run from them).
func TestDriverConfig(t *testing.T) {
	c, err := LoadConfig("testdata/managed-driver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Options(); err != nil {
		t.Fatal(err)
	}
	if c.Driver == nil || c.Driver.Name != "exec" || c.Driver.Settings["start"] == nil {
		t.Fatalf("driver section read as %+v", c.Driver)
	}
	c, err = LoadConfig("testdata/bad-driver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	for _, w := range []string{"driver.name: required", "set control: too", "set exports: too"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("bad-driver.yaml: error %v does not mention %q", err, w)
		}
	}
}
