package manage

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api"
)

// Actions run once each, with their environment; a failing one is
// reported with its exit and output; an action found again after a
// restart (a new Actions over the same directory) is reported not run
// again, and nothing runs twice.
func TestActionsRunOnce(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	got := map[string]api.ActionReport{}
	report := func(_ context.Context, r api.ActionReport) error {
		mu.Lock()
		defer mu.Unlock()
		got[r.ID] = r
		return nil
	}
	wait := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			k := len(got)
			mu.Unlock()
			if k >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d reports, want %d", k, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	count := dir + "/count"
	a := &Actions{Dir: dir, Report: report, Log: slog.New(slog.DiscardHandler)}
	acts := []api.DesiredAction{
		{ID: "ok", Command: []string{"/bin/sh", "-c", "echo run >> " + count + "; echo hello $WHO"}, Env: []string{"WHO=plan"}},
		{ID: "bad", Command: []string{"/bin/sh", "-c", "echo refused >&2; exit 3"}},
	}
	ctx := context.Background()
	a.Run(ctx, acts)
	a.Run(ctx, acts) // the same desired state again: nothing new
	wait(2)
	if r := got["ok"]; !r.OK || r.Output != "hello plan" {
		t.Fatalf("ok: %+v", r)
	}
	if r := got["bad"]; r.OK || !strings.Contains(r.Error, "exit status 3") || r.Output != "refused" {
		t.Fatalf("bad: %+v", r)
	}
	// A restarted component finds the actions again: reported, not run.
	got = map[string]api.ActionReport{}
	b := &Actions{Dir: dir, Report: report, Log: slog.New(slog.DiscardHandler)}
	b.Run(ctx, acts[:1])
	wait(1)
	if r := got["ok"]; r.OK || !strings.Contains(r.Error, "not run again") {
		t.Fatalf("after a restart: %+v", r)
	}
	time.Sleep(100 * time.Millisecond)
	if out, _ := readFile(count); strings.Count(out, "run") != 1 {
		t.Fatalf("the action ran %d times", strings.Count(out, "run"))
	}
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}
