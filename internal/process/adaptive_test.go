package process

import "testing"

func TestAdaptiveCompression(t *testing.T) {
	const seg = 16 << 20
	for _, tc := range []struct {
		name       string
		zstd, link float64 // bytes per second
		ratio      float64
		backlog    bool
		want       bool
	}{
		{"slow WAN, compressible", 300e6, 10e6, 0.3, true, true},
		{"fast link: the compressor is the bottleneck", 300e6, 3e9, 0.3, true, false},
		{"no backlog: compress, it only saves bytes", 300e6, 3e9, 0.3, false, true},
		{"link as fast as zstd, very compressible", 300e6, 300e6, 0.1, true, false},
		{"link at a third of zstd, compressible", 300e6, 100e6, 0.3, true, true},
		{"incompressible", 300e6, 10e6, 1.0, true, false},
	} {
		a := adaptive{n: 1, warm: true}
		a.packed(seg, int64(tc.ratio*seg), seg/tc.zstd)
		a.downstream(seg, seg/tc.link)
		if got := a.compress(tc.backlog); got != tc.want {
			t.Errorf("%s: compress() = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The decision does not flip with the mode: the wait is per byte sent.
	a := adaptive{n: 1, warm: true}
	a.packed(seg, seg/4, seg/300e6)
	for i := range 40 {
		c := a.compress(true)
		out := int64(seg)
		if c {
			out = seg / 4
		}
		a.downstream(int(out), float64(out)/20e6) // a 20 MB/s link
		if !c && a.n%probeEvery != 0 {
			t.Fatalf("segment %d: stopped compressing on a 20 MB/s link", i)
		}
	}
	// It measures the compressor again now and then, whatever it decided.
	b := adaptive{pack: 1 / 300e6, wire: 1 / 3e9, ratio: 0.3}
	probes := 0
	for range 64 {
		if b.compress(true) {
			probes++
		}
	}
	if probes != 64/probeEvery {
		t.Errorf("%d probes in 64 segments, want %d", probes, 64/probeEvery)
	}
}

// A busy machine does not turn compression off on a slow link: the first
// segment packed (encoder tables, buffers) is not measured, and a small
// segment packed during a stall weighs by its bytes.
func TestAdaptiveCompressionIgnoresStalls(t *testing.T) {
	const seg = 512 << 10
	a := adaptive{}
	a.compress(true)
	a.packed(8<<10, 7<<10, 0.030) // cold: 30 ms for 8 KiB
	a.downstream(7<<10, 0.002)
	for i := range 12 {
		c := a.compress(true)
		if i > 0 && !c && a.n%probeEvery != 0 {
			t.Fatalf("segment %d: plain on a 1 MB/s link (pack %.0f ns/B, wire %.0f ns/B, ratio %.2f)", i, a.pack*1e9, a.wire*1e9, a.ratio)
		}
		secs := seg / 300e6
		if i == 3 {
			a.packed(16<<10, 2<<10, 0.5) // a 500 ms stall on a small segment
		}
		a.packed(seg, seg/8, secs)
		a.downstream(seg/8, float64(seg/8)/1e6)
	}
}
