package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := dispatch(context.Background(), &env{stdout: &out, stderr: &errb}, args)
	return out.String(), errb.String(), exitCode(err)
}

// TestDemoAndInspectContract runs the demo, then checks the JSON contract
// of journal inspect and replay on what it left.
func TestDemoAndInspectContract(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := runCLI(t, "demo", "--capture-only", "--dir", dir, "--keep", "--duration", "500ms", "--size", "32MiB", "--connections", "2")
	if code != 0 || !strings.Contains(out, "Replay equality holds") {
		t.Fatalf("demo exit %d:\n%s\n%s", code, out, errs)
	}
	out, errs, code = runCLI(t, "journal", "inspect", "-o", "json", "--records", filepath.Join(dir, "agent"))
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, errs)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	totals := rep["totals"].(map[string]any)
	for _, k := range []string{"segments", "records", "writes", "write_bytes", "zeroes", "trims", "bookmarks", "first_seq", "last_seq", "damaged_segments", "resync_records"} {
		if _, ok := totals[k]; !ok {
			t.Errorf("totals lacks %q", k)
		}
	}
	seg := rep["segments"].([]any)[0].(map[string]any)
	for _, k := range []string{"path", "machine_id", "epoch", "first_seq", "last_seq", "records", "size", "sealed", "chain", "status"} {
		if _, ok := seg[k]; !ok {
			t.Errorf("segment lacks %q", k)
		}
	}
	recs := rep["records"].([]any)
	if float64(len(recs)) != totals["records"].(float64) || totals["writes"].(float64) == 0 {
		t.Fatalf("%d records listed, totals %v", len(recs), totals)
	}

	// A damaged segment: exit 1 and the damage named in its status.
	segs, _ := filepath.Glob(filepath.Join(dir, "agent", "journal", "*.seg"))
	b, _ := os.ReadFile(segs[0])
	b[len(b)/2] ^= 0xff
	os.WriteFile(segs[0], b, 0o600)
	out, _, code = runCLI(t, "journal", "inspect", segs[0])
	if code != 1 || !strings.Contains(out, "checksum") {
		t.Fatalf("damaged segment: exit %d\n%s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := [][]string{
		{"no-such-command"},
		{"journal", "inspect"},
		{"journal", "inspect", "-o", "yaml", "x"},
		{"demo", "--size", "12 apples"},
		{"agent", "--disk", "nopath"},
		{"agent", "extra-arg"},
	}
	for _, args := range tests {
		if _, _, code := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	var out, errb bytes.Buffer
	err := dispatch(context.Background(), &env{stdout: &out, stderr: &errb}, []string{"agent", "--machine", "x"})
	if exitCode(err) != exitError || err == nil || !strings.Contains(err.Error(), "disks: at least one disk") {
		t.Errorf("agent without disks: %v", err)
	}
}

// TestTwoSiteDemo runs the default demo, small.
func TestTwoSiteDemo(t *testing.T) {
	out, errs, code := runCLI(t, "demo", "--duration", "1s", "--size", "32MiB", "--connections", "2")
	if code != 0 || !strings.Contains(out, "equals the source byte for byte") || !strings.Contains(out, "achieved RPO") {
		t.Fatalf("demo exit %d:\n%s\n%s", code, out, errs)
	}
	// It goes through the configuration server, and says nothing alarming.
	for _, want := range []string{"configuration server on", "joined with a one-time token", "job succeeded: machine web01 is protected", "in the server's catalogue",
		"cleanup in", "source stopped; data lost: none", "protected in reverse after", "equals the failed-over machine's disk",
		"machine protected in the original direction", "the old agent is fenced", "against the source as it was lost: data lost: none",
		"machine failover-committed; recovery points kept: "} {
		if !strings.Contains(out, want) {
			t.Errorf("the demo does not say %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "data lost: none (byte for byte equal)"); n != 4 || strings.Contains(out, "DATA LOST") {
		t.Errorf("the demo says \"data lost: none\" %d times, not 4 (test failover, planned failover, failback, unplanned failover):\n%s", n, out)
	}
	if strings.Count(out, "recovery points kept: ") != 1 || !strings.Contains(out, "recovery points kept: ") || strings.Contains(out[strings.Index(out, "recovery points kept: "):], ",") {
		t.Errorf("the commit kept more than one point:\n%s", out)
	}
	if strings.Contains(errs, "level=ERROR") || strings.Contains(errs, "level=WARN") {
		t.Errorf("the demo logged warnings or errors:\n%s", errs)
	}
}
