// Package qemutest builds a tiny bootable Linux guest for tests of the
// qemu driver (and of anything that boots a replica machine): the host's
// Debian kernel, and a busybox initramfs whose init loads virtio_blk,
// reads a marker from a known offset of the first disk, prints it on the
// serial console and powers off. It needs the Debian packages
// linux-image-cloud-amd64 (or linux-image-amd64), busybox-static and
// qemu-system-x86; it installs them with apt when it can, and otherwise
// skips the test, unless CI=true, where it fails. Only tests import it.
package qemutest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// MarkerOffset is where WriteMarkerDisk puts the marker and where the
// guest's init reads it (sector 2048, 1 MiB).
const MarkerOffset = 1 << 20

// Lines the guest prints on its serial console.
const (
	MarkerPrefix  = "standby-guest: marker "
	CmdlinePrefix = "standby-guest: cmdline "
	// HoldArg on the kernel command line keeps the guest running after
	// it printed the marker, until it is stopped.
	HoldArg = "standby.hold"
	// BaseAppend is the minimal kernel command line of the test guest.
	BaseAppend = "console=ttyS0 quiet panic=-1"
)

// Packages are the Debian packages the guest is built from.
var Packages = []string{"qemu-system-x86", "linux-image-cloud-amd64", "busybox-static"}

// Guest is a bootable kernel and initramfs.
type Guest struct {
	Kernel string
	Initrd string
}

// init is the guest's /init. Module files are named NN-name.ko in load
// order.
const initScript = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in /lib/modules/*.ko; do $B insmod "$m" || echo "standby-guest: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do $B sleep 0.1; i=$((i+1)); done
echo "` + CmdlinePrefix + `$($B cat /proc/cmdline)"
echo "` + MarkerPrefix + `$($B dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | $B head -n 1)"
if $B grep -q ` + HoldArg + ` /proc/cmdline; then
  while :; do $B sleep 1; done
fi
$B poweroff -f
`

var (
	once     sync.Once
	built    Guest
	buildErr error
	skipWhy  string
	buildDir string
)

// Need returns the guest, built once per test binary; it skips the test
// (or fails it when CI=true) when the packages are missing and cannot be
// installed.
func Need(tb testing.TB) Guest {
	tb.Helper()
	once.Do(func() {
		skipWhy = ensurePackages()
		if skipWhy != "" {
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "standby-guest-")
		if buildErr == nil {
			built, buildErr = build(buildDir)
		}
	})
	if skipWhy != "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("test guest: %s", skipWhy)
		}
		tb.Skipf("test guest: %s (install %s)", skipWhy, strings.Join(Packages, " "))
	}
	if buildErr != nil {
		tb.Fatalf("build test guest: %v", buildErr)
	}
	return built
}

// Cleanup removes the built guest; call it from TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// ensurePackages installs what is missing when root; it returns why the
// guest cannot be built, or "".
func ensurePackages() string {
	if _, _, err := findKernel(); err == nil && haveBusybox() && haveQEMU() {
		return ""
	}
	if os.Geteuid() != 0 {
		return "kernel, busybox-static or qemu missing and not root"
	}
	install := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, Packages...)...)
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := install.CombinedOutput(); err != nil {
		if out2, err2 := exec.Command("apt-get", "update", "-qq").CombinedOutput(); err2 != nil {
			return fmt.Sprintf("apt-get update: %v: %s", err2, lastLine(out2))
		}
		install = exec.Command(install.Path, install.Args[1:]...)
		install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err = install.CombinedOutput(); err != nil {
			return fmt.Sprintf("apt-get install: %v: %s", err, lastLine(out))
		}
	}
	if _, _, err := findKernel(); err != nil {
		return err.Error()
	}
	if !haveBusybox() || !haveQEMU() {
		return "busybox-static or qemu-system-x86_64 still missing after apt-get install"
	}
	return ""
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func haveQEMU() bool { _, err := exec.LookPath("qemu-system-x86_64"); return err == nil }

// busyboxPath is busybox-static's binary (the dynamic busybox package
// would not run in an initramfs without its libraries).
func busyboxPath() string {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isStatic(p) {
			return p
		}
	}
	return ""
}

// isStatic reports whether path is an ELF executable without an
// interpreter (PT_INTERP): one that runs with no libraries.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}

func haveBusybox() bool { return busyboxPath() != "" }

// findKernel returns a /boot/vmlinuz-* whose modules are installed, the
// newest by name.
func findKernel() (kernel, modDir string, err error) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Sort(sort.Reverse(sort.StringSlice(ks)))
	for _, k := range ks {
		ver := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		md := filepath.Join("/lib/modules", ver)
		if _, err := os.Stat(filepath.Join(md, "modules.dep")); err == nil {
			return k, md, nil
		}
	}
	return "", "", fmt.Errorf("no /boot/vmlinuz-* with its /lib/modules/<version>/modules.dep")
}

// build writes the initramfs into dir.
func build(dir string) (Guest, error) {
	kernel, modDir, err := findKernel()
	if err != nil {
		return Guest{}, err
	}
	mods, err := loadOrder(modDir, "virtio_pci", "virtio_blk")
	if err != nil {
		return Guest{}, err
	}
	bb, err := os.ReadFile(busyboxPath())
	if err != nil {
		return Guest{}, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	c := &cpioWriter{w: zw}
	for _, d := range []string{"bin", "dev", "proc", "sys", "lib", "lib/modules"} {
		c.entry(d, cpioDir|0o755, nil, 0, 0)
	}
	// The kernel opens /dev/console for init's stdio before init mounts
	// devtmpfs: it must be in the archive.
	c.entry("dev/console", cpioChr|0o600, nil, 5, 1)
	c.entry("bin/busybox", cpioFile|0o755, bb, 0, 0)
	c.entry("bin/sh", cpioLink|0o777, []byte("busybox"), 0, 0)
	c.entry("init", cpioFile|0o755, []byte(initScript), 0, 0)
	for i, m := range mods {
		b, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			return Guest{}, err
		}
		if !bytes.HasPrefix(b, []byte("\x7fELF")) {
			return Guest{}, fmt.Errorf("module %s is compressed; busybox insmod needs it plain", m)
		}
		c.entry(fmt.Sprintf("lib/modules/%02d-%s", i, filepath.Base(m)), cpioFile|0o644, b, 0, 0)
	}
	if err := c.close(); err != nil {
		return Guest{}, err
	}
	if err := zw.Close(); err != nil {
		return Guest{}, err
	}
	initrd := filepath.Join(dir, "initramfs.cpio.gz")
	if err := os.WriteFile(initrd, buf.Bytes(), 0o644); err != nil {
		return Guest{}, err
	}
	return Guest{Kernel: kernel, Initrd: initrd}, nil
}

// loadOrder resolves modules.dep: the module files to insmod, each after
// its dependencies. Modules built into the kernel (absent from
// modules.dep but listed in modules.builtin) need nothing.
func loadOrder(modDir string, names ...string) ([]string, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{} // module file -> its dependencies' files
	byName := map[string]string{} // module name -> file
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[modName(mod)] = mod
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	builtin, _ := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	var order []string
	seen := map[string]bool{}
	var visit func(string)
	visit = func(m string) {
		if seen[m] {
			return
		}
		seen[m] = true
		for _, d := range deps[m] {
			visit(d)
		}
		order = append(order, m)
	}
	for _, n := range names {
		m, ok := byName[n]
		if !ok {
			if bytes.Contains(builtin, []byte("/"+n+".ko")) {
				continue
			}
			return nil, fmt.Errorf("module %s is neither in %s/modules.dep nor built in", n, modDir)
		}
		visit(m)
	}
	return order, nil
}

// modName is a module file's name: kernel/drivers/block/virtio_blk.ko -> virtio_blk.
func modName(file string) string {
	b := filepath.Base(file)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// WriteMarkerDisk creates path as a raw disk of size bytes with marker
// (one line, no newline inside) at MarkerOffset.
func WriteMarkerDisk(tb testing.TB, path string, size int64, marker string) {
	tb.Helper()
	if strings.Contains(marker, "\n") || size < MarkerOffset+4096 {
		tb.Fatalf("WriteMarkerDisk: marker %q must be one line and size %d at least %d", marker, size, MarkerOffset+4096)
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(marker+"\n"), MarkerOffset); err != nil {
		tb.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
}

// Machine-independent helpers for reading the console.

// ConsoleLine returns the text after prefix on the first line of the log
// at path that has it.
func ConsoleLine(path, prefix string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			return strings.TrimRight(l[i+len(prefix):], "\r"), true
		}
	}
	return "", false
}
