package replica

import (
	"context"
	"fmt"
	"slices"

	"github.com/standby-dr/standby/internal/retention"
)

// Fence raises the replica's epoch to epoch, durably, so that every later
// segment, rebase or copy of an older epoch is refused with ErrFenced: a
// failover fences the old primary before it exports a point, so nothing
// the old primary still sends can change what the failed-over machine
// runs from (DESIGN §4). Fencing to the current epoch or lower changes
// nothing and is not an error (a retried failover asks again).
func (r *Replica) Fence(ctx context.Context, epoch uint64) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.snapshot(true)
	if err != nil {
		return fmt.Errorf("replica fence: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replica fence: %w", err)
	}
	if epoch <= cur.Epoch {
		return nil
	}
	st := cur.clone()
	st.Epoch = epoch
	// A copy under way belongs to the old epoch: it ends here, what it
	// wrote stays in current and points stay as they were.
	st.Copying = false
	if err := saveState(r.dir, st); err != nil {
		return fmt.Errorf("replica fence: raise epoch to %d: %w", epoch, err)
	}
	r.commit(st)
	r.log.Info("replica: fenced", "machine", st.MachineID, "epoch", epoch, "from_epoch", cur.Epoch)
	return nil
}

// KeepOnly makes point id the only recovery point (a failover's commit):
// every other point is removed, except those a View holds (in use by an
// export), and the history before id is released as Prune releases it.
// It returns the decisions, as Prune does; ErrNotFound if id is not held.
func (r *Replica) KeepOnly(ctx context.Context, id uint64) (keep, remove []retention.Decision, err error) {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	if err := r.finishRoll(ctx); err != nil {
		return nil, nil, fmt.Errorf("replica keep only point %d: %w", id, err)
	}
	choose := func(pts []retention.Point) (keep, remove []retention.Decision, err error) {
		if !slices.ContainsFunc(pts, func(p retention.Point) bool { return p.Seq == id }) {
			return nil, nil, fmt.Errorf("point %d: %w", id, ErrNotFound)
		}
		for _, p := range pts {
			switch {
			case p.Seq == id:
				keep = append(keep, retention.Decision{Point: p, Reasons: []string{"the committed failover point"}})
			case p.InUse:
				keep = append(keep, retention.Decision{Point: p, Reasons: []string{"in use by an export"}})
			default:
				remove = append(remove, retention.Decision{Point: p, Reasons: []string{fmt.Sprintf("not the committed failover point %d", id)}})
			}
		}
		return keep, remove, nil
	}
	if keep, remove, err = r.decideWith(ctx, choose); err != nil {
		return nil, nil, fmt.Errorf("replica keep only point %d: %w", id, err)
	}
	if err := r.finishRoll(ctx); err != nil {
		return nil, nil, fmt.Errorf("replica keep only point %d: %w", id, err)
	}
	if err := r.sweep(); err != nil {
		return nil, nil, fmt.Errorf("replica keep only point %d: %w", id, err)
	}
	return keep, remove, nil
}
