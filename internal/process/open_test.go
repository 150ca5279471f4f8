package process

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/standby-dr/standby/internal/wire"
)

// An Open whose machine id is not an id is refused before anything is
// written: the id names files in the cache.
func TestOpenRefusesBadMachineIDs(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache", "x")
	s, err := New(Options{CacheDir: cache, Quota: 1 << 30, Target: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), l)
	for _, id := range []string{"../../escaped", "web01", "", "00112233445566778899aabbccddeeffaa"} {
		c, err := wire.Dial(context.Background(), l.Addr().String(), nil, wire.Hello{Role: "agent", Stream: wire.StreamData}, wire.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c.SendJSON(wire.TypeOpen, wire.Open{Machine: id, Disks: []wire.DiskInfo{{Name: "d", Size: 1 << 20}}})
		err = c.Expect(wire.TypeOpened, &wire.Opened{})
		c.Close()
		if !wire.HasCode(err, wire.CodeBadRequest) {
			t.Errorf("Open of machine %q: got %v, want bad-request", id, err)
		}
	}
	var found []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			found = append(found, p)
		}
		return nil
	})
	for _, f := range found {
		if filepath.Base(filepath.Dir(f)) == "opens" || filepath.Base(f) == "escaped.json" {
			t.Errorf("a refused Open left %s", f)
		}
	}
}
