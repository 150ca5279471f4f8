package process

import (
	"context"
	"sync"
	"time"
)

// limiter is a token bucket in bytes: the bandwidth limit of the site link
// to the master target, shared by every machine's forwarder.
type limiter struct {
	mu     sync.Mutex
	rate   float64 // bytes per second; 0 is unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newLimiter(bytesPerSec int64) *limiter {
	r := float64(bytesPerSec)
	return &limiter{rate: r, burst: max(r/4, 256<<10), tokens: max(r/4, 256<<10), last: time.Now()}
}

// wait blocks until n bytes may be sent. A frame larger than the burst
// borrows: the debt is paid by waiting before the next one. tick, when
// not nil, runs every 2 s of waiting (to keep the stream alive).
func (l *limiter) wait(ctx context.Context, n int, tick func() error) error {
	if l == nil || l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	var d time.Duration
	if l.tokens < 0 {
		d = time.Duration(-l.tokens / l.rate * float64(time.Second))
	}
	l.tokens -= float64(n)
	l.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	ping := time.NewTicker(2 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case <-ping.C:
			if tick != nil {
				if err := tick(); err != nil {
					return err
				}
			}
		}
	}
}
