package target

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/standby-dr/standby/internal/replica"
)

// Hydration copies an overlay's disk to a sparse image equal to what the
// overlay reads, also while writes go on during the first pass (the
// catch-up passes take them), and the image is sparse where the disk is
// zero.
func TestHydrationWhileWriting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const size = 24 << 20
	base := make([]byte, size)
	rnd := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < 8<<20; off += 1 << 20 { // data in the first 8 MiB only
		for i := off; i < off+4096; i++ {
			base[i] = byte(rnd.Uint32())
		}
	}
	ov, err := replica.CreateOverlay(filepath.Join(dir, "ov"), bytes.NewReader(base), size, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	h := &hydration{}
	h.st.Total = size
	h.st.Images = []string{filepath.Join(dir, "0-vda.img")}

	// A writer that runs during the first pass, then stops.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		b := make([]byte, 8192)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for j := range b {
				b[j] = byte(i + j)
			}
			off := int64(rnd.IntN(size/4096-2)) * 4096
			if err := ov.WriteAt(ctx, b, off, false); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- h.run(ctx, []*replica.Overlay{ov}) }()
	for ov.Writes() < 200 {
	}
	close(stop)
	wg.Wait()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(h.st.Images[0])
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	if err := ov.ReadAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the hydrated image differs from the overlay's content")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(h.st.Images[0], &st); err == nil && st.Blocks*512 > size/2 {
		t.Errorf("the image takes %d bytes for a disk of %d mostly zero: not sparse", st.Blocks*512, size)
	}
	if h.st.Done != size {
		t.Fatalf("progress %d of %d", h.st.Done, size)
	}
	if _, err := os.Stat(h.st.Images[0] + ".part"); !os.IsNotExist(err) {
		t.Fatalf("the .part file is left: %v", err)
	}
}

// A machine that never stops writing: hydration gives up with an error
// after the catch-up passes, rather than claim an image it cannot have.
func TestHydrationGivesUpOnEndlessWrites(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	const size = 4 << 20
	ov, err := replica.CreateOverlay(filepath.Join(dir, "ov"), bytes.NewReader(make([]byte, size)), size, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	done := make(chan struct{})
	go func() {
		b := []byte("x")
		for ctx.Err() == nil {
			ov.WriteAt(ctx, b, 0, false)
		}
		close(done)
	}()
	h := &hydration{}
	h.st.Total = size
	h.st.Images = []string{filepath.Join(dir, "0-vda.img")}
	for ov.Writes() == 0 {
	}
	err = h.run(ctx, []*replica.Overlay{ov})
	cancel()
	<-done
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("kept writing")) {
		t.Fatalf("hydration under endless writes: %v", err)
	}
}
