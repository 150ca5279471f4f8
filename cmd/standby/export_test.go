package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/replica"
	"github.com/standby-dr/standby/internal/target"
)

// runExportCLI runs one of exportCommands by its words.
func runExportCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb}
	for _, c := range exportCommands() {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			err := c.run(context.Background(), e, args[len(words):])
			if err != nil {
				errb.WriteString(err.Error())
			}
			return out.String() + errb.String(), exitCode(err)
		}
	}
	t.Fatalf("no export command %v", args)
	return "", 0
}

// exportCLITarget runs a target with exports and its status handler, with
// a replica of web01 holding one recovery point whose disk starts with
// "hello".
func exportCLITarget(t *testing.T) string {
	t.Helper()
	const id = "00112233-4455-6677-8899-aabbccddeeff"
	dir := t.TempDir()
	if err := replica.Create(filepath.Join(dir, "machines", id), id, []replica.DiskInfo{{Name: "sda", Size: 64 << 10}}, nil); err != nil {
		t.Fatal(err)
	}
	tg, err := target.New(context.Background(), target.Options{DataDir: dir, Exports: target.ExportsOptions{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	mid, _ := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	var buf bytes.Buffer
	now := time.Now().UnixNano()
	w, _ := journal.NewWriter(&buf, journal.Header{MachineID: [16]byte(mid), Epoch: 1, FirstSeq: 1, Created: now})
	for i, rec := range []journal.Record{
		{Kind: journal.KindWrite, Length: 5, Data: []byte("hello")},
		{Kind: journal.KindBookmark, Flags: journal.FlagAppConsistent, Data: []byte("app")},
	} {
		rec.Seq, rec.Time = uint64(i+1), now
		if err := w.Append(&rec); err != nil {
			t.Fatal(err)
		}
	}
	w.Seal(now)
	rep, _, _ := tg.Lookup(id)
	if _, err := rep.Apply(context.Background(), buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tg.Handler())
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestExportCommands exports a point, lists it (table and JSON), reads it
// over NBD and unexports it; errors carry the target's message.
func TestExportCommands(t *testing.T) {
	addr := exportCLITarget(t)
	id := "00112233-4455-6677-8899-aabbccddeeff"
	out, code := runExportCLI(t, "target", "export", "--status", addr, "--point", "latest-app", "--name", "test1", "-o", "json", id)
	if code != 0 {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	var x target.Export
	if err := json.Unmarshal([]byte(out), &x); err != nil {
		t.Fatalf("export -o json: %v\n%s", err, out)
	}
	if x.Name != "test1" || len(x.Disks) != 1 || x.Disks[0].Export != "test1/sda" || x.Addr == "" {
		t.Fatalf("export %+v", x)
	}
	c, err := nbd.Dial(context.Background(), "tcp", x.Addr, x.Disks[0].Export, nbd.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := c.ReadAt(b, 0); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	c.Close()

	out, code = runExportCLI(t, "target", "export", "--status", addr, "--name", "test1", id)
	if code != 1 || !strings.Contains(out, "exists") {
		t.Fatalf("export of a taken name: exit %d\n%s", code, out)
	}
	out, code = runExportCLI(t, "target", "export", "--status", addr, "--point", "99", id)
	if code != 1 || !strings.Contains(out, "no retained recovery point") {
		t.Fatalf("export of a missing point: exit %d\n%s", code, out)
	}
	out, code = runExportCLI(t, "target", "export", "--status", addr, "--point", "soon", id)
	if code != 1 || !strings.Contains(out, "latest-app") {
		t.Fatalf("export with a bad selector: exit %d\n%s", code, out)
	}
	if out, code = runExportCLI(t, "target", "export", "--status", addr); code != 2 {
		t.Fatalf("export without a machine: exit %d\n%s", code, out)
	}

	out, code = runExportCLI(t, "target", "exports", "--status", addr)
	if code != 0 || !strings.Contains(out, "test1") || !strings.Contains(out, "nbd://"+x.Addr+"/test1/sda") {
		t.Fatalf("exports: exit %d\n%s", code, out)
	}
	out, code = runExportCLI(t, "target", "exports", "--status", addr, "-o", "json")
	var xs []target.Export
	if code != 0 || json.Unmarshal([]byte(out), &xs) != nil || len(xs) != 1 {
		t.Fatalf("exports -o json: exit %d\n%s", code, out)
	}
	if out, code = runExportCLI(t, "target", "unexport", "--status", addr, "test1"); code != 0 {
		t.Fatalf("unexport: exit %d\n%s", code, out)
	}
	if out, code = runExportCLI(t, "target", "unexport", "--status", addr, "test1"); code != 1 || !strings.Contains(out, "no such export") {
		t.Fatalf("unexport again: exit %d\n%s", code, out)
	}
	out, code = runExportCLI(t, "target", "exports", "--status", addr, "-o", "json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("exports after unexport: exit %d\n%s", code, out)
	}
}
