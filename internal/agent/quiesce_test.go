package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/journal"
)

// hookEnv is a test agent whose quiesce hooks are shell scripts that append
// one line per run to a log: the step, its arguments, and whether the
// bookmark labelled hookLabel was already in the journal (bm=0 or bm=1).
type hookEnv struct {
	*testAgent
	dir, log string
	journal  string // the agent's journal directory
}

const hookLabel = "quiesce-test-bookmark"

func startHookAgent(t *testing.T, edit func(q *AppConsistentConfig, h *hookEnv)) *hookEnv {
	t.Helper()
	h := &hookEnv{dir: t.TempDir()}
	h.log = filepath.Join(h.dir, "hooks.log")
	h.testAgent = startTestAgent(t, []int64{4 << 20}, func(c *Config) {
		c.BookmarkInterval = "off"
		c.AppConsistent.Timeout = "2s"
		h.journal = filepath.Join(c.StateDir, "journal")
		edit(&c.AppConsistent, h)
	})
	return h
}

// script writes an executable shell script that logs its run, then runs body.
func (h *hookEnv) script(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(h.dir, name)
	src := "#!/bin/sh\n" +
		"bm=0; cat '" + h.journal + "'/* 2>/dev/null | grep -qa '" + hookLabel + "' && bm=1\n" +
		"line=" + name + "; [ $# -gt 0 ] && line=\"$line $*\"\n" +
		"echo \"$line bm=$bm\" >> '" + h.log + "'\n" + body + "\n"
	if err := os.WriteFile(p, []byte(src), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeFreeze replaces fsfreeze with a script and accepts any mount point.
func (h *hookEnv) fakeFreeze(t *testing.T, body string) {
	t.Helper()
	h.fsfreeze = h.script(t, "fsfreeze", body)
	h.mountCheck = func(string) error { return nil }
}

func (h *hookEnv) mustLog(t *testing.T, want ...string) {
	t.Helper()
	b, err := os.ReadFile(h.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("hooks ran as\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// bookmarkFlags reads the journal and returns each bookmark's flags by label.
func bookmarkFlags(t *testing.T, ta *testAgent) map[string]uint8 {
	t.Helper()
	out := map[string]uint8{}
	for _, s := range ta.Machine().Segments() {
		f, err := os.Open(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		r, err := journal.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		var rec journal.Record
		for {
			err := r.Next(&rec)
			if err == io.EOF || errors.Is(err, journal.ErrNotSealed) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", s.Path, err)
			}
			if rec.Kind == journal.KindBookmark {
				out[string(rec.Data)] = rec.Flags
			}
		}
		f.Close()
	}
	return out
}

func TestAppBookmarkHookOrder(t *testing.T) {
	h := startHookAgent(t, func(q *AppConsistentConfig, h *hookEnv) {
		q.Pre = []string{h.script(t, "pre", ""), "--quiet"}
		q.Post = []string{h.script(t, "post", "")}
		q.FSFreeze = []string{"/m1", "/m2"}
	})
	h.fakeFreeze(t, "")
	res, err := h.AppBookmark(context.Background(), hookLabel)
	if err != nil || !res.AppConsistent || res.Warning != "" || res.Seq == 0 {
		t.Fatalf("AppBookmark = %+v, %v", res, err)
	}
	h.mustLog(t,
		"pre --quiet bm=0",
		"fsfreeze -f /m1 bm=0",
		"fsfreeze -f /m2 bm=0",
		"fsfreeze -u /m2 bm=1",
		"fsfreeze -u /m1 bm=1",
		"post bm=1")
	if f := bookmarkFlags(t, h.testAgent)[hookLabel]; f&journal.FlagAppConsistent == 0 {
		t.Fatalf("bookmark flags %#x: not app-consistent", f)
	}
}

func TestAppBookmarkFailingFreeze(t *testing.T) {
	h := startHookAgent(t, func(q *AppConsistentConfig, h *hookEnv) {
		q.Pre = []string{h.script(t, "pre", "")}
		q.Post = []string{h.script(t, "post", "")}
		q.FSFreeze = []string{"/m1", "/m2", "/m3"}
	})
	h.fakeFreeze(t, `[ "$2" = /m2 ] && { echo "fsfreeze: /m2: not supported" >&2; exit 1; }; exit 0`)
	res, err := h.AppBookmark(context.Background(), hookLabel)
	if err != nil || res.AppConsistent || res.Seq == 0 {
		t.Fatalf("AppBookmark = %+v, %v", res, err)
	}
	if !strings.Contains(res.Warning, "freeze /m2") || !strings.Contains(res.Warning, "not supported") {
		t.Fatalf("warning %q does not say which freeze failed and why", res.Warning)
	}
	h.mustLog(t,
		"pre bm=0",
		"fsfreeze -f /m1 bm=0",
		"fsfreeze -f /m2 bm=0",
		"fsfreeze -u /m1 bm=1",
		"post bm=1")
	if f, ok := bookmarkFlags(t, h.testAgent)[hookLabel]; !ok || f&journal.FlagAppConsistent != 0 {
		t.Fatalf("bookmark present=%v flags %#x: want a crash-consistent bookmark", ok, f)
	}
}

// TestAppBookmarkFailingPre goes through POST /bookmark?app=true.
func TestAppBookmarkFailingPre(t *testing.T) {
	h := startHookAgent(t, func(q *AppConsistentConfig, h *hookEnv) {
		q.Pre = []string{h.script(t, "pre", "echo 'database is busy'; exit 3")}
		q.Post = []string{h.script(t, "post", "")}
		q.FSFreeze = []string{"/m1"}
	})
	h.fakeFreeze(t, "")
	resp, err := http.Post("http://"+h.StatusAddr().String()+"/bookmark?app=true&label="+hookLabel, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var res BookmarkResult
	err = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || res.AppConsistent || res.Seq == 0 {
		t.Fatalf("POST /bookmark?app=true: %d %+v %v", resp.StatusCode, res, err)
	}
	if !strings.Contains(res.Warning, "pre") || !strings.Contains(res.Warning, "exit status 3") ||
		!strings.Contains(res.Warning, "database is busy") {
		t.Fatalf("warning %q lacks the step, status or output", res.Warning)
	}
	h.mustLog(t, "pre bm=0", "post bm=1")
	if f, ok := bookmarkFlags(t, h.testAgent)[hookLabel]; !ok || f != 0 {
		t.Fatalf("bookmark present=%v flags %#x: want a crash-consistent bookmark", ok, f)
	}
}

// TestAppBookmarkHangingHook: a hook that hangs (and its children) is
// killed at the timeout; thaw and post still run.
func TestAppBookmarkHangingHook(t *testing.T) {
	for _, tt := range []struct {
		name, pre, freeze string
		log               []string
	}{
		{"pre", "sleep 60 & wait", "", []string{"pre bm=0", "post bm=1"}},
		{"freeze", "", `[ "$1" = -f ] && [ "$2" = /m2 ] && sleep 60; exit 0`, []string{
			"pre bm=0", "fsfreeze -f /m1 bm=0", "fsfreeze -f /m2 bm=0",
			"fsfreeze -u /m2 bm=1", "fsfreeze -u /m1 bm=1", "post bm=1",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startHookAgent(t, func(q *AppConsistentConfig, h *hookEnv) {
				q.Timeout = "1s"
				q.Pre = []string{h.script(t, "pre", tt.pre)}
				q.Post = []string{h.script(t, "post", "")}
				q.FSFreeze = []string{"/m1", "/m2"}
			})
			h.fakeFreeze(t, tt.freeze)
			start := time.Now()
			res, err := h.AppBookmark(context.Background(), hookLabel)
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("AppBookmark took %s with a 1s timeout", took)
			}
			if err != nil || res.AppConsistent || !strings.Contains(res.Warning, "killed after 1s") {
				t.Fatalf("AppBookmark = %+v, %v", res, err)
			}
			h.mustLog(t, tt.log...)
		})
	}
}

func TestAppBookmarkFailingThaw(t *testing.T) {
	h := startHookAgent(t, func(q *AppConsistentConfig, h *hookEnv) {
		q.Post = []string{h.script(t, "post", "")}
		q.FSFreeze = []string{"/m1"}
	})
	h.fakeFreeze(t, `[ "$1" = -u ] && { echo "thaw: device busy" >&2; exit 1; }; exit 0`)
	res, err := h.AppBookmark(context.Background(), hookLabel)
	var te *ThawError
	if !errors.As(err, &te) || te.Mount != "/m1" || !strings.Contains(te.Output, "device busy") {
		t.Fatalf("AppBookmark error %v: want a ThawError for /m1 with its output", err)
	}
	if !res.AppConsistent || res.Seq == 0 {
		t.Fatalf("the bookmark itself was app-consistent: %+v", res)
	}
	h.mustLog(t, "fsfreeze -f /m1 bm=0", "fsfreeze -u /m1 bm=1", "post bm=1")
}

func TestAppBookmarkWithoutHooks(t *testing.T) {
	h := startHookAgent(t, func(*AppConsistentConfig, *hookEnv) {})
	res, err := h.AppBookmark(context.Background(), hookLabel)
	if err != nil || res.AppConsistent || !strings.Contains(res.Warning, "no hook is configured") {
		t.Fatalf("AppBookmark = %+v, %v", res, err)
	}
}

func TestCheckMountRefusesPlainDirectories(t *testing.T) {
	dir := t.TempDir()
	if err := checkMount(dir, dir); err == nil || !strings.Contains(err.Error(), "not a mount point") {
		t.Fatalf("checkMount(%s) = %v", dir, err)
	}
}

func TestTailBufferKeepsTheEnd(t *testing.T) {
	var b tailBuffer
	b.Write([]byte(strings.Repeat("a", 3000)))
	b.Write([]byte(strings.Repeat("b", 3000)))
	b.Write([]byte("end"))
	s := b.String()
	if len(s) != hookOutputLimit || !strings.HasSuffix(s, "b"+"end") || !strings.HasPrefix(s, "a") {
		t.Fatalf("tail of %d bytes: %q...%q", len(s), s[:10], s[len(s)-10:])
	}
}

// TestAppBookmarkRealFSFreeze freezes and thaws a real ext4 filesystem on
// a loop device.
func TestAppBookmarkRealFSFreeze(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fsfreeze, losetup and mount need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	for _, tool := range []string{"fsfreeze", "losetup", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	run("mkfs.ext4", "-q", "-F", img)
	loop, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup --find --show: %v (no free loop device?)", err)
	}
	dev := strings.TrimSpace(string(loop))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	run("mount", dev, mnt)
	t.Cleanup(func() {
		exec.Command("fsfreeze", "-u", mnt).Run() // in case a failure left it frozen
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})

	h := startHookAgent(t, func(q *AppConsistentConfig, h *hookEnv) {
		q.FSFreeze = []string{mnt}
		// post runs after the thaw, so it can write into the filesystem.
		q.Post = []string{h.script(t, "post", "echo resumed > '"+filepath.Join(mnt, "post.txt")+"'")}
	})
	res, err := h.AppBookmark(context.Background(), hookLabel)
	if err != nil || !res.AppConsistent || res.Warning != "" {
		t.Fatalf("AppBookmark = %+v, %v", res, err)
	}
	if f := bookmarkFlags(t, h.testAgent)[hookLabel]; f&journal.FlagAppConsistent == 0 {
		t.Fatalf("bookmark flags %#x: not app-consistent", f)
	}
	// Thawed: a write completes.
	done := make(chan error, 1)
	go func() { done <- os.WriteFile(filepath.Join(mnt, "after.txt"), []byte("thawed"), 0o644) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s is still frozen after the app bookmark", mnt)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "post.txt")); err != nil || string(b) != "resumed\n" {
		t.Fatalf("post did not write into the thawed filesystem: %q %v", b, err)
	}
}
