package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store/sqlite"
)

// Every sample plan in configs/plans decodes and validates; every sample
// in configs/plans/invalid fails with the error its first line names
// ("# error: ...").
func TestSamplePlans(t *testing.T) {
	valid, _ := filepath.Glob("../../configs/plans/*.yaml")
	invalid, _ := filepath.Glob("../../configs/plans/invalid/*.yaml")
	if len(valid) < 2 || len(invalid) < 5 {
		t.Fatalf("%d valid and %d invalid sample plans: want at least 2 and 5", len(valid), len(invalid))
	}
	e := &env{}
	for _, f := range valid {
		p, err := loadPlan(e, f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if want := strings.TrimSuffix(filepath.Base(f), ".yaml"); p.Name != want {
			t.Errorf("%s: plan %q: name it as its file", f, p.Name)
		}
	}
	for _, f := range invalid {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		want, ok := strings.CutPrefix(first, "# error: ")
		if !ok {
			t.Errorf("%s: the first line does not say which error it gives (# error: ...)", f)
			continue
		}
		_, err = loadPlan(e, f)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got error %v, want one saying %q", f, err, want)
		}
		if exitCode(err) != exitUsage {
			t.Errorf("%s: exit code %d, want %d (bad input)", f, exitCode(err), exitUsage)
		}
	}
}

// newPlanAPI is the API on a SQLite store, over plain HTTP, with the
// machines of the sample plans reported; it returns the flags that point
// the CLI at it as an operator.
func newPlanAPI(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "standby.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, m := range []string{"db01", "db02", "app01", "app02", "web01", "web02", "files01", "wiki01"} {
		if _, err := st.CreateMachine(ctx, control.Machine{ID: "m-" + m, Name: m}); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := api.New(api.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	_, tok, err := api.CreateUser(ctx, st, "ops", control.UserOperator, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--server", hs.URL, "--token", tok}
}

// runPlanCLI runs `standby plan ARGS...` against the server of flags.
func runPlanCLI(t *testing.T, flags []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}
	err := dispatch(context.Background(), e, append(append([]string{"plan"}, args...), flags...))
	if err != nil {
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), exitCode(err)
}

func mustPlanCLI(t *testing.T, flags []string, stdin string, args ...string) string {
	t.Helper()
	out, errs, code := runPlanCLI(t, flags, stdin, args...)
	if code != 0 {
		t.Fatalf("standby plan %s: exit %d: %s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func TestPlanCommands(t *testing.T) {
	flags := newPlanAPI(t)
	shop := "../../configs/plans/shop.yaml"

	out := mustPlanCLI(t, flags, "", "apply", "-f", shop, "--dry-run")
	if !strings.HasPrefix(out, "plan shop would be created (dry run)\n  + description:") {
		t.Fatalf("dry run of a new plan:\n%s", out)
	}
	out = mustPlanCLI(t, flags, "", "apply", "-f", shop)
	for _, want := range []string{"plan shop created\n", "  + group db: machines [db01 db02]\n", "  + group app: before repoint-db: script [/etc/standby/scripts/repoint-db --wait], timeout 5m0s, retries 2\n",
		"  + drill: every 24h0m0s, window 72h0m0s\n", "  + drill.probes[web01]: command [/usr/bin/curl --fail --silent http://web01.test.internal/]\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply of a new plan does not say %q:\n%s", want, out)
		}
	}
	if out = mustPlanCLI(t, flags, "", "apply", "-f", shop); out != "plan shop unchanged\n" {
		t.Fatalf("apply again:\n%s", out)
	}

	// What plan get -o yaml prints, plan apply takes back: unchanged.
	y := mustPlanCLI(t, flags, "", "get", "shop", "-o", "yaml")
	if !strings.HasPrefix(y, "# recovery plan shop, version 1, updated ") {
		t.Fatalf("plan get -o yaml:\n%s", y)
	}
	if out = mustPlanCLI(t, flags, y, "apply", "-f", "-"); out != "plan shop unchanged\n" {
		t.Fatalf("apply of plan get -o yaml:\n%s\nit said:\n%s", y, out)
	}
	fromFile, err := loadPlan(&env{}, shop)
	if err != nil {
		t.Fatal(err)
	}
	fromGet, err := decodePlan(strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromGet, fromFile) {
		t.Fatalf("plan get -o yaml decodes as\n%+v\nthe file as\n%+v", fromGet, fromFile)
	}

	// A change, as an edit of the file would make it.
	changed := strings.Replace(y, "every: 24h0m0s", "every: 12h0m0s", 1)
	addWeb := func(m string) string { return strings.Replace(changed, "- web02\n", "- web02\n      - "+m+"\n", 1) }
	if changed == y || addWeb("x") == changed {
		t.Fatalf("the test's edits find nothing to change in:\n%s", y)
	}
	_, errs, code := runPlanCLI(t, flags, addWeb("web01b"), "apply", "-f", "-")
	if code != exitError || !strings.Contains(errs, "names machines the server does not know: web01b (group web)") {
		t.Fatalf("apply of a plan with an unknown machine: exit %d: %s", code, errs)
	}
	_, errs, code = runPlanCLI(t, flags, addWeb("db02"), "apply", "-f", "-")
	if code != exitUsage || !strings.Contains(errs, `groups[2].machines[2]: "db02" is already in group "db"`) {
		t.Fatalf("apply of an invalid plan: exit %d: %s", code, errs)
	}
	out = mustPlanCLI(t, flags, changed, "apply", "-f", "-", "--dry-run")
	if out != "plan shop would change (dry run)\n  ~ drill.every: 24h0m0s -> 12h0m0s\n" {
		t.Fatalf("dry run of a change:\n%s", out)
	}
	out = mustPlanCLI(t, flags, changed, "apply", "-f", "-")
	if out != "plan shop updated (version 2)\n  ~ drill.every: 24h0m0s -> 12h0m0s\n" {
		t.Fatalf("apply of a change:\n%s", out)
	}
	out = mustPlanCLI(t, flags, changed, "apply", "-f", "-", "-o", "json")
	if !strings.Contains(out, `"changed": false`) || !strings.Contains(out, `"diff": []`) {
		t.Fatalf("apply -o json:\n%s", out)
	}

	mustPlanCLI(t, flags, "", "apply", "-f", "../../configs/plans/intranet.yaml")
	out = mustPlanCLI(t, flags, "", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "intranet") || !strings.HasPrefix(lines[2], "shop") ||
		!strings.Contains(lines[2], "every 12h0m0s") || strings.Fields(lines[2])[2] != "6" {
		t.Fatalf("plan list:\n%s", out)
	}
	out = mustPlanCLI(t, flags, "", "get", "shop")
	for _, want := range []string{"plan      shop (version 2", "check-replication (manual)", "repoint-db (script)", "web01 web02", "drill     every 12h0m0s, alert after 72h0m0s",
		"probe     app01: http http://app01.test.internal:8080/health, timeout 10s"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan get does not say %q:\n%s", want, out)
		}
	}
	if out = mustPlanCLI(t, flags, "", "get", "shop", "-o", "json"); !strings.Contains(out, `"version": 2`) {
		t.Fatalf("plan get -o json:\n%s", out)
	}
	if _, _, code := runPlanCLI(t, flags, "", "get", "shop", "-o", "xml"); code != exitUsage {
		t.Errorf("plan get -o xml: exit %d, want %d", code, exitUsage)
	}

	if out = mustPlanCLI(t, flags, "", "delete", "intranet"); out != "plan intranet deleted\n" {
		t.Fatalf("plan delete:\n%s", out)
	}
	if _, errs, code := runPlanCLI(t, flags, "", "get", "intranet"); code != exitError || !strings.Contains(errs, "HTTP 404") {
		t.Fatalf("get of a deleted plan: exit %d: %s", code, errs)
	}
}

// Bad input is refused before any call, with the usage exit code and
// every problem listed.
func TestPlanApplyRefusesBadFiles(t *testing.T) {
	flags := []string{"--server", "http://127.0.0.1:1", "--token", "x"} // never called
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		says []string
	}{
		{"no file", []string{"apply"}, []string{"usage: standby plan apply -f FILE"}},
		{"missing file", []string{"apply", "-f", filepath.Join(dir, "nope.yaml")}, []string{"no such file"}},
		{"empty file", []string{"apply", "-f", write("empty.yaml", "")}, []string{"no plan in it"}},
		{"two documents", []string{"apply", "-f", write("two.yaml", "name: a\ngroups: [{name: g, machines: [m]}]\n---\nname: b\n")}, []string{"more than one YAML document"}},
		{"a server's field", []string{"apply", "-f", write("v.yaml", "name: a\nversion: 3\ngroups: [{name: g, machines: [m]}]\n")}, []string{"field version not found in type control.Plan"}},
		{"not YAML", []string{"apply", "-f", write("bad.yaml", "name: [unclosed\n")}, []string{"bad.yaml: yaml:"}},
		{"every problem", []string{"apply", "-f", write("p.yaml", "name: P\ngroups: [{name: g, machines: []}]\ndrill: {every: 1s}\n")}, []string{
			"p.yaml: plan P is invalid:\n", `  name: "P": 1-63 of`, "  groups[0].machines: a group needs at least one machine", "  drill.every: 1s: at least 1m"}},
	} {
		_, errs, code := runPlanCLI(t, flags, "", tc.args...)
		if code != exitUsage && !(tc.name == "missing file" && code == exitError) {
			t.Errorf("%s: exit %d, want %d: %s", tc.name, code, exitUsage, errs)
		}
		for _, s := range tc.says {
			if !strings.Contains(errs, s) {
				t.Errorf("%s: %q does not say %q", tc.name, errs, s)
			}
		}
	}
	// Each problem on its own line, for a terminal.
	_, errs, _ := runPlanCLI(t, flags, "", "apply", "-f", filepath.Join(dir, "p.yaml"))
	if n := len(strings.Split(strings.TrimSpace(errs), "\n")); n != 4 {
		t.Errorf("%d lines, want a header and 3 problems:\n%s", n, errs)
	}
}
