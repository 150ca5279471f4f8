package process

import "sync"

// adaptive decides, segment by segment, whether zstd pays. It is used by a
// forwarder's session loop and its ack reader, so it locks. Compressing
// costs the process server's CPU and saves WAN bytes; it slows forwarding
// down only when the compressor is the bottleneck: with a backlog, the
// forwarder packs and then waits for the link and the master target, one
// segment after another, so compressing a segment of n bytes is worth it
// when packing it takes less time than waiting for the bytes it saves:
//
//	pack·n < wire·n·(1 − ratio)
//
// with pack the seconds per input byte zstd takes, wire the seconds per
// byte sent the forwarder waits (window and link, bandwidth limit
// included), and ratio the packed/input bytes. All three are ratios of
// decaying sums, so a segment weighs by its bytes: one small segment
// packed during a stall (a busy machine, a garbage collection) does not
// set the estimate. The first segment packed is not measured: it pays
// for the encoder's tables and buffers. The compressor is measured again
// every probeEvery segments. Without a backlog it compresses: it only
// saves WAN bytes then.
type adaptive struct {
	mu    sync.Mutex
	pack  float64 // seconds per input byte to pack with zstd
	wire  float64 // seconds waited per byte sent
	ratio float64 // packed/input bytes when compressed
	n     int

	// The compressor's speed and ratio are ratios of decaying sums over
	// compressed segments; warm is set once the first one is done.
	packSecs, packIn, packOut float64
	warm                      bool

	// The downstream's rate is a ratio of decaying sums over acks.
	waitSecs, waitBytes float64
}

const probeEvery = 16

// compress says whether to compress the next segment; backlog is whether
// more segments wait in the cache behind it.
func (a *adaptive) compress(backlog bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	if !backlog || a.pack == 0 || a.wire == 0 || a.n%probeEvery == 0 {
		return true
	}
	return a.pack < a.wire*(1-a.ratio)
}

// packed records a compressed segment: in bytes became out in secs.
func (a *adaptive) packed(in, out int64, secs float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if in <= 0 || secs <= 0 {
		return
	}
	if !a.warm {
		a.warm = true
		return
	}
	a.packSecs = 0.8*a.packSecs + secs
	a.packIn = 0.8*a.packIn + float64(in)
	a.packOut = 0.8*a.packOut + float64(out)
	a.pack, a.ratio = a.packSecs/a.packIn, a.packOut/a.packIn
}

// limited records time spent waiting for the bandwidth limit: part of the
// link's time, counted before the segment is sent.
func (a *adaptive) limited(secs float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.waitSecs += max(secs, 0)
}

// downstream records that the link and the master target took secs to
// acknowledge n wire bytes.
func (a *adaptive) downstream(n int, secs float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n <= 0 {
		return
	}
	a.waitSecs = 0.8*a.waitSecs + max(secs, 0)
	a.waitBytes = 0.8*a.waitBytes + float64(n)
	a.wire = a.waitSecs / a.waitBytes
}
