package agent

// App-consistent bookmarks. A bookmark is app-consistent only when every
// configured quiesce step succeeded before it (DESIGN.md §3):
//
//	pre ─▶ fsfreeze -f m1 … mN ─▶ Bookmark(label, app) ─▶ fsfreeze -u mN … m1 ─▶ post
//
// A failed pre or freeze still takes a bookmark, crash-consistent, and says
// why in BookmarkResult.Warning. Thaw and post run on every attempt, each
// with its own timeout that does not inherit the caller's cancellation: a
// cancelled request must not leave a filesystem frozen.

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BookmarkResult is what an app bookmark request did.
type BookmarkResult struct {
	Seq uint64 `json:"seq"`
	// AppConsistent is true when every quiesce step succeeded before the
	// bookmark.
	AppConsistent bool `json:"app_consistent"`
	// Warning says why the bookmark is only crash-consistent, or that post
	// failed after it, with the failing step's output. Empty otherwise.
	Warning string `json:"warning,omitempty"`
}

// ThawError reports a mount that fsfreeze -u could not thaw: it may still
// be frozen, and its applications blocked, until an operator thaws it.
type ThawError struct {
	Mount  string
	Err    error
	Output string
}

func (e *ThawError) Error() string {
	s := fmt.Sprintf("thaw %s: %v (it may still be frozen: run `fsfreeze -u %s`)", e.Mount, e.Err, e.Mount)
	if e.Output != "" {
		s += ": " + e.Output
	}
	return s
}

func (e *ThawError) Unwrap() error { return e.Err }

// hookOutputLimit bounds how much of a hook's output is kept: the end.
const hookOutputLimit = 4 << 10

// AppBookmark runs the quiesce hooks around a bookmark labelled label (see
// the file comment for the order). The error is non-nil when no bookmark
// was taken (ctx ended, or capture.ErrNotConsistent) or when a thaw
// failed (a *ThawError, already logged at error level); a failed pre,
// freeze or post is not an error but a Warning in the result. Concurrent
// calls run one at a time. The capture lock is held only inside
// Machine.Bookmark, never while a hook runs.
func (a *Agent) AppBookmark(ctx context.Context, label string) (BookmarkResult, error) {
	a.quiesceMu.Lock()
	defer a.quiesceMu.Unlock()
	if err := ctx.Err(); err != nil {
		return BookmarkResult{}, err
	}
	q := a.cfg.AppConsistent
	timeout, _ := q.timeout()
	log := a.log.With("label", label)
	var warning string
	failed := func(step string, err error) {
		warning = fmt.Sprintf("%s: %v; the bookmark is crash-consistent only", step, err)
		log.Warn("quiesce failed", "step", step, "err", err)
	}
	if len(q.Pre) == 0 && len(q.FSFreeze) == 0 {
		failed("quiesce", errors.New("no hook is configured (app_consistent.fsfreeze or app_consistent.pre)"))
	}
	if warning == "" && len(q.Pre) > 0 {
		if err := a.runHook(ctx, timeout, q.Pre); err != nil {
			failed("pre", err)
		}
	}
	var frozen []string
	for _, m := range q.FSFreeze {
		if warning != "" {
			break
		}
		if err := a.mountCheck(m); err != nil {
			failed("freeze "+m, err)
			break
		}
		err := a.runHook(ctx, timeout, []string{a.fsfreeze, "-f", m})
		if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			// A freeze killed at its timeout may have completed in the
			// kernel: thaw it too.
			frozen = append(frozen, m)
		}
		if err != nil {
			failed("freeze "+m, err)
		}
	}
	res := BookmarkResult{AppConsistent: warning == ""}
	var seq uint64
	bmErr := ctx.Err() // cancelled during the hooks: no bookmark, but thaw and post
	if bmErr == nil {
		seq, bmErr = a.machine.Bookmark(label, res.AppConsistent)
	}
	res.Seq = seq
	thawErr := a.thaw(ctx, timeout, frozen)
	if len(q.Post) > 0 {
		pctx := context.WithoutCancel(ctx)
		if err := a.runHook(pctx, timeout, q.Post); err != nil {
			log.Warn("quiesce post failed", "err", err)
			warning = strings.TrimPrefix(warning+"; post: "+err.Error(), "; ")
		}
	}
	res.Warning = warning
	if bmErr != nil {
		return BookmarkResult{Warning: warning}, errors.Join(bmErr, thawErr)
	}
	if res.AppConsistent {
		log.Info("app-consistent bookmark", "seq", seq)
	}
	return res, thawErr
}

// thaw thaws the frozen mounts in reverse order, each with a fresh timeout.
// Failures are logged at error level and returned as *ThawError.
func (a *Agent) thaw(ctx context.Context, timeout time.Duration, frozen []string) error {
	var errs []error
	for i := len(frozen) - 1; i >= 0; i-- {
		m := frozen[i]
		err := a.runHook(context.WithoutCancel(ctx), timeout, []string{a.fsfreeze, "-u", m})
		if err != nil {
			te := &ThawError{Mount: m, Err: err}
			var he *hookError
			if errors.As(err, &he) {
				te.Err, te.Output = he.err, he.output
			}
			a.log.Error("thaw failed: the filesystem may still be frozen", "mount", m, "err", te)
			errs = append(errs, te)
		}
	}
	return errors.Join(errs...)
}

// hookError is a failed hook with the end of its output.
type hookError struct {
	argv   []string
	err    error
	output string
}

func (e *hookError) Error() string {
	s := fmt.Sprintf("%s: %v", strings.Join(e.argv, " "), e.err)
	if e.output != "" {
		s += ": " + e.output
	}
	return s
}

func (e *hookError) Unwrap() error { return e.err }

// runHook runs argv with a timeout. Its process group is killed at the
// timeout, so a script's children cannot keep it alive.
func (a *Agent) runHook(ctx context.Context, timeout time.Duration, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("killed after %s: %w", timeout, ctx.Err())
	} else if ctx.Err() != nil {
		err = fmt.Errorf("killed: %w", ctx.Err())
	}
	return &hookError{argv: argv, err: err, output: strings.TrimSpace(out.String())}
}

// checkMount refuses a path that is not a mount point, or whose filesystem
// holds the agent's state directory: fsfreeze freezes the filesystem that
// contains any path given to it, and freezing the journal's own filesystem
// would block the bookmark forever.
func checkMount(mount, stateDir string) error {
	var st, parent, state syscall.Stat_t
	if err := syscall.Stat(mount, &st); err != nil {
		return err
	}
	if err := syscall.Stat(filepath.Dir(filepath.Clean(mount)), &parent); err != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fmt.Errorf("%s is not a directory", mount)
	}
	if st.Dev == parent.Dev && st.Ino != parent.Ino {
		return fmt.Errorf("%s is not a mount point", mount)
	}
	if err := syscall.Stat(stateDir, &state); err == nil && state.Dev == st.Dev {
		return fmt.Errorf("%s holds the agent's state directory %s; freezing it would block the journal", mount, stateDir)
	}
	return nil
}

// tailBuffer keeps the last hookOutputLimit bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= hookOutputLimit {
		p = p[len(p)-hookOutputLimit:]
		t.b = t.b[:0]
	}
	if over := len(t.b) + len(p) - hookOutputLimit; over > 0 {
		t.b = t.b[over:]
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// appBookmarkLoop takes an app-consistent bookmark every interval until
// ctx ends.
func (a *Agent) appBookmarkLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := a.AppBookmark(ctx, "app-interval")
		var te *ThawError
		if err != nil && !errors.As(err, &te) && ctx.Err() == nil {
			a.log.Warn("app-consistent interval bookmark", "err", err)
		}
	}
}
