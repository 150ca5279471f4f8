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
		a := adaptive{n: 1}
		a.packed(seg, int64(tc.ratio*seg), seg/tc.zstd)
		a.downstream(seg, seg/tc.link)
		if got := a.compress(tc.backlog); got != tc.want {
			t.Errorf("%s: compress() = %v, want %v", tc.name, got, tc.want)
		}
	}
	// The decision does not flip with the mode: the wait is per byte sent.
	a := adaptive{n: 1}
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
