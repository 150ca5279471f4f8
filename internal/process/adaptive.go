package process

// adaptive decides, segment by segment, whether zstd pays: compressing is
// worth it only while the link to the master target is slower than the
// compressor (a WAN); on a fast link it would only slow forwarding down.
// It keeps moving averages of both rates and measures the compressor again
// every probeEvery segments.
type adaptive struct {
	link  float64 // wire bytes per second the link took (sends, including waits)
	zstd  float64 // segment bytes per second the compressor packed
	ratio float64 // packed/segment bytes when compressed
	n     int
}

const probeEvery = 16

// compress says whether to compress the next segment.
func (a *adaptive) compress() bool {
	a.n++
	if a.link == 0 || a.zstd == 0 || a.n%probeEvery == 0 {
		return true
	}
	// Seconds per segment byte: compressing is bound by the slower of the
	// compressor and the link carrying the smaller output.
	with := max(1/a.zstd, a.ratio/a.link)
	without := 1 / a.link
	return with < without
}

func ewma(old, v float64) float64 {
	if old == 0 {
		return v
	}
	return 0.7*old + 0.3*v
}

// packed records a compressed segment: in bytes became out in secs.
func (a *adaptive) packed(in, out int64, secs float64) {
	if secs > 0 && in > 0 {
		a.zstd = ewma(a.zstd, float64(in)/secs)
		a.ratio = ewma(a.ratio, float64(out)/float64(in))
	}
}

// sent records a send of n wire bytes that took secs.
func (a *adaptive) sent(n int64, secs float64) {
	if secs > 0 && n > 0 {
		a.link = ewma(a.link, float64(n)/secs)
	}
}
