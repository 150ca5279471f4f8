package capture

import (
	"context"
	"math/rand/v2"
	"testing"
)

// BenchmarkWrite4K compares a 4 KiB random write through capture with the
// same write straight to the file behind it.
func BenchmarkWrite4K(b *testing.B) {
	r := newRig(b, 1<<30)
	ctx := context.Background()
	buf := make([]byte, 4096)
	b.Run("direct", func(b *testing.B) {
		d := mustBackend(b, r.disks[0])
		rnd := rand.New(rand.NewPCG(1, 1))
		b.SetBytes(4096)
		for b.Loop() {
			if err := d.WriteAt(ctx, buf, rnd.Int64N(1<<18)*4096, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("capture", func(b *testing.B) {
		m := r.open(b, Options{JournalLimit: 64 << 30})
		defer m.Close(ctx)
		d := m.Disks()[0]
		rnd := rand.New(rand.NewPCG(1, 1))
		b.SetBytes(4096)
		for b.Loop() {
			if err := d.WriteAt(ctx, buf, rnd.Int64N(1<<18)*4096, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
