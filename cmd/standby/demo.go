package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/nbd"
)

type demoOptions struct {
	dir      string
	size     int64
	duration time.Duration
	conns    int
	keep     bool
	capture  bool // the capture-only demo (one site, journal replay)
}

func newDemoCommand() command {
	return command{
		name:  "demo",
		short: "run a self-contained demonstration on this machine (no setup)",
		run: func(ctx context.Context, e *env, args []string) error {
			var o demoOptions
			var size string
			fs := newFlags(e, "demo", "[flags]")
			fs.StringVar(&o.dir, "dir", "", "working directory (default: a new temporary directory)")
			fs.StringVar(&size, "size", "256MiB", "size of the demo disk")
			fs.DurationVar(&o.duration, "duration", 5*time.Second, "how long the workload runs")
			fs.IntVar(&o.conns, "connections", 4, "NBD connections driving the workload")
			fs.BoolVar(&o.keep, "keep", false, "keep the working directory")
			fs.BoolVar(&o.capture, "capture-only", false, "one site only: capture, inspect the journal, replay it")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			var err error
			if o.size, err = agent.ParseSize(size); err != nil {
				return usagef("--size: %v", err)
			}
			if o.size < 16<<20 || o.conns < 1 || o.duration <= 0 {
				return usagef("--size must be at least 16MiB, --connections at least 1, --duration positive")
			}
			if o.capture {
				return runCaptureDemo(ctx, e, o)
			}
			return runTwoSiteDemo(ctx, e, o)
		},
	}
}

// workDir makes the demo's working directory when none was given; the
// returned cleanup removes it unless --keep.
func (o *demoOptions) workDir() (cleanup func(), err error) {
	if o.dir != "" {
		return func() {}, nil
	}
	if o.dir, err = os.MkdirTemp("", "standby-demo-"); err != nil {
		return nil, err
	}
	if o.keep {
		return func() {}, nil
	}
	dir := o.dir
	return func() { os.RemoveAll(dir) }, nil
}

// runCaptureDemo is the one-site demo: the agent journals a workload, and
// replaying the journal onto the starting image reproduces the disk.
func runCaptureDemo(ctx context.Context, e *env, o demoOptions) error {
	w := e.stdout
	cleanup, err := o.workDir()
	if err != nil {
		return err
	}
	defer cleanup()
	disk := filepath.Join(o.dir, "web01-root.img")
	base := filepath.Join(o.dir, "web01-root.base.img")
	step := func(format string, a ...any) { fmt.Fprintf(w, "==> "+format+"\n", a...) }

	step("Creating a %s disk for machine web01 (half holes, like a real disk) in %s", humanBytes(uint64(o.size)), o.dir)
	if err := makeDemoDisk(disk, o.size); err != nil {
		return err
	}
	if err := copyFile(disk, base); err != nil {
		return err
	}

	sock := filepath.Join(o.dir, "web01.sock")
	cfg := agent.Defaults()
	cfg.Machine, cfg.StateDir, cfg.Listen.Unix = "web01", filepath.Join(o.dir, "agent"), sock
	cfg.Disks = []agent.DiskConfig{{Name: "root", Path: disk}}
	cfg.BookmarkInterval = "1s"
	cfg.Journal.SegmentSize = "8MiB"
	cfg.LogLevel = "warn"
	actx, stopAgent := context.WithCancel(context.Background())
	defer stopAgent()
	a, err := agent.New(ctx, cfg, e.logger(cfg.LogLevel))
	if err != nil {
		return err
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(actx) }()
	step("Agent serving disk %q over NBD at nbd+unix:///root?socket=%s, journaling every write", "root", sock)

	step("Driving a workload for %s over %d NBD connections: random writes, zeroes, trims, flushes", o.duration, o.conns)
	stats, err := demoWorkload(ctx, sock, o)
	if err != nil {
		stopAgent()
		<-agentDone
		return fmt.Errorf("workload: %w", err)
	}
	st := a.Machine().Stats()
	fmt.Fprintf(w, "    client: %d writes (%s), %d zeroes, %d trims, %d flushes; %.0f writes/s\n",
		stats.writes.Load(), humanBytes(stats.bytes.Load()), stats.zeroes.Load(), stats.trims.Load(), stats.flushes.Load(),
		float64(stats.writes.Load())/o.duration.Seconds())
	fmt.Fprintf(w, "    agent:  state %s, journal at seq %d, %d bookmarks, %d fsync rounds for %d flushes (group commit)\n",
		st.State, st.Pos.Seq, st.Bookmarks, st.SyncRounds, st.Flushes)

	stopAgent()
	if err := <-agentDone; err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	step("Agent stopped cleanly. What the journal captured:")
	rep, err := inspectJournal([]string{cfg.StateDir}, false)
	if err != nil {
		return err
	}
	printJournalReport(newIndent(w), rep, 4)

	step("Replaying the journal onto the disk's starting image")
	pos, err := replayInto(ctx, filepath.Join(cfg.StateDir, "journal"), []string{base}, 0)
	if err != nil {
		return err
	}
	hd, err := fileHash(disk)
	if err != nil {
		return err
	}
	hb, err := fileHash(base)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "    replayed through %s\n    disk     sha256 %x\n    replayed sha256 %x\n", pos, hd, hb)
	if hd != hb {
		return errors.New("replay equality FAILED: the replayed image differs from the disk")
	}
	step("Replay equality holds: the journal reproduces the disk byte for byte.")
	if o.keep {
		fmt.Fprintf(w, "    kept %s (try: standby journal inspect %s)\n", o.dir, cfg.StateDir)
	}
	return nil
}

type demoStats struct{ writes, bytes, zeroes, trims, flushes atomic.Uint64 }

func demoWorkload(ctx context.Context, sock string, o demoOptions) (*demoStats, error) {
	var st demoStats
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, o.conns)
	for i := range o.conns {
		c, err := nbd.Dial(ctx, "unix", sock, "root", nbd.ClientOptions{})
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			r := rand.New(rand.NewPCG(uint64(i), 42))
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				n := int64(4096 * (1 + r.IntN(16)))
				off := r.Int64N((c.Size()-n)/4096) * 4096
				var err error
				switch op := r.IntN(100); {
				case op < 85:
					fillDemoBlock(buf[:n], r)
					_, err = c.WriteAt(buf[:n], off)
					st.writes.Add(1)
					st.bytes.Add(uint64(n))
				case op < 92:
					err = c.Zero(off, n, r.IntN(2) == 0)
					st.zeroes.Add(1)
				case op < 97:
					err = c.Trim(off, n)
					st.trims.Add(1)
				default:
					err = c.Flush()
					st.flushes.Add(1)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return &st, <-errs
}

// fillDemoBlock writes data that compresses like real files: runs of text.
func fillDemoBlock(b []byte, r *rand.Rand) {
	words := []string{"standby ", "journal ", "replica ", "segment ", "recovery ", "point ", "machine ", "disk "}
	for i := 0; i < len(b); {
		i += copy(b[i:], words[r.IntN(len(words))])
	}
}

func makeDemoDisk(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(7, 7))
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < size/2; off += int64(len(chunk)) {
		fillDemoBlock(chunk, r)
		if _, err := f.WriteAt(chunk, off); err != nil {
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Close()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func fileHash(path string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// indent prefixes every line written through it with four spaces.
type indent struct {
	w   io.Writer
	mid *bool // inside a line
}

func newIndent(w io.Writer) indent { return indent{w: w, mid: new(bool)} }

func (i indent) Write(p []byte) (int, error) {
	var out []byte
	for _, l := range bytes.SplitAfter(p, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if !*i.mid {
			out = append(out, "    "...)
		}
		out = append(out, l...)
		*i.mid = l[len(l)-1] != '\n'
	}
	if _, err := i.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
