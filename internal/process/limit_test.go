package process

import (
	"context"
	"testing"
	"time"
)

func TestLimiterHoldsTheRate(t *testing.T) {
	l := newLimiter(8 << 20) // 8 MiB/s, burst 2 MiB
	start := time.Now()
	pings := 0
	for range 8 {
		if err := l.wait(context.Background(), 1<<20, func() error { pings++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// 8 MiB with a 2 MiB burst, the last frame's debt paid by the next
	// one: 5 MiB wait for tokens, 0.625 s. (A lower bound only: a slow
	// machine makes it longer, never shorter.)
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("8 MiB passed an 8 MiB/s limit with a 2 MiB burst in %s, want at least 0.6s", d)
	}
	var none *limiter
	if err := none.wait(context.Background(), 1<<30, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	slow := newLimiter(1)
	slow.wait(context.Background(), 1<<20, nil) // borrows beyond the burst
	if err := slow.wait(ctx, 1, nil); err == nil {
		t.Fatal("wait with a cancelled context and no tokens returned nil")
	}
}
