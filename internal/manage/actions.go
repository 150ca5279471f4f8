package manage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/fsutil"
)

// Actions runs the actions a managed process server or master target's
// desired state gives it (internal/api/actions.go): each once, in the
// background, reporting how it went. The ids it started are kept in a
// file, so that an action found again after a restart in the middle of
// it is reported not run again rather than run twice.
type Actions struct {
	// Dir holds the started-actions file.
	Dir    string
	Report func(context.Context, api.ActionReport) error
	Log    *slog.Logger

	mu      sync.Mutex
	running map[string]bool
	loaded  bool
	started map[string]bool // from the file: started by an earlier run
}

const actionsFile = "actions-started"

// Run starts the actions of d not started yet.
func (a *Actions) Run(ctx context.Context, acts []api.DesiredAction) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.loaded {
		a.loaded, a.running, a.started = true, map[string]bool{}, map[string]bool{}
		if b, err := os.ReadFile(filepath.Join(a.Dir, actionsFile)); err == nil {
			for _, id := range strings.Fields(string(b)) {
				a.started[id] = true
			}
		}
	}
	for _, act := range acts {
		if a.running[act.ID] {
			continue
		}
		a.running[act.ID] = true
		if a.started[act.ID] {
			go a.report(ctx, api.ActionReport{ID: act.ID, Error: "this component restarted while the action ran: not run again"})
			continue
		}
		a.started[act.ID] = true
		var ids []string
		for id := range a.started {
			ids = append(ids, id)
		}
		if err := fsutil.WriteAtomic(filepath.Join(a.Dir, actionsFile), []byte(strings.Join(ids, "\n")+"\n"), nil); err != nil {
			a.Log.Warn("keep the started actions", "err", err)
		}
		go a.report(ctx, run(ctx, act))
	}
}

// run runs one action.
func run(ctx context.Context, act api.DesiredAction) api.ActionReport {
	if len(act.Command) == 0 {
		return api.ActionReport{ID: act.ID, Error: "no command"}
	}
	timeout := act.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, act.Command[0], act.Command[1:]...)
	cmd.Env = append(os.Environ(), act.Env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := api.ActionReport{ID: act.ID, OK: err == nil, Output: strings.TrimSpace(out.String())}
	if err != nil {
		r.Error = fmt.Sprintf("%s: %v", act.Command[0], err)
	}
	return r
}

// report sends r, retrying while the server cannot be reached.
func (a *Actions) report(ctx context.Context, r api.ActionReport) {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := a.Report(ctx, r)
		var ce *client.Error
		if err == nil || (errors.As(err, &ce) && ce.Status == http.StatusConflict) {
			return // reported, or withdrawn meanwhile
		}
		a.Log.Warn("report an action", "action", r.ID, "err", err)
		if !Sleep(ctx, wait) {
			return
		}
	}
}
