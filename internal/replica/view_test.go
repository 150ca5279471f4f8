package replica

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/retention"
)

// TestConcurrent runs Apply, Prune, views of points, live views and
// Status at once (run it with -race): every view of a point reads exactly
// its point, and a live view reads each disk as it was after some whole
// segment.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	m := newModel(t, 51, testDisks)
	m.step = time.Minute
	const nseg = 40
	segs := make([][]byte, nseg)
	boundaries := make([]map[[32]byte]bool, len(testDisks)) // per disk: hashes of its content after each segment
	for i := range boundaries {
		boundaries[i] = map[[32]byte]bool{sha256.Sum256(m.live[i]): true}
	}
	for i := range segs {
		segs[i] = m.next(10)
		for d := range m.live {
			boundaries[d][sha256.Sum256(m.live[d])] = true
		}
	}
	o := testOptions(mustCreate(t, testDisks, nil))
	o.Retention = retention.Policy{KeepAll: 15 * time.Minute}
	var clock sync.Mutex
	now := testStart
	o.Now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	r := mustOpen(t, o)

	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	wg.Go(func() {
		defer close(done)
		for i, seg := range segs {
			if _, err := r.Apply(ctx, seg); err != nil {
				errs <- fmt.Errorf("apply %d: %w", i, err)
				return
			}
			clock.Lock()
			now = now.Add(10 * time.Minute)
			clock.Unlock()
		}
	})
	loop := loopUntil(&wg, done, errs)
	loop(func() error { _, _, err := r.Prune(ctx); return err })
	loop(func() error { return checkSomePoint(ctx, r, m) })
	loop(func() error { return checkLive(ctx, r, boundaries) })
	loop(func() error { _ = r.Status(); return nil })
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	m.g().sent = len(m.g().recs)
	for _, p := range m.wantPoints() {
		m.pruned[p] = true
	}
	for _, p := range r.Points() {
		delete(m.pruned, p.Time.UnixNano())
	}
	mustCheck(t, r, m)
}

// checkSomePoint reads the newest and the oldest point through views.
func checkSomePoint(ctx context.Context, r *Replica, m *model) error {
	pts := r.Points()
	if len(pts) == 0 {
		return nil
	}
	for _, p := range []Point{pts[0], pts[len(pts)-1]} {
		v, err := r.OpenPoint(ctx, p.ID)
		if errors.Is(err, ErrNotFound) {
			continue // pruned meanwhile
		} else if err != nil {
			return err
		}
		want := m.marks[p.Time.UnixNano()].disks
		for i, d := range v.Disks() {
			b := make([]byte, d.Size)
			if _, err := v.DiskReaderAt(i).ReadAt(b, 0); err != nil && err != io.EOF {
				v.Close()
				return err
			}
			if sha256.Sum256(b) != sha256.Sum256(want[i]) {
				v.Close()
				return fmt.Errorf("point %d disk %d differs from its bookmark", p.ID, i)
			}
		}
		v.Close()
	}
	return nil
}

// checkLive reads each disk through a live view and checks it is the
// content after some segment.
func checkLive(ctx context.Context, r *Replica, boundaries []map[[32]byte]bool) error {
	v, err := r.OpenPoint(ctx, 0)
	if errors.Is(err, ErrNotConsistent) {
		return nil
	} else if err != nil {
		return err
	}
	defer v.Close()
	for i, d := range v.Disks() {
		b := make([]byte, d.Size)
		if _, err := v.DiskReaderAt(i).ReadAt(b, 0); err != nil && err != io.EOF {
			return err
		}
		if !boundaries[i][sha256.Sum256(b)] {
			return fmt.Errorf("live disk %d is not the content after any whole segment", i)
		}
	}
	return nil
}
