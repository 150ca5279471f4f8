package agent

import (
	"strings"
	"testing"
)

func TestSampleConfigIsValid(t *testing.T) {
	c, err := LoadConfig("../../configs/agent.sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("sample config: %v", err)
	}
	if len(c.Disks) != 2 || c.Journal.Limit != "1GiB" || c.BookmarkInterval != "10s" ||
		c.AppConsistent.Interval != "1h" || len(c.AppConsistent.FSFreeze) != 1 || len(c.AppConsistent.Pre) != 2 {
		t.Fatalf("sample config read as %+v", c)
	}
}

func TestManagedConfig(t *testing.T) {
	c, err := LoadConfig("testdata/managed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("managed config: %v", err)
	}
	if c.Control.Heartbeat != "10s" || c.Replication.Window != 8 || c.Replication.ShipInterval != "1s" {
		t.Fatalf("managed config read as control %+v, replication %+v", c.Control, c.Replication)
	}
	// Without control, a replication section must name its process server.
	c.Control = nil
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "replication.process_server") {
		t.Fatalf("unmanaged replication without a process server: %v", err)
	}
}

func TestInvalidConfigsFail(t *testing.T) {
	tests := []struct {
		file string
		want []string // every one must appear in the error
	}{
		{"no-disks.yaml", []string{"disks: at least one disk"}},
		{"unknown-field.yaml", []string{"journal_limit", "not found"}},
		{"bad-values.yaml", []string{
			"listen: set unix",
			`disks[0].name: "root disk"`,
			"disks[1].path: required",
			"journal.segment_size",
			"bookmark_interval: 100ms is outside 1s..1h",
			`log_level: "loud" is not one of debug, info, warn, error`,
		}},
		{"bad-app-consistent.yaml", []string{
			"app_consistent.interval: 30s is outside 1m..24h",
			"app_consistent.timeout: 10m0s is outside 1s..5m",
			`app_consistent.fsfreeze[0]: "srv/data" must be an absolute mount point path`,
			`app_consistent.fsfreeze[2]: "/srv/logs/" is listed twice`,
			`app_consistent.pre: "db-flush" must be an absolute program path`,
		}},
		{"bad-managed.yaml", []string{
			`control.server: "http://dr.example.net:9443" is not https://HOST:PORT`,
			"control.identity: required",
			"control.heartbeat: 500ms is outside 1s..5m",
			"replication.process_server: the configuration server names the process server in managed mode",
			"replication.tls: a managed agent uses its joined identity",
		}},
		{"app-consistent-nothing-to-quiesce.yaml", []string{
			"app_consistent: interval is 1h but nothing quiesces",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := LoadConfig("testdata/" + tt.file)
			if err == nil {
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("invalid config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1GiB", 1 << 30, true},
		{"512KiB", 512 << 10, true},
		{"4096", 4096, true},
		{"16 MiB", 16 << 20, true},
		{"1GB", 0, false},
		{"-1MiB", 0, false},
		{"", 0, false},
		{"99999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && FormatSize(got) == "" {
			t.Errorf("FormatSize(%d) empty", got)
		}
	}
}
