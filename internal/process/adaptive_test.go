package process

import "testing"

func TestAdaptiveCompression(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pack, wait float64
		backlog    bool
		want       bool
	}{
		{"slow WAN: waits dominate", 0.05, 2.0, true, true},
		{"fast link: the compressor is the bottleneck", 0.05, 0.001, true, false},
		{"no backlog: compress, it only saves bytes", 0.05, 0.001, false, true},
	} {
		a := adaptive{n: 1}
		a.packed(tc.pack)
		a.waited(tc.wait)
		if got := a.compress(tc.backlog); got != tc.want {
			t.Errorf("%s: compress() = %v, want %v", tc.name, got, tc.want)
		}
	}
	// It measures the compressor again now and then, whatever it decided.
	a := adaptive{pack: 0.05, wait: 0.001}
	probes := 0
	for range 64 {
		if a.compress(true) {
			probes++
		}
	}
	if probes != 64/probeEvery {
		t.Errorf("%d probes in 64 segments, want %d", probes, 64/probeEvery)
	}
}
