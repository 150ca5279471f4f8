package qemu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/driver"
)

// Driver runs replica machines as qemu processes.
type Driver struct {
	o   Options
	log *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per machine: one QMP session at a time
}

// New validates o and returns the driver; log may be nil. The state
// directory is created when missing.
func New(o Options, log *slog.Logger) (*Driver, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("qemu driver: state_dir: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{o: o, log: log, locks: map[string]*sync.Mutex{}}, nil
}

// Factory is the registry's constructor for "qemu".
func Factory(settings map[string]any, deps driver.Deps) (driver.Driver, error) {
	var o Options
	if err := driver.DecodeSettings(settings, &o); err != nil {
		return nil, err
	}
	return New(o, deps.Logger)
}

// Dir is the state directory of the machine with handle h.
func (d *Driver) Dir(h driver.Handle) string { return filepath.Join(d.o.StateDir, string(h)) }

// SerialLog is the path of the machine's serial console log.
func (d *Driver) SerialLog(h driver.Handle) string { return filepath.Join(d.Dir(h), serialLog) }

func (d *Driver) lock(h driver.Handle) func() {
	d.mu.Lock()
	l := d.locks[string(h)]
	if l == nil {
		l = &sync.Mutex{}
		d.locks[string(h)] = l
	}
	d.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Start boots m. It returns when qemu has opened the disks (an NBD export
// that does not answer is an error here) and daemonized.
func (d *Driver) Start(ctx context.Context, m driver.Machine) (driver.Handle, error) {
	m = m.WithDefaults()
	if err := m.Validate(); err != nil {
		return "", err
	}
	if err := checkNetwork(m.Network); err != nil {
		return "", fmt.Errorf("machine %q: %w", m.Name, err)
	}
	h := driver.Handle(m.Name)
	unlock := d.lock(h)
	defer unlock()
	dir := d.Dir(h)
	if pid, ok := d.alive(h); ok {
		return "", fmt.Errorf("start machine %s: %w (qemu pid %d; stop it first)", m.Name, driver.ErrAlreadyRunning, pid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("start machine %s: %w", m.Name, err)
	}
	for _, f := range []string{pidFile, qmpSocket} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("start machine %s: %w", m.Name, err)
		}
	}
	// The last boot's console is kept for whoever investigates it.
	if err := os.Rename(filepath.Join(dir, serialLog), filepath.Join(dir, serialPrev)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("start machine %s: %w", m.Name, err)
	}
	blockDevs := map[string]bool{}
	for _, dk := range m.Disks {
		if dk.Path == "" {
			continue
		}
		fi, err := os.Stat(dk.Path)
		if err != nil {
			return "", fmt.Errorf("start machine %s: disk %s: %w", m.Name, dk.Name, err)
		}
		blockDevs[dk.Path] = fi.Mode()&fs.ModeDevice != 0
	}
	args, err := commandLine(d.o, m, dir, blockDevs)
	if err != nil {
		return "", fmt.Errorf("start machine %s: %w", m.Name, err)
	}
	cmd := exec.CommandContext(ctx, d.o.Binary, args...)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("start machine %s: %s: %w: %s", m.Name, d.o.Binary, err, strings.TrimSpace(string(out)))
	}
	pid, err := readPID(dir)
	if err != nil {
		return "", fmt.Errorf("start machine %s: qemu daemonized but %w", m.Name, err)
	}
	d.log.Info("machine started", "machine", m.Name, "pid", pid, "disks", len(m.Disks), "isolated", m.Network.Isolated)
	return h, nil
}

// Status asks QMP, and the process when QMP does not answer.
func (d *Driver) Status(ctx context.Context, h driver.Handle) (driver.Status, error) {
	if err := driver.CheckName("handle", string(h)); err != nil {
		return driver.Status{}, fmt.Errorf("status: %w: %v", driver.ErrInvalid, err)
	}
	unlock := d.lock(h)
	defer unlock()
	return d.status(ctx, h)
}

func (d *Driver) status(ctx context.Context, h driver.Handle) (driver.Status, error) {
	if _, err := os.Stat(d.Dir(h)); errors.Is(err, fs.ErrNotExist) {
		return driver.Status{}, fmt.Errorf("status of machine %s: %w", h, driver.ErrNotFound)
	}
	pid, ok := d.alive(h)
	if !ok {
		return driver.Status{State: driver.Stopped, Detail: "no qemu process"}, nil
	}
	q, err := dialQMP(ctx, filepath.Join(d.Dir(h), qmpSocket))
	if err != nil {
		return driver.Status{State: driver.Unknown, PID: pid, Detail: fmt.Sprintf("qemu pid %d is alive but QMP does not answer: %v", pid, err)}, nil
	}
	defer q.Close()
	rs, err := q.runStatus()
	if err != nil {
		return driver.Status{State: driver.Unknown, PID: pid, Detail: err.Error()}, nil
	}
	st := driver.Status{State: driver.Running, PID: pid, Detail: rs}
	switch rs {
	case "shutdown":
		st.State = driver.Stopped
	case "guest-panicked", "internal-error", "io-error":
		// A disk that went away (an NBD export stopped) is io-error: the
		// operator has to look.
		st.State = driver.Unknown
	}
	return st, nil
}

// Stop powers the machine down: ACPI power button and the stop timeout
// unless force, then quit, then SIGKILL.
func (d *Driver) Stop(ctx context.Context, h driver.Handle, force bool) error {
	if err := driver.CheckName("handle", string(h)); err != nil {
		return fmt.Errorf("stop: %w: %v", driver.ErrInvalid, err)
	}
	unlock := d.lock(h)
	defer unlock()
	if _, err := os.Stat(d.Dir(h)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stop machine %s: %w", h, driver.ErrNotFound)
	}
	pid, ok := d.alive(h)
	if !ok {
		return nil
	}
	sock := filepath.Join(d.Dir(h), qmpSocket)
	if !force {
		if err := d.qmpDo(ctx, sock, func(q *qmp) error { _, err := q.execute("system_powerdown", nil); return err }); err != nil {
			d.log.Warn("machine powerdown request failed; quitting qemu", "machine", h, "err", err)
		} else if d.waitExit(ctx, h, time.Duration(d.o.StopTimeout)) {
			d.log.Info("machine powered off", "machine", h)
			return nil
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stop machine %s: %w", h, ctx.Err())
	}
	if err := d.qmpDo(ctx, sock, (*qmp).quit); err != nil {
		d.log.Warn("qemu quit failed; killing it", "machine", h, "pid", pid, "err", err)
	}
	if d.waitExit(ctx, h, 10*time.Second) {
		d.log.Info("machine stopped", "machine", h, "force", force)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop machine %s: kill qemu pid %d: %w", h, pid, err)
	}
	if d.waitExit(ctx, h, 10*time.Second) {
		d.log.Warn("machine killed", "machine", h, "pid", pid)
		return nil
	}
	return fmt.Errorf("stop machine %s: qemu pid %d survives SIGKILL (stuck in the kernel? check its disks)", h, pid)
}

func (d *Driver) qmpDo(ctx context.Context, sock string, f func(*qmp) error) error {
	q, err := dialQMP(ctx, sock)
	if err != nil {
		return err
	}
	defer q.Close()
	return f(q)
}

// waitExit polls until the machine's process is gone, for at most t.
func (d *Driver) waitExit(ctx context.Context, h driver.Handle, t time.Duration) bool {
	deadline := time.Now().Add(t)
	for {
		if _, ok := d.alive(h); !ok {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// alive reports the machine's qemu pid when that process lives: the pid
// file names it, its command line holds this machine's QMP socket (a
// reused pid is not the machine), and it is no zombie (a daemonized qemu
// is reaped by init, which in a container may never do it).
func (d *Driver) alive(h driver.Handle) (int, bool) {
	pid, err := readPID(d.Dir(h))
	if err != nil {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), filepath.Join(d.Dir(h), qmpSocket)) {
		return 0, false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The state follows the command name in parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return 0, false
	}
	return pid, true
}

func readPID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, fmt.Errorf("pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a pid", filepath.Join(dir, pidFile), b)
	}
	return pid, nil
}
