package nbd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// checkBackend exercises a Backend of at least 4 MiB that starts as zeros.
func checkBackend(t *testing.T, b Backend) {
	t.Helper()
	ctx := context.Background()
	const mib = 1 << 20
	data := bytes.Repeat([]byte("0123456789abcdef"), mib/16)
	read := func(off, n int64) []byte {
		t.Helper()
		p := make([]byte, n)
		if err := b.ReadAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
		return p
	}
	zeros := make([]byte, mib)
	for i, fua := range []bool{false, true, false} {
		if err := b.WriteAt(ctx, data, int64(i)*mib, fua); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(mib, mib), data) {
		t.Fatal("written data does not read back")
	}
	if err := b.Zero(ctx, 0, mib, true, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Zero(ctx, mib, mib, false, true); err != nil {
		t.Fatal(err)
	}
	if err := b.Zero(ctx, 2*mib+1, 511, true, false); err != nil { // unaligned
		t.Fatal(err)
	}
	if !bytes.Equal(read(0, mib), zeros) || !bytes.Equal(read(mib, mib), zeros) {
		t.Fatal("zeroed ranges do not read as zeros")
	}
	got := read(2*mib, 1024)
	if got[0] != data[0] || !bytes.Equal(got[1:512], zeros[:511]) || !bytes.Equal(got[512:], data[512:1024]) {
		t.Fatal("unaligned zero did not zero exactly its range")
	}
	if err := b.Trim(ctx, 2*mib, mib, true); err != nil {
		t.Fatal(err)
	}
	exts, err := b.Extents(ctx, 0, 4*mib)
	if err != nil || len(exts) == 0 {
		t.Fatalf("Extents: %v, %v", exts, err)
	}
	var sum int64
	for _, e := range exts {
		if e.Length <= 0 {
			t.Fatalf("extent of length %d in %v", e.Length, exts)
		}
		sum += e.Length
	}
	if sum > 4*mib {
		t.Fatalf("extents %v cover %d bytes, asked for %d", exts, sum, 4*mib)
	}
}

func TestFileBackendRegularFile(t *testing.T) {
	b, _, _ := MustFileBackend(t, 4<<20)
	if b.Size() != 4<<20 {
		t.Fatalf("Size = %d", b.Size())
	}
	checkBackend(t, b)
	// On a file system with holes, the punched and trimmed ranges are holes.
	exts, err := b.Extents(context.Background(), 0, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := "[{1048576 true true} {1048576 false false} {2097152 true true}]"
	if got := fmt.Sprint(exts); got != want && !b.noPunch.Load() {
		t.Errorf("Extents = %s, want %s", got, want)
	}
}

func TestFileBackendBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for losetup")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	img := filepath.Join(t.TempDir(), "dev.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 4<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := NewFileBackend(f)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != 4<<20 {
		t.Fatalf("block device Size = %d", b.Size())
	}
	checkBackend(t, b)
}

func TestFileBackendRejectsOtherFiles(t *testing.T) {
	f, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := NewFileBackend(f); err == nil {
		t.Error("NewFileBackend accepted a directory")
	}
}
