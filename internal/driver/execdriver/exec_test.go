package execdriver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/drivertest"
)

// vmScript plays a hypervisor CLI: a machine is a sleep process whose pid
// is in $STATE/<handle>.pid; start records its arguments and environment.
const vmScript = `#!/bin/sh
set -eu
cmd=$1; shift
case $cmd in
start)
  printf '%s\n' "$@" > "$STATE/$STANDBY_MACHINE.args"
  env | grep '^STANDBY_' | sort > "$STATE/$STANDBY_MACHINE.env"
  sleep 600 >/dev/null 2>&1 &
  echo $! > "$STATE/$STANDBY_MACHINE.pid"
  echo "$STANDBY_MACHINE"
  ;;
stop)
  [ -f "$STATE/$1.pid" ] || exit 0
  if [ "$STANDBY_FORCE" = 1 ]; then sig=KILL; else sig=TERM; fi
  kill -s $sig "$(cat "$STATE/$1.pid")" 2>/dev/null || true
  rm -f "$STATE/$1.pid"
  ;;
status)
  if [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; then
    echo "running pid $(cat "$STATE/$1.pid")"; exit 0
  fi
  exit 3
  ;;
esac
`

func newVM(t *testing.T) (*Driver, string) {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "vm")
	if err := os.WriteFile(script, []byte(vmScript), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{
		Start:   []string{script, "start"},
		Stop:    []string{script, "stop"},
		Status:  []string{script, "status"},
		Env:     []string{"STATE=" + dir},
		Timeout: driver.Duration(20 * time.Second),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d, dir
}

func machine(name string) driver.Machine {
	return driver.Machine{
		Name: name,
		Disks: []driver.Disk{
			{Name: "root", Path: "/var/lib/standby/exports/root.img"},
			{Name: "data", URI: "nbd://10.0.0.2:10810/web01-data"},
		},
		CPUs: 2, MemoryMiB: 1024,
		Network: driver.Network{Isolated: true, Settings: map[string]string{"bridge": "br-dr", "mac": "52:54:00:12:34:56"}},
		IP:      driver.IPSettings{Address: "10.1.0.5/24", Gateway: "10.1.0.1", DNS: []string{"10.1.0.2"}, Hostname: "web01"},
	}
}

func TestConformance(t *testing.T) {
	d, _ := newVM(t)
	drivertest.Run(t, drivertest.Harness{
		Driver:  d,
		Machine: func(t *testing.T, name string) driver.Machine { return machine(name) },
		Timeout: 10 * time.Second,
	})
}

func TestStartPassesSettings(t *testing.T) {
	d, dir := newVM(t)
	ctx := context.Background()
	h, err := d.Start(ctx, machine("web01"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(ctx, h, true)
	if h != "web01" {
		t.Errorf("handle = %q, want web01 (the start command's first line)", h)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "web01.args"))
	if got, want := string(args), "/var/lib/standby/exports/root.img\nnbd://10.0.0.2:10810/web01-data\n"; got != want {
		t.Errorf("start arguments = %q, want %q", got, want)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "web01.env"))
	for _, want := range []string{
		"STANDBY_MACHINE=web01", "STANDBY_CPUS=2", "STANDBY_MEMORY_MIB=1024", "STANDBY_DISKS=2",
		"STANDBY_DISK_0_NAME=root", "STANDBY_DISK_0_PATH=/var/lib/standby/exports/root.img",
		"STANDBY_DISK_1_URI=nbd://10.0.0.2:10810/web01-data", "STANDBY_DISK_1_SOURCE=nbd://10.0.0.2:10810/web01-data",
		"STANDBY_NET_ISOLATED=1", "STANDBY_NET_BRIDGE=br-dr", "STANDBY_NET_MAC=52:54:00:12:34:56",
		"STANDBY_IP_ADDRESS=10.1.0.5/24", "STANDBY_IP_GATEWAY=10.1.0.1", "STANDBY_IP_DNS=10.1.0.2", "STANDBY_IP_HOSTNAME=web01",
		"STANDBY_IP_KERNEL_ARG=ip=10.1.0.5::10.1.0.1:255.255.255.0:web01::off:10.1.0.2",
	} {
		if !strings.Contains("\n"+string(env), "\n"+want+"\n") {
			t.Errorf("environment lacks %s; it is:\n%s", want, env)
		}
	}
	st, err := d.Status(ctx, h)
	if err != nil || st.State != driver.Running || !strings.HasPrefix(st.Detail, "pid ") {
		t.Errorf("Status = %+v, %v; want running with detail \"pid N\"", st, err)
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		out    string
		code   int
		want   driver.State
		detail string
	}{
		{"", 0, driver.Running, ""},
		{"", 3, driver.Stopped, ""},
		{"", 1, driver.Stopped, ""},
		{"", 4, driver.Unknown, "status command exited with 4"},
		{"STOPPED since 10:00", 0, driver.Stopped, "since 10:00"},
		{"running\nuptime 5m", 3, driver.Running, "uptime 5m"},
		{"unknown host unreachable", 0, driver.Unknown, "host unreachable"},
		{"vm is up", 0, driver.Running, "vm is up"},
		{"boom", 7, driver.Unknown, "status command exited with 7\nboom"},
	} {
		got := ParseStatus(tc.out, tc.code)
		if got.State != tc.want || got.Detail != tc.detail {
			t.Errorf("ParseStatus(%q, %d) = %+v, want %s %q", tc.out, tc.code, got, tc.want, tc.detail)
		}
	}
}

func TestFailures(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fail := write("fail", "echo 'no capacity on host' >&2; exit 2\n")
	slow := write("slow", "sleep 30\n")
	stopped := write("stopped", "exit 3\n")
	ctx := context.Background()

	d, err := New(Options{Start: []string{fail}, Stop: []string{fail}, Status: []string{stopped}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(ctx, machine("web01")); err == nil || !strings.Contains(err.Error(), "exited with 2: no capacity on host") {
		t.Errorf("Start with a failing command: %v, want its exit code and output", err)
	}
	if err := d.Stop(ctx, "web01", false); err == nil || !strings.Contains(err.Error(), "no capacity") {
		t.Errorf("Stop with a failing command: %v", err)
	}

	d, err = New(Options{Start: []string{slow}, Stop: []string{slow}, Status: []string{slow}, Timeout: driver.Duration(300 * time.Millisecond)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := d.Status(ctx, "web01"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Status with a command that overruns: %v, want a deadline error", err)
	}
	if time.Since(t0) > 10*time.Second {
		t.Errorf("the overrunning command was not killed: %v", time.Since(t0))
	}

	d, err = New(Options{Start: []string{filepath.Join(dir, "missing")}, Stop: []string{stopped}, Status: []string{stopped}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(ctx, machine("web01")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Start with a missing command: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	ok := map[string]any{"start": []string{"/bin/true"}, "stop": []string{"/bin/true"}, "status": []string{"/bin/true"}, "timeout": "30s"}
	if _, err := Factory(ok, driver.Deps{}); err != nil {
		t.Fatalf("valid settings: %v", err)
	}
	for name, tc := range map[string]struct {
		settings map[string]any
		want     string
	}{
		"empty":         {map[string]any{}, "start: a command is needed"},
		"no status":     {map[string]any{"start": []string{"a"}, "stop": []string{"b"}}, "status: a command is needed"},
		"misspelt":      {map[string]any{"start": []string{"a"}, "stop": []string{"b"}, "status": []string{"c"}, "timout": "1s"}, `unknown field "timout"`},
		"bad timeout":   {map[string]any{"start": []string{"a"}, "stop": []string{"b"}, "status": []string{"c"}, "timeout": "soon"}, "is not a duration"},
		"bad env":       {map[string]any{"start": []string{"a"}, "stop": []string{"b"}, "status": []string{"c"}, "env": []string{"NOEQUALS"}}, "is not KEY=VALUE"},
		"string argv":   {map[string]any{"start": "/bin/true", "stop": []string{"b"}, "status": []string{"c"}}, "cannot unmarshal"},
		"negative time": {map[string]any{"start": []string{"a"}, "stop": []string{"b"}, "status": []string{"c"}, "timeout": "-1s"}, "must not be negative"},
	} {
		_, err := Factory(tc.settings, driver.Deps{})
		if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want ErrInvalid mentioning %q", name, err, tc.want)
		}
	}
}
