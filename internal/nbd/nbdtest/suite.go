// Package nbdtest checks an NBD export with real NBD clients: qemu-io,
// qemu-img, nbdcopy, nbdinfo, fio's nbd engine, and nbdfuse under a loop
// device with ext4 on top. Any server can be checked: the one in package
// nbd, or an agent exporting a protected disk.
//
// The suite writes to the export: run it only against scratch data.
package nbdtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Peer suite: runs real NBD clients against an export reachable at uri (nbd+unix:///name?socket=PATH or nbd://127.0.0.1:PORT/name).
// size is the export's size. Each sub-test skips with a clear message if its tool is missing (t.Skipf("qemu-io not installed")).
func RunClientSuite(t *testing.T, uri string, size int64) {
	t.Helper()
	ep, err := parseURI(uri)
	if err != nil {
		t.Fatalf("nbdtest: %v", err)
	}
	s := &suite{uri: uri, size: size, ep: ep}
	t.Run("qemu-io", s.qemuIO)
	t.Run("qemu-img", s.qemuImg)
	t.Run("nbdcopy", s.nbdcopy)
	t.Run("nbdinfo", s.nbdinfo)
	t.Run("fio", s.fio)
	t.Run("nbdfuse-ext4", s.nbdfuseExt4)
}

type suite struct {
	uri  string
	size int64
	ep   endpoint
}

// endpoint is what a URI names, for tools that want it spelled out.
type endpoint struct {
	export string
	socket string // unix socket path, or
	host   string // TCP host and port
	port   string
}

func parseURI(uri string) (endpoint, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return endpoint{}, fmt.Errorf("parse %q: %w", uri, err)
	}
	ep := endpoint{export: strings.TrimPrefix(u.Path, "/")}
	switch u.Scheme {
	case "nbd+unix":
		ep.socket = u.Query().Get("socket")
		if ep.socket == "" {
			return ep, fmt.Errorf("%q has no socket parameter", uri)
		}
	case "nbd":
		ep.host, ep.port = u.Hostname(), u.Port()
		if ep.port == "" {
			ep.port = "10809"
		}
	default:
		return ep, fmt.Errorf("%q: scheme must be nbd or nbd+unix", uri)
	}
	return ep, nil
}

// qemuJSON is a qemu block spec for the window [0, size) of the export,
// as a json: pseudo-filename that qemu-img and qemu-io accept.
func (s *suite) qemuJSON(size int64) string {
	server := map[string]string{"type": "unix", "path": s.ep.socket}
	if s.ep.socket == "" {
		server = map[string]string{"type": "inet", "host": s.ep.host, "port": s.ep.port}
	}
	b, err := json.Marshal(map[string]any{
		"driver": "raw",
		"offset": 0,
		"size":   size,
		"file":   map[string]any{"driver": "nbd", "server": server, "export": s.ep.export},
	})
	if err != nil {
		panic(err) // maps of strings and numbers always marshal
	}
	return "json:" + string(b)
}

// need skips t unless the tools are installed and the export is big enough.
func (s *suite) need(t *testing.T, minSize int64, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if s.size < minSize {
		t.Skipf("export of %d bytes is smaller than the %d this test needs", s.size, minSize)
	}
}

// run runs a command with a timeout and fails t with its output if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runIn(t, "", name, args...)
}

// runIn is run with the working directory dir ("" for the current one).
func runIn(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	out, err := runErrIn(dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	return runErrIn("", name, args...)
}

func runErrIn(dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const (
	kib = 1 << 10
	mib = 1 << 20
)

// qemuIO writes patterns, reads them back, discards, writes zeros, flushes,
// and runs several asynchronous requests at once.
func (s *suite) qemuIO(t *testing.T) {
	s.need(t, 8*mib, "qemu-io")
	cmds := []string{
		"write -P 0xa5 0 1M", "read -P 0xa5 0 1M",
		"write -P 0x5a 1M 1M", "read -P 0x5a 1M 1M",
		"write -f -P 0x33 2M 4k", "read -P 0x33 2M 4k", // FUA
		"discard 0 1M",
		"write -z 0 1M", "read -P 0 0 1M", // zeros after a discard
		"write -z 1M 64k", "read -P 0 1M 64k", "read -P 0x5a 1088k 960k",
		"write -z -u 3M 1M", "read -P 0 3M 1M", // may punch a hole
		"write -P 0x7e 5000 3333", "read -P 0x7e 5000 3333", // unaligned
		"flush",
	}
	// Several requests in flight: distinct patterns, then read them all back.
	for i := range 8 {
		cmds = append(cmds, fmt.Sprintf("aio_write -P %#x %d 64k", 0x10+i, 4*mib+i*64*kib))
	}
	cmds = append(cmds, "aio_flush")
	for i := range 8 {
		cmds = append(cmds, fmt.Sprintf("aio_read -P %#x %d 64k", 0x10+i, 4*mib+i*64*kib))
	}
	cmds = append(cmds, "aio_flush")
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, s.uri)...)
	if strings.Contains(out, "failed") {
		t.Fatalf("qemu-io reported a failure:\n%s", out)
	}
}

// randomImage writes a raw image of n bytes: random data with zero runs
// in it, so that sparse handling is exercised too.
func randomImage(t *testing.T, n int64) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	for off := int64(mib); off+256*kib <= n; off += 2 * mib {
		clear(b[off : off+256*kib])
	}
	path := filepath.Join(t.TempDir(), "random.img")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// qemuImg converts a random image into an 8 MiB window of the export and
// back out, and compares both ways.
func (s *suite) qemuImg(t *testing.T) {
	const n = 8 * mib
	s.need(t, n, "qemu-img")
	src := randomImage(t, n)
	window := s.qemuJSON(n)
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, window)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, window)
	out := filepath.Join(t.TempDir(), "out.img")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", window, out)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, out)
}

// nbdcopy copies a random image into the export and the export out to a
// file, then compares the copied range.
func (s *suite) nbdcopy(t *testing.T) {
	const n = 8 * mib
	s.need(t, n, "nbdcopy")
	src := randomImage(t, n)
	run(t, "nbdcopy", src, s.uri)
	out := filepath.Join(t.TempDir(), "out.img")
	run(t, "nbdcopy", s.uri, out)
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != s.size {
		t.Errorf("nbdcopy out: %d bytes, export has %d", fi.Size(), s.size)
	}
	got := make([]byte, n)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if off := firstDiff(got, want); off >= 0 {
		t.Fatalf("nbdcopy round trip differs at byte %d", off)
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// nbdinfo lists exports, checks the size, and checks that the allocation
// map covers the export without gaps.
func (s *suite) nbdinfo(t *testing.T) {
	s.need(t, 0, "nbdinfo")
	list := run(t, "nbdinfo", "--list", s.uri)
	if want := fmt.Sprintf("export=%q", s.ep.export); !strings.Contains(list, want) {
		t.Errorf("nbdinfo --list lacks %s:\n%s", want, list)
	}
	if got := strings.TrimSpace(run(t, "nbdinfo", "--size", s.uri)); got != strconv.FormatInt(s.size, 10) {
		t.Errorf("nbdinfo --size = %s, want %d", got, s.size)
	}
	m := run(t, "nbdinfo", "--map", s.uri)
	var next int64
	for _, line := range strings.Split(strings.TrimSpace(m), "\n") {
		var off, n int64
		var typ int
		if _, err := fmt.Sscan(line, &off, &n, &typ); err != nil {
			t.Fatalf("nbdinfo --map line %q: %v", line, err)
		}
		if off != next || n <= 0 {
			t.Fatalf("nbdinfo --map: extent %d+%d does not follow %d:\n%s", off, n, next, m)
		}
		next = off + n
	}
	if next != s.size {
		t.Errorf("nbdinfo --map covers %d bytes, export has %d", next, s.size)
	}
}

// fio runs 4 KiB random writes at queue depth 16 with crc32c verification.
func (s *suite) fio(t *testing.T) {
	s.need(t, 16*mib, "fio")
	if out, _ := runErr("fio", "--enghelp=nbd"); !strings.Contains(out, "uri") {
		t.Skip("fio has no nbd engine")
	}
	// fio may leave state files behind: keep them out of the caller's tree.
	out := runIn(t, t.TempDir(), "fio", "--name=nbdtest", "--ioengine=nbd", "--uri="+s.uri,
		"--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=16m",
		"--verify=crc32c", "--verify_fatal=1")
	if strings.Contains(out, "verify:") || strings.Contains(out, "bad magic") {
		t.Fatalf("fio verification failed:\n%s", out)
	}
}

// nbdfuseExt4 puts the export behind nbdfuse and a loop device, makes an
// ext4 file system, writes files, remounts and reads them back, and checks
// the file system with fsck. Everything is undone at cleanup, also on failure.
func (s *suite) nbdfuseExt4(t *testing.T) {
	s.need(t, 32*mib, "nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "mount", "umount", "fsck.ext4")
	if os.Geteuid() != 0 {
		t.Skip("nbdfuse-ext4 needs root (losetup, mount)")
	}
	for _, dev := range []string{"/dev/loop-control", "/dev/fuse"} {
		if _, err := os.Stat(dev); err != nil {
			t.Skipf("%s missing: %v", dev, err)
		}
	}
	fuseDir, mnt := t.TempDir(), t.TempDir()

	ctx, cancel := context.WithCancel(context.Background())
	fuse := exec.CommandContext(ctx, "nbdfuse", fuseDir, s.uri)
	fuseOut := new(syncBuffer)
	fuse.Stdout, fuse.Stderr = fuseOut, fuseOut
	if err := fuse.Start(); err != nil {
		t.Fatalf("nbdfuse: %v", err)
	}
	t.Cleanup(func() {
		runErr("fusermount3", "-u", fuseDir)
		done := make(chan struct{})
		go func() { fuse.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel() // kills nbdfuse
			<-done
		}
		cancel()
	})
	file := filepath.Join(fuseDir, "nbd")
	waitFor(t, fmt.Sprintf("nbdfuse to present %s", file), func() bool {
		fi, err := os.Stat(file)
		return err == nil && fi.Size() == s.size
	}, fuseOut)

	loop := strings.TrimSpace(run(t, "losetup", "--find", "--show", file))
	t.Cleanup(func() { runErr("losetup", "-d", loop) })
	run(t, "mkfs.ext4", "-q", "-F", loop)

	mounted := false
	mount := func() {
		run(t, "mount", loop, mnt)
		mounted = true
	}
	umount := func() {
		run(t, "umount", mnt)
		mounted = false
	}
	t.Cleanup(func() {
		if mounted {
			runErr("umount", "-l", mnt)
		}
	})

	mount()
	sums := writeFiles(t, mnt, s.size/4)
	run(t, "sync")
	umount()
	mount()
	for name, want := range sums {
		b, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(b) != want {
			t.Errorf("%s: content changed across remount", name)
		}
	}
	umount()
	run(t, "fsck.ext4", "-n", "-f", loop)
}

// writeFiles fills dir with files of random sizes totalling about budget
// bytes (at most 64 MiB) and returns their checksums.
func writeFiles(t *testing.T, dir string, budget int64) map[string][sha256.Size]byte {
	t.Helper()
	budget = min(budget, 64*mib)
	sums := make(map[string][sha256.Size]byte)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; budget > 0; i++ {
		n := min(budget, mathrand.Int64N(4*mib)+1)
		b := make([]byte, n)
		rand.Read(b)
		name := fmt.Sprintf("file%03d", i)
		if i%2 == 1 {
			name = filepath.Join("sub", name)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[name] = sha256.Sum256(b)
		budget -= n
	}
	return sums
}

func waitFor(t *testing.T, what string, cond func() bool, log *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s", what, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer collects a child's output while the test may read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
