package process

// adaptive decides, segment by segment, whether zstd pays. Compressing
// costs the process server's CPU and saves WAN bytes; it slows forwarding
// down only when the compressor itself is the bottleneck: there is a
// backlog, and the forwarder spends longer compressing a segment than
// waiting for the link and the master target to take one. Then it sends
// plain op streams (zero elimination and dedup still apply), measuring the
// compressor again every probeEvery segments.
type adaptive struct {
	pack float64 // seconds to pack a segment with zstd (moving average)
	wait float64 // seconds spent waiting for the link and target per segment
	n    int
}

const probeEvery = 16

// compress says whether to compress the next segment; backlog is whether
// more segments wait in the cache behind it.
func (a *adaptive) compress(backlog bool) bool {
	a.n++
	if !backlog || a.pack == 0 || a.n%probeEvery == 0 {
		return true
	}
	return a.wait >= a.pack
}

func ewma(old, v float64) float64 {
	if old == 0 {
		return v
	}
	return 0.7*old + 0.3*v
}

// packed records how long compressing a segment took.
func (a *adaptive) packed(secs float64) { a.pack = ewma(a.pack, secs) }

// waited records how long the forwarder waited, for one segment, for room
// in its window and for the link to take the bytes (bandwidth limit
// included).
func (a *adaptive) waited(secs float64) { a.wait = ewma(a.wait, secs) }
