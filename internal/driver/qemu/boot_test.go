package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/drivertest"
	"github.com/standby-dr/standby/internal/driver/qemu/qemutest"
	"github.com/standby-dr/standby/internal/nbd"
)

func TestMain(m *testing.M) {
	code := m.Run()
	qemutest.Cleanup()
	os.Exit(code)
}

// bootTimeout is generous: a kernel boots in seconds under KVM, but here
// it is TCG on two shared cores.
const bootTimeout = 3 * time.Minute

func newDriver(t *testing.T, o Options) *Driver {
	t.Helper()
	// A short state directory: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "sbq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	o.StateDir = dir
	d, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func guestMachine(g qemutest.Guest, name string, disk driver.Disk, hold bool) driver.Machine {
	app := qemutest.BaseAppend
	if hold {
		app += " " + qemutest.HoldArg
	}
	return driver.Machine{
		Name:      name,
		Disks:     []driver.Disk{disk},
		MemoryMiB: 256,
		Network:   driver.Network{Isolated: true},
		IP:        driver.IPSettings{Address: "10.1.0.5/24", Gateway: "10.1.0.1", Hostname: "web01"},
		Boot:      driver.Boot{Kernel: g.Kernel, Initrd: g.Initrd, Append: app},
	}
}

// bootAndRead starts m, checks it runs, waits for the marker on the
// console and for the guest to power itself off.
func bootAndRead(t *testing.T, d *Driver, m driver.Machine, marker string) {
	t.Helper()
	ctx := context.Background()
	h, err := d.Start(ctx, m)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background(), h, true) })
	st, err := d.Status(ctx, h)
	if err != nil || st.State != driver.Running || st.PID == 0 {
		t.Fatalf("Status right after Start = %+v, %v; want running with a pid", st, err)
	}
	log := d.SerialLog(h)
	deadline := time.Now().Add(bootTimeout)
	var got string
	for {
		var ok bool
		if got, ok = qemutest.ConsoleLine(log, qemutest.MarkerPrefix); ok {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log)
			t.Fatalf("no marker line on the console after %v; console:\n%s", bootTimeout, tail(b))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != marker {
		t.Errorf("guest read marker %q, want %q", got, marker)
	}
	cmdline, _ := qemutest.ConsoleLine(log, qemutest.CmdlinePrefix)
	if want := m.IP.KernelArg(); !strings.Contains(cmdline, want) {
		t.Errorf("guest's kernel command line %q lacks the IP settings %q", cmdline, want)
	}
	st = drivertest.WaitState(t, d, h, driver.Stopped, bootTimeout)
	t.Logf("guest read %q and powered off; status %+v", got, st)
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// TestBootReplicaFromImage: the failover disk is a plain image file.
func TestBootReplicaFromImage(t *testing.T) {
	g := qemutest.Need(t)
	d := newDriver(t, Options{NoReboot: true})
	img := filepath.Join(t.TempDir(), "web01-root.img")
	marker := fmt.Sprintf("written-before-failover-%d", time.Now().UnixNano())
	qemutest.WriteMarkerDisk(t, img, 16<<20, marker)
	bootAndRead(t, d, guestMachine(g, "web01", driver.Disk{Name: "root", Path: img}, false), marker)
}

// TestBootReplicaFromNBD: the failover disk is an NBD export, served by
// qemu-nbd over TCP and by Standby's own NBD server over a unix socket
// (the server the master target's exports are built on).
func TestBootReplicaFromNBD(t *testing.T) {
	g := qemutest.Need(t)
	d := newDriver(t, Options{NoReboot: true})
	img := filepath.Join(t.TempDir(), "web01-root.img")
	marker := fmt.Sprintf("replicated-marker-%d", time.Now().UnixNano())
	qemutest.WriteMarkerDisk(t, img, 16<<20, marker)

	t.Run("qemu-nbd", func(t *testing.T) {
		uri := serveQEMUNBD(t, img, "web01-root")
		bootAndRead(t, d, guestMachine(g, "web01-qnbd", driver.Disk{Name: "root", URI: uri}, false), marker)
	})
	t.Run("standby-nbd", func(t *testing.T) {
		uri := serveStandbyNBD(t, img, "web01-root")
		bootAndRead(t, d, guestMachine(g, "web01-snbd", driver.Disk{Name: "root", URI: uri}, false), marker)
	})
}

// TestStartRefusesDeadExport: qemu opens its disks before it daemonizes,
// so an export that does not answer fails Start, with qemu's words.
func TestStartRefusesDeadExport(t *testing.T) {
	g := qemutest.Need(t)
	d := newDriver(t, Options{NoReboot: true})
	port := freePort(t)
	_, err := d.Start(context.Background(), guestMachine(g, "web01", driver.Disk{Name: "root", URI: fmt.Sprintf("nbd://127.0.0.1:%d/x", port)}, false))
	if err == nil || !strings.Contains(err.Error(), "start machine web01") || !strings.Contains(strings.ToLower(err.Error()), "connect") {
		t.Fatalf("Start over a dead export: %v, want qemu's connection error", err)
	}
	if st, err := d.Status(context.Background(), "web01"); err != nil || st.State != driver.Stopped {
		t.Errorf("Status after a failed Start = %+v, %v; want stopped", st, err)
	}
}

// TestConformance runs the driver suite with a guest that stays up; its
// clean stop goes through the quit fallback (the busybox guest ignores
// the ACPI power button), with a short stop timeout.
func TestConformance(t *testing.T) {
	g := qemutest.Need(t)
	d := newDriver(t, Options{NoReboot: true, StopTimeout: driver.Duration(2 * time.Second)})
	img := filepath.Join(t.TempDir(), "disk.img")
	qemutest.WriteMarkerDisk(t, img, 16<<20, "conformance")
	drivertest.Run(t, drivertest.Harness{
		Driver: d,
		Machine: func(t *testing.T, name string) driver.Machine {
			return guestMachine(g, name, driver.Disk{Name: "root", Path: img}, true)
		},
		Timeout: bootTimeout,
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serveQEMUNBD serves img with qemu-nbd on a loopback port.
func serveQEMUNBD(t *testing.T, img, export string) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-nbd"); err != nil {
		t.Skip("qemu-nbd missing (Debian package qemu-utils)")
	}
	port := freePort(t)
	cmd := exec.Command("qemu-nbd", "-f", "raw", "-x", export, "-b", "127.0.0.1", "-p", fmt.Sprint(port), "-t", img)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd does not listen on %s: %s", addr, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("nbd://%s/%s", addr, export)
}

// serveStandbyNBD serves img with internal/nbd on a unix socket.
func serveStandbyNBD(t *testing.T, img, export string) string {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	be, err := nbd.NewFileBackend(f)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := nbd.NewServer(nbd.Options{Exports: []nbd.Export{{Name: export, Backend: be}}})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sbn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		<-done
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		_ = srv.Close(cctx)
	})
	return "nbd+unix:///" + export + "?socket=" + sock
}
