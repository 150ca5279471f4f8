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
			off := int64(rnd.IntN(8<<20/4096-2)) * 4096 // the last 16 MiB stay zero
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
	if err := syscall.Stat(h.st.Images[0], &st); err == nil && st.Blocks*512 > 10<<20 {
		t.Errorf("the image takes %d bytes for a disk of %d mostly zero: not sparse", st.Blocks*512, size)
	}
	if h.st.Done != size {
		t.Fatalf("progress %d of %d", h.st.Done, size)
	}
	if _, err := os.Stat(h.st.Images[0] + ".part"); !os.IsNotExist(err) {
		t.Fatalf("the .part file is left: %v", err)
	}
}
