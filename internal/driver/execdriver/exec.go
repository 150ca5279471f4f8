package execdriver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/driver"
)

// Options are the exec driver's settings.
type Options struct {
	// Start runs as Start + the disks' sources (paths or NBD URIs) in
	// boot order. Its first line of standard output, if any, is the
	// machine's handle; otherwise the handle is the machine's name.
	Start []string `json:"start"`
	// Stop runs as Stop + handle, with STANDBY_FORCE=1 for a forced stop.
	Stop []string `json:"stop"`
	// Status runs as Status + handle. Its output's first word, when it is
	// running, stopped or unknown, is the state; otherwise the exit code
	// is (LSB init-script codes): 0 running, 1..3 stopped, anything else
	// unknown. The rest of the output is the detail.
	Status []string `json:"status"`
	// Dir is the commands' working directory (empty: the role's).
	Dir string `json:"dir,omitempty"`
	// Env is added to every command's environment (KEY=VALUE).
	Env []string `json:"env,omitempty"`
	// Timeout bounds each command (default 5m); a command that overruns
	// is killed with its process group.
	Timeout driver.Duration `json:"timeout,omitempty"`
}

// DefaultTimeout bounds a command when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// maxOutput is how much of a command's output is kept.
const maxOutput = 64 << 10

// Validate lists every problem of o; the error wraps driver.ErrInvalid.
func (o Options) Validate() error {
	var p []string
	for _, c := range []struct {
		name string
		argv []string
	}{{"start", o.Start}, {"stop", o.Stop}, {"status", o.Status}} {
		if len(c.argv) == 0 || c.argv[0] == "" {
			p = append(p, fmt.Sprintf("%s: a command is needed, e.g. [\"/usr/local/bin/vm-%s\"]", c.name, c.name))
		}
	}
	for i, e := range o.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			p = append(p, fmt.Sprintf("env[%d] %q is not KEY=VALUE", i, e))
		}
	}
	if o.Timeout < 0 {
		p = append(p, "timeout: must not be negative")
	}
	if len(p) > 0 {
		return fmt.Errorf("exec driver: %w: %s", driver.ErrInvalid, strings.Join(p, "; "))
	}
	return nil
}

// Driver runs the operator's commands.
type Driver struct {
	o   Options
	log *slog.Logger
}

// New validates o and returns the driver; log may be nil.
func New(o Options, log *slog.Logger) (*Driver, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = driver.Duration(DefaultTimeout)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{o: o, log: log}, nil
}

// Factory is the registry's constructor for "exec".
func Factory(settings map[string]any, deps driver.Deps) (driver.Driver, error) {
	var o Options
	if err := driver.DecodeSettings(settings, &o); err != nil {
		return nil, err
	}
	return New(o, deps.Logger)
}

// MachineEnv is the environment that describes m to the start command.
func MachineEnv(m driver.Machine) []string {
	e := []string{
		"STANDBY_MACHINE=" + m.Name,
		"STANDBY_CPUS=" + strconv.Itoa(m.CPUs),
		"STANDBY_MEMORY_MIB=" + strconv.Itoa(m.MemoryMiB),
		"STANDBY_DISKS=" + strconv.Itoa(len(m.Disks)),
	}
	for i, d := range m.Disks {
		p := fmt.Sprintf("STANDBY_DISK_%d_", i)
		e = append(e, p+"NAME="+d.Name, p+"SOURCE="+d.Source())
		if d.URI != "" {
			e = append(e, p+"URI="+d.URI)
		} else {
			e = append(e, p+"PATH="+d.Path)
		}
	}
	if m.Network.Isolated {
		e = append(e, "STANDBY_NET_ISOLATED=1")
	} else {
		e = append(e, "STANDBY_NET_ISOLATED=0")
	}
	keys := make([]string, 0, len(m.Network.Settings))
	for k := range m.Network.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e = append(e, "STANDBY_NET_"+envKey(k)+"="+m.Network.Settings[k])
	}
	e = append(e, m.IP.Env()...)
	if a := m.IP.KernelArg(); a != "" {
		e = append(e, "STANDBY_IP_KERNEL_ARG="+a)
	}
	if m.Boot.Kernel != "" {
		e = append(e, "STANDBY_BOOT_KERNEL="+m.Boot.Kernel, "STANDBY_BOOT_INITRD="+m.Boot.Initrd, "STANDBY_BOOT_APPEND="+m.Boot.Append)
	}
	return e
}

// envKey makes a setting's key a variable name: upper case, anything but
// letters and digits as '_'.
func envKey(k string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, k)
}

// Start runs the start command, unless the status command says a machine
// of that name runs already.
func (d *Driver) Start(ctx context.Context, m driver.Machine) (driver.Handle, error) {
	m = m.WithDefaults()
	if err := m.Validate(); err != nil {
		return "", err
	}
	// The default handle is the name: a machine the status command says
	// is running under it is not started twice.
	if st, err := d.Status(ctx, driver.Handle(m.Name)); err == nil && st.State == driver.Running {
		return "", fmt.Errorf("start machine %s: %w (status: %s)", m.Name, driver.ErrAlreadyRunning, brief(st.Detail))
	}
	args := make([]string, 0, len(m.Disks))
	for _, dk := range m.Disks {
		args = append(args, dk.Source())
	}
	out, code, err := d.run(ctx, d.o.Start, args, MachineEnv(m))
	if err != nil {
		return "", fmt.Errorf("start machine %s: %w", m.Name, err)
	}
	if code != 0 {
		return "", fmt.Errorf("start machine %s: %s exited with %d: %s", m.Name, d.o.Start[0], code, brief(out))
	}
	h := driver.Handle(m.Name)
	if line, _, _ := strings.Cut(strings.TrimSpace(out), "\n"); strings.TrimSpace(line) != "" {
		h = driver.Handle(strings.TrimSpace(line))
	}
	d.log.Info("machine started", "machine", m.Name, "handle", h)
	return h, nil
}

// Stop runs the stop command.
func (d *Driver) Stop(ctx context.Context, h driver.Handle, force bool) error {
	if h == "" {
		return fmt.Errorf("stop: %w: empty handle", driver.ErrInvalid)
	}
	f := "0"
	if force {
		f = "1"
	}
	out, code, err := d.run(ctx, d.o.Stop, []string{string(h)}, []string{"STANDBY_HANDLE=" + string(h), "STANDBY_FORCE=" + f})
	if err != nil {
		return fmt.Errorf("stop machine %s: %w", h, err)
	}
	if code != 0 {
		return fmt.Errorf("stop machine %s: %s exited with %d: %s", h, d.o.Stop[0], code, brief(out))
	}
	d.log.Info("machine stopped", "handle", h, "force", force)
	return nil
}

// Status runs the status command.
func (d *Driver) Status(ctx context.Context, h driver.Handle) (driver.Status, error) {
	if h == "" {
		return driver.Status{}, fmt.Errorf("status: %w: empty handle", driver.ErrInvalid)
	}
	out, code, err := d.run(ctx, d.o.Status, []string{string(h)}, []string{"STANDBY_HANDLE=" + string(h)})
	if err != nil {
		return driver.Status{}, fmt.Errorf("status of machine %s: %w", h, err)
	}
	return ParseStatus(out, code), nil
}

// ParseStatus maps a status command's output and exit code to a Status.
func ParseStatus(out string, code int) driver.Status {
	out = strings.TrimSpace(out)
	word, rest, _ := strings.Cut(out, "\n")
	word, more, _ := strings.Cut(strings.TrimSpace(word), " ")
	detail := strings.TrimSpace(strings.TrimSpace(more) + "\n" + rest)
	switch s := driver.State(strings.ToLower(word)); s {
	case driver.Running, driver.Stopped, driver.Unknown:
		return driver.Status{State: s, Detail: detail}
	}
	st := driver.Status{State: driver.Unknown, Detail: out}
	switch {
	case code == 0:
		st.State = driver.Running
	case code >= 1 && code <= 3:
		st.State = driver.Stopped
	default:
		st.Detail = strings.TrimSpace(fmt.Sprintf("status command exited with %d\n%s", code, out))
	}
	return st
}

// run runs argv+args with the environment added; it returns the combined
// output and the exit code, or an error when the command could not run or
// was killed (timeout, cancelled context).
func (d *Driver) run(ctx context.Context, argv, args, env []string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(d.o.Timeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], append(append([]string(nil), argv[1:]...), args...)...)
	cmd.Dir = d.o.Dir
	cmd.Env = append(append(os.Environ(), d.o.Env...), env...)
	out := &capped{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// A script's children (sleep, a hypervisor CLI) go with it when it
	// is killed: its own process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return out.String(), -1, fmt.Errorf("%s: %w (output: %s)", argv[0], ctx.Err(), brief(out.String()))
	case errors.As(err, &ee):
		return out.String(), ee.ExitCode(), nil
	case err != nil:
		return out.String(), -1, fmt.Errorf("run %s: %w", argv[0], err)
	}
	return out.String(), 0, nil
}

// brief is output fit for an error message.
func brief(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// capped keeps the first max bytes written to it.
type capped struct {
	b   bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.b.String() }
