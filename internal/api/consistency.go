package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/standby-dr/standby/internal/api/componentpb"
	"github.com/standby-dr/standby/internal/control"
)

// Multi-machine consistent points (docs/plans.md): the machines of a
// plan bookmark together at a barrier, so that one label names a
// consistent cut across all of them. A round (Barrier):
//
//  1. hold: every agent's desired state carries the barrier; each holds
//     its machine's writes (capture.Machine.Hold: they wait, they do not
//     fail) and reports held;
//  2. once all hold, bookmark: each takes a bookmark labelled with the
//     barrier's id (consistent-<plan>-<time>), releases its writes and
//     reports the bookmark's journal sequence;
//  3. the barrier is cleared.
//
// While every machine holds, no write is acknowledged anywhere, so a
// write acknowledged before another one was issued (on any machine) is
// in its machine's bookmark whenever the later one is in its own: the
// points share a causal cut. A round that does not gather every hold in
// time releases without bookmarks; an agent releases by itself after
// HoldMax. The rounds are the server's (internal/server/consistency.go);
// the barrier lives in memory only: a restarted server starts new ones.

// ConsistentLabelPrefix starts the label of a multi-machine consistent
// bookmark: consistent-<plan>-<unix ms>.
const ConsistentLabelPrefix = "consistent-"

// HoldMax is the longest an agent holds writes for a barrier.
const HoldMax = 10 * time.Second

// Barrier phases, as the agents' desired states carry them.
const (
	BarrierHold     = "hold"
	BarrierBookmark = "bookmark"
)

// DesiredBarrier is a barrier an agent takes part in.
type DesiredBarrier struct {
	ID    string `json:"id"` // also the bookmark's label
	Phase string `json:"phase"`
}

// barrierSet is the server's barriers in progress, by machine id, and
// what the agents reported of them.
type barrierSet struct {
	mu      sync.Mutex
	want    map[string]DesiredBarrier
	reports map[string]control.BarrierReport
}

func (b *barrierSet) desired(machine string) *DesiredBarrier {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.want[machine]; ok {
		return &d
	}
	return nil
}

// report keeps an agent's report of the barrier it was asked for.
func (b *barrierSet) report(machine string, r *control.BarrierReport) {
	if r == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.want[machine]; ok && d.ID == r.ID {
		if b.reports == nil {
			b.reports = map[string]control.BarrierReport{}
		}
		b.reports[machine] = *r
	}
}

func (b *barrierSet) set(machines []string, d *DesiredBarrier) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.want == nil {
		b.want = map[string]DesiredBarrier{}
	}
	for _, m := range machines {
		if d == nil {
			delete(b.want, m)
			delete(b.reports, m)
		} else {
			b.want[m] = *d
		}
	}
}

// gathered says whether every machine reported ok for barrier id.
func (b *barrierSet) gathered(machines []string, id string, ok func(control.BarrierReport) bool) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range machines {
		r, have := b.reports[m]
		if have && r.ID == id && r.Error != "" {
			return false, fmt.Errorf("machine %s: %s", m, r.Error)
		}
		if !have || r.ID != id || !ok(r) {
			return false, nil
		}
	}
	return true, nil
}

// ErrBarrier is wrapped by the errors of a barrier round that made no
// consistent point.
var ErrBarrier = errors.New("no multi-machine consistent point")

// Barrier runs one round for the machines (ids), labelled label, and
// returns the bookmarks' journal sequences by machine id. timeout bounds
// each phase.
func (s *Server) Barrier(ctx context.Context, machines []string, label string, timeout time.Duration) (map[string]uint64, error) {
	defer func() {
		s.barriers.set(machines, nil)
		s.desired.notify()
	}()
	wait := func(phase string, ok func(control.BarrierReport) bool) error {
		deadline := time.Now().Add(timeout)
		for {
			changed := s.desired.wait()
			done, err := s.barriers.gathered(machines, label, ok)
			if err != nil || done {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%w: not every agent reported %s within %s", ErrBarrier, phase, timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	s.barriers.set(machines, &DesiredBarrier{ID: label, Phase: BarrierHold})
	s.desired.notify()
	if err := wait("held", func(r control.BarrierReport) bool { return r.Held }); err != nil {
		return nil, fmt.Errorf("%w: hold: %w", ErrBarrier, err)
	}
	s.barriers.set(machines, &DesiredBarrier{ID: label, Phase: BarrierBookmark})
	s.desired.notify()
	if err := wait("bookmarked", func(r control.BarrierReport) bool { return r.Done }); err != nil {
		return nil, fmt.Errorf("%w: bookmark: %w", ErrBarrier, err)
	}
	s.barriers.mu.Lock()
	defer s.barriers.mu.Unlock()
	seqs := map[string]uint64{}
	for _, m := range machines {
		seqs[m] = s.barriers.reports[m].Seq
	}
	return seqs, nil
}

func barrierToPB(d *DesiredBarrier) *pb.DesiredBarrier {
	if d == nil {
		return nil
	}
	return &pb.DesiredBarrier{Id: d.ID, Phase: d.Phase}
}

func barrierFromPB(d *pb.DesiredBarrier) *DesiredBarrier {
	if d == nil {
		return nil
	}
	return &DesiredBarrier{ID: d.GetId(), Phase: d.GetPhase()}
}
