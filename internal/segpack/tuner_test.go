package segpack

import (
	"testing"
	"time"
)

// TestCopyTuner: the tuner measures a compressed window, then a plain one,
// keeps plain only when it is clearly faster, and measures again later.
func TestCopyTuner(t *testing.T) {
	run := func(compressedPause, plainPause time.Duration) (decided bool) {
		clock := time.Unix(0, 0)
		tu := CopyTuner{now: func() time.Time { return clock }}
		const window = tuneWindow >> 20 // frames of 1 MiB
		for i := range 2 * window {
			c := tu.Compress()
			if want := i < window; c != want {
				t.Fatalf("frame %d: compress %v, want %v (compressed window first)", i, c, want)
			}
			if c {
				clock = clock.Add(compressedPause)
			} else {
				clock = clock.Add(plainPause)
			}
			tu.Sent(c, 1<<20)
		}
		if !tu.decided {
			t.Fatal("no decision after both windows")
		}
		d := tu.Compress()
		for i := range tuneEvery>>20 - 1 {
			if tu.Compress() != d {
				t.Fatalf("decision changed after %d frames", i)
			}
			tu.Sent(d, 1<<20)
		}
		tu.Sent(d, 1<<20)
		if tu.decided {
			t.Fatalf("still decided after %d bytes: want a new measurement", tuneEvery)
		}
		return d
	}
	if run(4*time.Millisecond, time.Millisecond) {
		t.Error("plain much faster: the tuner compresses")
	}
	if !run(time.Millisecond, 900*time.Microsecond) {
		t.Error("plain a little faster: the tuner does not compress (it should, to save WAN bytes)")
	}
	if !run(time.Millisecond, 4*time.Millisecond) {
		t.Error("compressed faster: the tuner does not compress")
	}
}
