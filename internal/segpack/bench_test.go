package segpack

import (
	"math/rand/v2"
	"testing"

	"github.com/standby-dr/standby/internal/journal"
)

// benchStream is six 8 MiB segments of 64 KiB writes: more than the default
// window, so that packing them round and round is the steady state of a
// stream, blocks entering and being evicted.
func benchStream(b *testing.B, kind string) [][]byte {
	b.Helper()
	const segSize, writeSize = 8 << 20, 64 << 10
	rng := rand.New(rand.NewPCG(21, 22))
	cc := rand.NewChaCha8([32]byte{1})
	pool := make([]byte, 1<<20)
	cc.Read(pool)
	var s stream
	segs := make([][]byte, 6)
	for i := range segs {
		recs := make([]journal.Record, segSize/writeSize)
		for j := range recs {
			data := make([]byte, writeSize)
			switch kind {
			case "random":
				cc.Read(data)
			case "text":
				data = text(rng, writeSize)
			case "zeros":
			case "dedup": // blocks drawn from 1 MiB of random blocks
				for k := 0; k < writeSize; k += 4096 {
					n := rng.IntN(len(pool)/4096) * 4096
					copy(data[k:], pool[n:n+4096])
				}
			}
			recs[j] = write(uint64(j)*writeSize, data)
		}
		segs[i] = s.mustSegment(b, recs...)
	}
	return segs
}

var benchKinds = []string{"random", "text", "zeros", "dedup"}

var benchLevels = []struct {
	name  string
	level Level
}{{"fastest", LevelFastest}, {"none", LevelNone}}

func BenchmarkPack(b *testing.B) {
	for _, kind := range benchKinds {
		segs := benchStream(b, kind)
		for _, lv := range benchLevels {
			b.Run(kind+"/"+lv.name, func(b *testing.B) {
				p := mustPacker(b, Options{Level: lv.level})
				b.SetBytes(int64(len(segs[0])))
				b.ReportAllocs()
				var dst []byte
				var in, out int64
				i := 0
				for b.Loop() {
					var st Stats
					var err error
					dst, st, err = p.Pack(dst[:0], segs[i%len(segs)])
					if err != nil {
						b.Fatal(err)
					}
					in, out = in+st.In, out+st.Out
					i++
				}
				b.ReportMetric(float64(out)/float64(in), "out/in")
			})
		}
	}
}

func BenchmarkUnpack(b *testing.B) {
	for _, kind := range benchKinds {
		segs := benchStream(b, kind)
		for _, lv := range benchLevels {
			b.Run(kind+"/"+lv.name, func(b *testing.B) {
				o := Options{Level: lv.level}
				p, u := mustPacker(b, o), mustUnpacker(b, o)
				packed := make([][]byte, len(segs))
				for i, seg := range segs {
					packed[i], _ = mustPack(b, p, seg)
				}
				b.SetBytes(int64(len(segs[0])))
				b.ReportAllocs()
				var dst []byte
				var err error
				i := 0
				for b.Loop() {
					if i%len(packed) == 0 {
						u.Reset() // the packed stream starts from an empty window
					}
					if dst, err = u.Unpack(dst[:0], packed[i%len(packed)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
