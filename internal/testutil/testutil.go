// Package testutil holds the helpers that tests of several packages share:
// disk images with known content, and byte-for-byte comparison of files.
// Only tests import it.
package testutil

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"
)

// WriteImage creates path as a disk image of size bytes whose first data
// bytes are random (from seed) and whose rest is a hole.
func WriteImage(tb testing.TB, path string, size, data int64, seed uint64) {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	b := make([]byte, min(data, size))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		tb.Fatal(err)
	}
}

// CopyFile copies src to dst.
func CopyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// MustEqualFiles fails tb, naming the first differing byte, unless the two
// files hold the same bytes.
func MustEqualFiles(tb testing.TB, a, b string) {
	tb.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		tb.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		tb.Fatal(err)
	}
	if bytes.Equal(x, y) {
		return
	}
	if len(x) != len(y) {
		tb.Fatalf("%s is %d bytes, %s is %d", a, len(x), b, len(y))
	}
	for i := range x {
		if x[i] != y[i] {
			tb.Fatalf("%s and %s differ first at byte %d (%#x vs %#x)", a, b, i, x[i], y[i])
		}
	}
}
