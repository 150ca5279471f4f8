package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func mustDial(t testing.TB, ts *testServer, o ClientOptions) *Client {
	t.Helper()
	c, err := Dial(context.Background(), "unix", ts.socket, "", o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientConcurrent(t *testing.T) {
	ts := MustServer(t, serverConfig{unix: true, size: 16 << 20})
	c := mustDial(t, ts, ClientOptions{})
	const workers, ops, region = 16, 300, 1 << 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := int64(w) * region
			model := make([]byte, region)
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range ops {
				off := rng.Int64N(region - 8192)
				n := rng.IntN(8192) + 1
				if rng.IntN(2) == 0 {
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.Uint32())
					}
					if _, err := c.WriteAt(p, base+off); err != nil {
						t.Error(err)
						return
					}
					copy(model[off:], p)
				} else {
					p := make([]byte, n)
					if _, err := c.ReadAt(p, base+off); err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(p, model[off:off+int64(n)]) {
						t.Errorf("worker %d: read %d+%d differs from what was written", w, off, n)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestClientOperations(t *testing.T) {
	const size = 64 << 20
	ts := MustServer(t, serverConfig{unix: true, size: size, mutate: func(o *Options) { o.Exports[0].MultiConn = true }})
	c := mustDial(t, ts, ClientOptions{BaseAllocation: true})
	if c.Size() != size {
		t.Fatalf("Size = %d", c.Size())
	}
	if c.flags&flagCanMultiConn == 0 || c.flags&flagSendDF == 0 || c.flags&flagReadOnly != 0 {
		t.Errorf("transmission flags %#x", c.flags)
	}

	// Reads and writes larger than the maximum payload are split.
	big := make([]byte, 40<<20)
	for i := range big {
		big[i] = byte(i / 4096)
	}
	if n, err := c.WriteAt(big, 1<<20); n != len(big) || err != nil {
		t.Fatalf("WriteAt 40 MiB: %d, %v", n, err)
	}
	got := make([]byte, len(big))
	if n, err := c.ReadAt(got, 1<<20); n != len(big) || err != nil || !bytes.Equal(got, big) {
		t.Fatalf("ReadAt 40 MiB: %d, %v, equal %v", n, err, bytes.Equal(got, big))
	}
	if err := c.WriteFUA([]byte("durable"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	// io.ReaderAt at the end of the export.
	p := make([]byte, 10)
	if n, err := c.ReadAt(p, size-4); n != 4 || err != io.EOF {
		t.Errorf("ReadAt across the end: %d, %v", n, err)
	}
	if n, err := c.ReadAt(p, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end: %d, %v", n, err)
	}

	// Errors carry the errno.
	_, err := c.WriteAt([]byte("xx"), size-1)
	var re *RequestError
	if !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &re) || re.Op != "WRITE" || re.Message == "" {
		t.Errorf("write past the end: %v", err)
	}

	// Zero and Trim, seen through the data and the allocation map.
	if err := c.Zero(1<<20, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Zero(2<<20, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Trim(3<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 2<<20)
	if _, err := c.ReadAt(got[:2<<20], 1<<20); err != nil || !bytes.Equal(got[:2<<20], zeros) {
		t.Errorf("zeroed range does not read as zeros (err %v)", err)
	}
	exts, err := c.Extents(1<<20, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{Length: 1 << 20, Hole: true, Zero: true}, {Length: 1 << 20}, {Length: 1 << 20, Hole: true, Zero: true}}
	if fmt.Sprint(exts) != fmt.Sprint(want) {
		t.Errorf("Extents = %v, want %v", exts, want)
	}
	if _, err := c.Extents(size, 1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("Extents past the end: %v", err)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAt(p, 0); !errors.Is(err, ErrClientClosed) {
		t.Errorf("ReadAt after Close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, ErrClientClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func TestClientReadOnlyExport(t *testing.T) {
	b, _, _ := MustFileBackend(t, 1<<20)
	ts := MustServer(t, serverConfig{unix: true, mutate: func(o *Options) {
		o.Exports = append(o.Exports, Export{Name: "ro", Backend: b, ReadOnly: true})
	}})
	c, err := Dial(context.Background(), "unix", ts.socket, "ro", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("write to a read-only export: %v", err)
	}
	if err := c.Trim(0, 1); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("trim on a read-only export: %v", err)
	}
	if _, err := Dial(context.Background(), "unix", ts.socket, "nope", ClientOptions{}); err == nil {
		t.Error("Dial of an unknown export succeeded")
	}
}

// TestClientAgainstNbdkit checks the client against an independent server,
// with and without structured replies.
func TestClientAgainstNbdkit(t *testing.T) {
	if _, err := exec.LookPath("nbdkit"); err != nil {
		t.Skip("nbdkit not installed")
	}
	for _, sr := range []bool{true, false} {
		t.Run(fmt.Sprintf("structured=%v", sr), func(t *testing.T) {
			dir, err := os.MkdirTemp("", "nbdkit")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			sock := filepath.Join(dir, "s")
			args := []string{"-f", "-U", sock, "memory", "16M"}
			if !sr {
				args = append([]string{"--no-sr"}, args...)
			}
			cmd := exec.Command("nbdkit", args...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			var c *Client
			for range 100 {
				if c, err = Dial(context.Background(), "unix", sock, "", ClientOptions{BaseAllocation: sr}); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.structured != sr {
				t.Errorf("structured = %v", c.structured)
			}
			roundTrip(t, c, 12345)
			if err := c.Zero(0, 4096, true); err != nil {
				t.Error(err)
			}
			if _, err := c.ReadAt(make([]byte, 1), 16<<20); err != io.EOF {
				t.Error(err)
			}
			var wg sync.WaitGroup
			for i := range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					roundTrip(t, c, int64(i)*65536)
				}()
			}
			wg.Wait()
			if sr {
				if exts, err := c.Extents(0, 16<<20); err != nil || len(exts) == 0 {
					t.Errorf("Extents: %v, %v", exts, err)
				}
			}
		})
	}
}

// hookBackend wraps a Backend and can delay or fail its writes.
type hookBackend struct {
	Backend
	write func(ctx context.Context) error
}

func (b *hookBackend) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := b.write(ctx); err != nil {
		return err
	}
	return b.Backend.WriteAt(ctx, p, off, fua)
}

func TestBackendErrorMapping(t *testing.T) {
	fb, _, _ := MustFileBackend(t, 1<<20)
	var next atomic.Pointer[error]
	hb := &hookBackend{Backend: fb, write: func(context.Context) error { return *next.Load() }}
	ts := MustServer(t, serverConfig{unix: true, mutate: func(o *Options) { o.Exports = []Export{{Backend: hb}} }})
	c := mustDial(t, ts, ClientOptions{})
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{syscall.ENOSPC, syscall.ENOSPC},
		{fmt.Errorf("wrapped: %w", syscall.EPERM), syscall.EPERM},
		{syscall.EDQUOT, syscall.ENOSPC},
		{&os.PathError{Op: "write", Path: "x", Err: syscall.EIO}, syscall.EIO},
		{syscall.ENOTSUP, syscall.ENOTSUP},
		{syscall.EBADF, syscall.EIO},
		{errors.New("journal full"), syscall.EIO},
		{context.Canceled, syscall.ESHUTDOWN},
	} {
		next.Store(&tc.err)
		_, err := c.WriteAt([]byte("x"), 0)
		if !errors.Is(err, tc.want) {
			t.Errorf("backend error %v: client got %v, want %v", tc.err, err, tc.want)
		}
	}
}

func TestCloseFinishesInFlight(t *testing.T) {
	pki := mustPKI(t)
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) { testCloseFinishesInFlight(t, pki, useTLS) })
	}
}

func testCloseFinishesInFlight(t *testing.T, pki *testPKI, useTLS bool) {
	fb, _, _ := MustFileBackend(t, 1<<20)
	started := make(chan struct{}, 64)
	release := make(chan struct{})
	hb := &hookBackend{Backend: fb, write: func(context.Context) error {
		started <- struct{}{}
		<-release
		return nil
	}}
	ts := MustServer(t, serverConfig{unix: true, mutate: func(o *Options) {
		o.Exports = []Export{{Backend: hb}}
		o.TLSConfig = pki.serverTLS
	}})
	var co ClientOptions
	if useTLS {
		co.TLSConfig = pki.clientTLS
	}
	c := mustDial(t, ts, co)
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.WriteAt([]byte{byte(i)}, int64(i))
			errs <- err
		}()
	}
	for range n {
		<-started
	}
	closed := make(chan error, 1)
	go func() { closed <- ts.Close(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // Close is now waiting for the writes
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("in-flight write during Close: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("read succeeded after the server closed")
	}
}

func TestCloseTimeoutCancelsBackend(t *testing.T) {
	base := runtime.NumGoroutine()
	fb, _, _ := MustFileBackend(t, 1<<20)
	cancelled := make(chan struct{})
	hb := &hookBackend{Backend: fb, write: func(ctx context.Context) error {
		<-ctx.Done() // a stuck backend that honours its context
		close(cancelled)
		return ctx.Err()
	}}
	s, err := NewServer(Options{Exports: []Export{{Backend: hb}}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cn, sn := net.Pipe()
	go s.serveConn(sn)
	c, err := newClient(context.Background(), cn, "", ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.WriteAt([]byte("x"), 0)
		werr <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want DeadlineExceeded", err)
	}
	<-cancelled
	if err := <-werr; err == nil {
		t.Error("write succeeded although the server gave up")
	}
	c.Close()
	waitNoConns(t, s)
	checkGoroutines(t, base)
}

// BenchmarkWrite4K measures 4 KiB writes through the client at queue depth 16.
func BenchmarkWrite4K(b *testing.B) {
	ts := MustServer(b, serverConfig{unix: true, size: 256 << 20})
	c := mustDial(b, ts, ClientOptions{})
	var next atomic.Int64
	b.SetBytes(4096)
	b.ReportAllocs()
	b.SetParallelism(8) // 2 cores × 8 = 16 in flight
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 4096)
		for pb.Next() {
			off := (next.Add(1) * 4096) % (256 << 20)
			if _, err := c.WriteAt(p, off); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
