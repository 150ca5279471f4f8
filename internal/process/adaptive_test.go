package process

import "testing"

func TestAdaptiveCompression(t *testing.T) {
	for _, tc := range []struct {
		name       string
		link, zstd float64
		ratio      float64
		want       bool
	}{
		{"slow WAN, compressible", 10e6, 300e6, 0.3, true},
		{"fast link, compressor slower", 3e9, 300e6, 0.3, false},
		{"incompressible", 10e6, 300e6, 1.0, false},
		{"link a little slower than zstd", 200e6, 300e6, 0.5, true},
	} {
		a := adaptive{}
		a.packed(1e6, int64(tc.ratio*1e6), 1e6/tc.zstd)
		a.sent(1e6, 1e6/tc.link)
		a.n = 1
		if got := a.compress(); got != tc.want {
			t.Errorf("%s: compress() = %v, want %v", tc.name, got, tc.want)
		}
	}
	// It measures the compressor again now and then, whatever it decided.
	a := adaptive{link: 3e9, zstd: 300e6, ratio: 0.3}
	probes := 0
	for range 64 {
		if a.compress() {
			probes++
		}
	}
	if probes != 64/probeEvery {
		t.Errorf("%d probes in 64 segments, want %d", probes, 64/probeEvery)
	}
}
