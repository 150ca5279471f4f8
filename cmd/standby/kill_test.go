package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/testutil"
)

// standbyBin is the binary under test, built once by TestMain.
var standbyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "standby-bin-")
	if err != nil {
		panic(err)
	}
	standbyBin = filepath.Join(dir, "standby")
	out, err := exec.Command("go", "build", "-o", standbyBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build standby: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentProc is a `standby agent` process serving one disk.
type agentProc struct {
	cmd    *exec.Cmd
	sock   string
	stderr *bytes.Buffer
}

func startAgent(t *testing.T, dir, disk string, extra ...string) *agentProc {
	t.Helper()
	sock := filepath.Join(dir, "agent.sock")
	args := append([]string{"agent", "--machine", "m1", "--state-dir", filepath.Join(dir, "state"),
		"--listen-unix", sock, "--disk", "root=" + disk, "--segment-size", "256KiB", "--bookmark-interval", "1s", "--log-level", "warn"}, extra...)
	cmd := exec.Command(standbyBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, sock: sock, stderr: &stderr}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := nbd.Dial(context.Background(), "unix", sock, "root", nbd.ClientOptions{})
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not start: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *agentProc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("agent exit: %v\n%s", err, p.stderr.String())
	}
}

// hammer drives random I/O at the agent over conns connections until ctx
// ends or the agent goes away. Errors after the agent died are expected.
func hammer(ctx context.Context, sock string, seed uint64, conns int) {
	var wg sync.WaitGroup
	for i := range conns {
		c, err := nbd.Dial(ctx, "unix", sock, "root", nbd.ClientOptions{})
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			buf := make([]byte, 128<<10)
			var inner sync.WaitGroup
			// A few requests in flight per connection.
			for range 4 {
				inner.Add(1)
				rseed := r.Uint64() // drawn here: r is not shared
				go func() {
					defer inner.Done()
					b := make([]byte, len(buf))
					rr := rand.New(rand.NewPCG(rseed, 0))
					for ctx.Err() == nil {
						n := int64(1 + rr.IntN(len(b)))
						if rr.IntN(2) == 0 {
							n = 4096 * int64(1+rr.IntN(8))
						}
						off := rr.Int64N(c.Size() - n)
						var err error
						switch op := rr.IntN(20); {
						case op < 15:
							for j := range b[:n] {
								b[j] = byte(rr.Uint32())
							}
							if rr.IntN(10) == 0 {
								err = c.WriteFUA(b[:n], off)
							} else {
								_, err = c.WriteAt(b[:n], off)
							}
						case op < 17:
							err = c.Zero(off, n, rr.IntN(2) == 0)
						case op < 19:
							err = c.Trim(off, n)
						default:
							err = c.Flush()
						}
						if err != nil {
							return
						}
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
}

// TestSIGKILLReplayEquality kills the agent with SIGKILL at random moments
// under load, restarts it, and checks that replaying the journal onto the
// starting image reproduces the disk byte for byte.
func TestSIGKILLReplayEquality(t *testing.T) {
	trials := 20
	if testing.Short() {
		trials = 4
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	for trial := range trials {
		t.Run(fmt.Sprintf("trial%02d", trial), func(t *testing.T) {
			dir := t.TempDir()
			disk, base := filepath.Join(dir, "disk.img"), filepath.Join(dir, "base.img")
			testutil.WriteImage(t, disk, 16<<20, 8<<20, r.Uint64())
			if err := copyFile(disk, base); err != nil {
				t.Fatal(err)
			}
			kills := 1 + r.IntN(3)
			for range kills {
				p := startAgent(t, dir, disk)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				seed, conns := r.Uint64(), 1+r.IntN(3) // drawn here: r is not shared
				go func() { hammer(ctx, p.sock, seed, conns); close(done) }()
				time.Sleep(time.Duration(20+r.IntN(400)) * time.Millisecond)
				p.kill(t)
				cancel()
				<-done
			}
			p := startAgent(t, dir, disk)
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(50+r.IntN(200))*time.Millisecond)
			hammer(ctx, p.sock, r.Uint64(), 2)
			cancel()
			p.stop(t)
			if !strings.Contains(p.stderr.String(), "recovered from an unclean stop") {
				t.Errorf("restart after SIGKILL did not report recovery:\n%s", p.stderr.String())
			}
			if _, err := replayInto(context.Background(), filepath.Join(dir, "state", "journal"), []string{base}, 0); err != nil {
				t.Fatalf("replay: %v", err)
			}
			testutil.MustEqualFiles(t, disk, base)
		})
	}
}
