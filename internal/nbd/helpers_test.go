package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// testServer is a Server on a FileBackend over a sparse temp file.
type testServer struct {
	*Server
	path   string // backing file
	file   *os.File
	socket string // unix socket path, if listening on one
	tcp    string // TCP address, if listening on one
	wg     sync.WaitGroup
}

// MustFileBackend returns a FileBackend over a sparse temp file of size bytes.
func MustFileBackend(tb testing.TB, size int64) (*FileBackend, string, *os.File) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "disk.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	b, err := NewFileBackend(f)
	if err != nil {
		tb.Fatal(err)
	}
	return b, path, f
}

// testLogger sends server logs to the test log at debug level when -v is on.
func testLogger(tb testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type serverConfig struct {
	size     int64
	unix     bool
	tcp      bool
	mutate   func(*Options)
	exports  []Export // extra exports after the file-backed one
	exportAs string   // name of the file-backed export
}

// MustServer starts a Server with one file-backed export and closes it at
// cleanup, checking that no connection is left behind.
func MustServer(tb testing.TB, cfg serverConfig) *testServer {
	tb.Helper()
	if cfg.size == 0 {
		cfg.size = 64 << 20
	}
	b, path, f := MustFileBackend(tb, cfg.size)
	o := Options{
		Exports: append([]Export{{Name: cfg.exportAs, Description: "test disk", Backend: b}}, cfg.exports...),
		Logger:  testLogger(tb),
	}
	if cfg.mutate != nil {
		cfg.mutate(&o)
	}
	s, err := NewServer(o)
	if err != nil {
		tb.Fatal(err)
	}
	ts := &testServer{Server: s, path: path, file: f}
	ctx := context.Background()
	serve := func(l net.Listener) {
		ts.wg.Add(1)
		go func() {
			defer ts.wg.Done()
			if err := s.Serve(ctx, l); err != nil {
				tb.Errorf("Serve: %v", err)
			}
		}()
	}
	if cfg.unix {
		// Socket paths are limited to ~108 bytes; TempDir paths can be long.
		dir, err := os.MkdirTemp("", "nbd")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		ts.socket = filepath.Join(dir, "s")
		l, err := net.Listen("unix", ts.socket)
		if err != nil {
			tb.Fatal(err)
		}
		serve(l)
	}
	if cfg.tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ts.tcp = l.Addr().String()
		serve(l)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			tb.Errorf("Close: %v", err)
		}
		ts.wg.Wait()
	})
	return ts
}

// unixURI is the NBD URI of the export name on the unix socket.
func (ts *testServer) unixURI(name string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, ts.socket)
}

func (ts *testServer) tcpURI(name string) string {
	return fmt.Sprintf("nbd://%s/%s", ts.tcp, name)
}

// waitNoConns waits until the server has no connection left.
func waitNoConns(tb testing.TB, s *Server) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.activeConns() > 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("%d connections still open", s.activeConns())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkGoroutines fails if the number of goroutines does not come back to
// at most base within a few seconds.
func checkGoroutines(tb testing.TB, base int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			tb.Fatalf("goroutines: %d, want <= %d\n%s", n, base, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
