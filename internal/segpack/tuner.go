package segpack

import "time"

// CopyTuner decides whether Copy frames are compressed (`compression:
// auto`) by measuring instead of modelling: a copy is one long backlog,
// and whether zstd speeds it up depends on where its bottleneck is (a slow
// link: it does; the master target's disk or the sender's CPU: it does
// not). It alternates windows of frames sent compressed and plain, and
// keeps the mode that moved more disk bytes per second, preferring
// compression unless plain is clearly faster (it saves WAN bytes); it
// measures again every tuneEvery frames.
type CopyTuner struct {
	since   int64            // bytes since the last decision
	decided bool             // mode holds until since reaches tuneEvery
	mode    bool             // the decision: compress
	win     [2]tuneWin       // [0] plain, [1] compressed
	now     func() time.Time // nil: time.Now (tests set a clock)
}

type tuneWin struct {
	n     int
	bytes int64
	first int64 // the first frame's bytes (sent before the window's clock starts)
	start time.Time
	rate  float64 // bytes/s, once the window is full
}

// A window is tuneWindow bytes of disk and at least tuneFrames frames;
// frames are of any size (1 MiB from the process server, 4 MiB from an
// agent's tunnel), so what is measured is bytes.
const (
	tuneWindow = 16 << 20  // bytes per measuring window
	tuneFrames = 4         // and at least this many frames
	tuneEvery  = 512 << 20 // bytes between measurements
	tuneMargin = 1.2       // plain must be this much faster to win
)

func (w *tuneWin) full() bool { return w.n >= tuneFrames && w.bytes >= tuneWindow }

// Compress says whether to compress the next frame.
func (t *CopyTuner) Compress() bool {
	if t.decided {
		return t.mode
	}
	return !t.win[1].full() // compressed window first, then plain
}

// Sent records a frame of n disk bytes sent, compressed or not.
func (t *CopyTuner) Sent(compressed bool, n int64) {
	now := time.Now()
	if t.now != nil {
		now = t.now()
	}
	if t.decided {
		if t.since += n; t.since >= tuneEvery {
			*t = CopyTuner{now: t.now}
		}
		return
	}
	w := &t.win[0]
	if compressed {
		w = &t.win[1]
	}
	if w.n == 0 {
		w.start, w.first = now, n
	}
	w.n++
	w.bytes += n
	if !w.full() {
		return
	}
	// The window's rate: its bytes after the first frame over the time
	// from the first frame's send to the last's.
	if secs := now.Sub(w.start).Seconds(); secs > 0 {
		w.rate = float64(w.bytes-w.first) / secs
	}
	if t.win[0].full() && t.win[1].full() {
		t.decided, t.since = true, 0
		t.mode = t.win[0].rate < tuneMargin*t.win[1].rate
	}
}
