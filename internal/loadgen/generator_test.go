package loadgen

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/nbd"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		o    Options
		want string
	}{
		{Options{BlockSize: 1000}, "power of two"},
		{Options{BlockSize: 256}, "power of two"},
		{Options{MinBlocks: 5, MaxBlocks: 2}, "1 ≤ min ≤ max"},
		{Options{Distribution: "zipf"}, `"uniform", "hotspot"`},
		{Options{HotFraction: 2}, "0 < f ≤ 1"},
		{Options{Concurrency: -1}, "≥ 1"},
	}
	for _, tt := range tests {
		_, err := NewGenerator([]Disk{newMemDisk(1 << 20)}, tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: got %v, want an error containing %q", tt.o, err, tt.want)
		}
	}
	if _, err := NewGenerator([]Disk{newMemDisk(100)}, Options{}); err == nil {
		t.Error("a disk smaller than a block was accepted")
	}
}

func TestGeneratorDeterministic(t *testing.T) {
	o := Options{Seed: 3, Distribution: HotSpot}
	l1, d1 := mustGenerate(t, o, 200, 4<<20, 1<<20)
	l2, d2 := mustGenerate(t, o, 200, 4<<20, 1<<20)
	for i := range d1 {
		if !bytes.Equal(d1[i].b, d2[i].b) {
			t.Fatalf("disk %d differs between runs with the same seed", i)
		}
	}
	if len(l1.Writes) != 200 || !l1.Sequential() || l1.Validate() != nil {
		t.Fatalf("log: %d writes, sequential %v, validate %v", len(l1.Writes), l1.Sequential(), l1.Validate())
	}
	for i := range l1.Writes {
		a, b := l1.Writes[i], l2.Writes[i]
		if a.Disk != b.Disk || a.Offset != b.Offset || a.Blocks != b.Blocks {
			t.Fatalf("write %d: %+v vs %+v", i+1, a, b)
		}
	}
}

func TestGeneratorHotSpot(t *testing.T) {
	const size = 16 << 20
	l, _ := mustGenerate(t, Options{Seed: 1, Distribution: HotSpot, HotFraction: 0.01, HotProbability: 1}, 300, size)
	lo, hi := l.Writes[0].Offset, l.Writes[0].Offset
	for _, w := range l.Writes {
		lo, hi = min(lo, w.Offset), max(hi, w.Offset+int64(w.Blocks*l.BlockSize))
	}
	if hi-lo > size/100+16*4096 {
		t.Fatalf("hot spot writes span %d bytes of %d", hi-lo, size)
	}
}

type failDisk struct {
	*memDisk
	after int
}

var errInjected = errors.New("injected")

func (f *failDisk) WriteAt(p []byte, off int64) (int, error) {
	if f.after--; f.after < 0 {
		return 0, errInjected
	}
	return f.memDisk.WriteAt(p, off)
}

func TestGeneratorWriteError(t *testing.T) {
	g, err := NewGenerator([]Disk{&failDisk{newMemDisk(1 << 20), 5}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background(), 10); !errors.Is(err, errInjected) {
		t.Fatalf("got %v, want the injected error", err)
	}
	l := g.Log()
	if len(l.Writes) != 6 || !l.Writes[5].Failed || l.Writes[4].Failed {
		t.Fatalf("log after a failed 6th write: %+v", l.Writes)
	}
}

func TestGeneratorCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g, err := NewGenerator([]Disk{newMemDisk(1 << 20)}, Options{Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(ctx, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if err := g.Run(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if l := g.Log(); l.Validate() != nil {
		t.Fatalf("log after a cancelled run: %v", l.Validate())
	}
}

// The NBD client is the generator's real disk.
var _ Disk = (*nbd.Client)(nil)
