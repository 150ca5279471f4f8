package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/retention"
)

// Prune applies the retention policy to the recovery points and releases
// the history that only removed points needed:
//
//  1. retention.Apply decides, with points held by a View in use; the
//     removed points leave state.json, which records the base roll to do:
//     to the oldest point left;
//  2. the stored records from the base up to that point are applied to the
//     base images, which are fsynced ("rolling the base");
//  3. state.json records the new base and drops the segments entirely at
//     or before it from the log;
//  4. their files are deleted.
//
// A crash (or a cancelled ctx) between the steps leaves a roll that the
// next Prune or Open finishes; replaying the records from the recorded base
// is idempotent. The base never passes a kept point, so a View stays exact.
// With no points, nothing is pruned. The decisions are returned for the
// operator, with their reasons.
func (r *Replica) Prune(ctx context.Context) (keep, remove []retention.Decision, err error) {
	if err := r.o.Retention.Validate(); err != nil {
		return nil, nil, fmt.Errorf("replica prune: %w", err)
	}
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if err := r.finishRoll(ctx); err != nil { // left by an interrupted Prune
		return nil, nil, fmt.Errorf("replica prune: %w", err)
	}
	if keep, remove, err = r.decide(ctx); err != nil {
		return nil, nil, fmt.Errorf("replica prune: %w", err)
	}
	if err := r.finishRoll(ctx); err != nil {
		return nil, nil, fmt.Errorf("replica prune: %w", err)
	}
	if err := r.sweep(); err != nil {
		return nil, nil, fmt.Errorf("replica prune: %w", err)
	}
	return keep, remove, nil
}

// sweep deletes segment files that are no longer in the log, which an
// earlier Prune released but failed to delete.
func (r *Replica) sweep() error {
	r.filesMu.Lock()
	defer r.filesMu.Unlock()
	st, err := r.snapshot(false)
	if err != nil {
		return err
	}
	idxs, err := r.segmentFiles(st)
	if err != nil {
		return err
	}
	return r.removeStale(st, idxs)
}

// decide runs the policy and records its outcome: the removed points are
// gone and the base roll is due. It holds mu from the decision to the new
// state, so that OpenPoint cannot pin a point being removed.
func (r *Replica) decide(ctx context.Context) (keep, remove []retention.Decision, err error) {
	return r.decideWith(ctx, func(pts []retention.Point) (keep, remove []retention.Decision, err error) {
		keep, remove = retention.Apply(pts, r.o.Retention, r.o.now())
		return keep, remove, nil
	})
}

// decideWith is decide with the decisions made by choose (KeepOnly's).
func (r *Replica) decideWith(ctx context.Context, choose func([]retention.Point) (keep, remove []retention.Decision, err error)) (keep, remove []retention.Decision, err error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return nil, nil, ErrClosed
	case r.broken != nil:
		return nil, nil, fmt.Errorf("%w: %w", ErrBroken, r.broken)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	cur := r.st
	pts := make([]retention.Point, len(cur.Points))
	for i, p := range cur.Points {
		pts[i] = retention.Point{Seq: p.ID, Time: p.Time, AppConsistent: p.AppConsistent, Tags: p.Tags, InUse: r.pins[p.ID] > 0, Label: p.Label}
	}
	if keep, remove, err = choose(pts); err != nil {
		return nil, nil, err
	}
	gone := make(map[uint64]bool, len(remove))
	for _, d := range remove {
		gone[d.Seq] = true
	}
	st := cur.clone()
	kept := st.Points[:0]
	for _, p := range st.Points {
		if !gone[p.ID] {
			kept = append(kept, p)
		}
	}
	st.Points = kept
	if len(st.Points) > 0 && st.Base.before(st.Points[0].at()) {
		to := st.Points[0].at()
		st.Roll = &to
	}
	if len(remove) == 0 && st.Roll == nil {
		return keep, remove, nil
	}
	if err := saveState(r.dir, st); err != nil {
		return nil, nil, err
	}
	r.st = st
	for _, d := range remove {
		r.log.Info("replica: recovery point removed", "machine", st.MachineID, "point", d.Seq, "time", d.Time, "reasons", d.Reasons)
	}
	return keep, remove, failpoint("prune-after-points")
}

// finishRoll rolls the base to the position state.json's roll names, if
// any (steps 2 to 4 of Prune). Called with pmu held, or from Open.
func (r *Replica) finishRoll(ctx context.Context) error {
	cur, err := r.snapshot(true)
	if err != nil || cur.Roll == nil {
		return err
	}
	to := *cur.Roll
	if err := r.rollBase(ctx, cur, to); err != nil {
		return fmt.Errorf("roll base to log %d seq %d: %w", to.Log, to.Seq, err)
	}
	if err := failpoint("prune-after-base"); err != nil {
		return err
	}
	dropped, err := r.recordBase(to)
	if err != nil {
		return err
	}
	if err := failpoint("prune-after-state"); err != nil {
		return err
	}
	return r.removeSegments(dropped)
}

// rollBase applies the stored records after the base up to to onto the
// base images and fsyncs them. A stop half way leaves the base between the
// two positions, which only replaying from the recorded base repairs: the
// records in between are all applied again, in order.
//
// On a lazy base every block those records write was seeded before they
// reached current, so the roll only writes seeded blocks; checkSeeded
// asserts it rather than let a roll write a block whose content at the
// base the current image holds.
func (r *Replica) rollBase(ctx context.Context, st *state, to logPos) error {
	var check func(*journal.Record) error
	if st.BaseGen > 0 {
		check = r.checkSeeded
	}
	for _, e := range st.Log {
		lo, hi := e.span(st.Base, to)
		if lo == hi {
			continue
		}
		path := filepath.Join(r.dir, segmentsDir, segName(e.Index))
		if err := applyFile(ctx, path, r.base, lo, hi, check); err != nil {
			return err
		}
	}
	return syncImages(r.base)
}

// recordBase makes to the base in state.json, drops the segments entirely
// at or before it from the log, and returns them.
func (r *Replica) recordBase(to logPos) ([]logEntry, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.snapshot(false) // Apply may have run meanwhile
	if err != nil {
		return nil, err
	}
	st := cur.clone()
	st.Base, st.Roll = to, nil
	st.Log = st.Log[:0]
	var dropped []logEntry
	for _, e := range cur.Log {
		if to.before(e.end()) {
			st.Log = append(st.Log, e)
		} else {
			dropped = append(dropped, e)
		}
	}
	if err := saveState(r.dir, st); err != nil {
		return nil, r.fail(err)
	}
	r.commit(st)
	r.log.Info("replica: base rolled", "machine", st.MachineID, "log", to.Log, "seq", to.Seq, "segments_released", len(dropped))
	return dropped, nil
}

// removeSegments deletes released segment files. OpenPoint opens the files
// it needs under filesMu's read lock, so a file it chose is open before it
// is deleted here.
func (r *Replica) removeSegments(entries []logEntry) error {
	if len(entries) == 0 {
		return nil
	}
	r.filesMu.Lock()
	defer r.filesMu.Unlock()
	dir := filepath.Join(r.dir, segmentsDir)
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, segName(e.Index))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return fsutil.SyncDir(dir)
}
