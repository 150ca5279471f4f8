package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/standby-dr/standby/internal/journal"
)

// ApplyBatch applies segs in order, as Apply would one by one, sharing the
// durable steps: each segment is stored (written and fsynced), then all are
// applied to the current images (after seeding a lazy base for all of
// them), which are fsynced once, and state.json is written once. A master
// target with several segments waiting takes them this way, so that a
// backlog costs one image fsync and one state write per batch instead of
// per segment.
//
// It returns the position after the last segment applied. If segment k
// does not apply (the same errors as Apply), the segments before it are
// applied and the error for k is returned with their position; a caller
// acknowledges the position and reports the error.
func (r *Replica) ApplyBatch(ctx context.Context, segs [][]byte) (journal.Pos, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.snapshot(true)
	if err != nil {
		return journal.Pos{}, fmt.Errorf("replica apply: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return cur.Applied, fmt.Errorf("replica apply: %w", err)
	}
	if cur.Copying {
		return cur.Applied, fmt.Errorf("replica apply: machine %s: %w", cur.MachineID, ErrCopying)
	}
	type item struct {
		p   *plan
		idx uint64
		seg []byte
	}
	var items []item
	st, now := cur, r.o.now()
	var scanErr error
	for _, seg := range segs {
		p, err := r.scan(st, bytes.NewReader(seg))
		if err != nil {
			scanErr = fmt.Errorf("replica apply: machine %s: %w", st.MachineID, err)
			break
		}
		if !p.fresh() {
			if p.to.Seq == st.Applied.Seq && p.hdr.Epoch > st.Epoch {
				st = st.clone()
				st.Epoch = p.hdr.Epoch
			}
			continue
		}
		idx := st.NextLog
		st = p.next(st, idx, int64(len(seg)), now)
		items = append(items, item{p, idx, seg})
	}
	if len(items) == 0 {
		if st != cur {
			if err := saveState(r.dir, st); err != nil {
				return cur.Applied, fmt.Errorf("replica apply: raise epoch to %d: %w", st.Epoch, err)
			}
			r.commit(st)
		}
		return st.Applied, scanErr
	}
	dir := filepath.Join(r.dir, segmentsDir)
	for i, it := range items {
		path := filepath.Join(dir, segName(it.idx))
		if err := writeAtomic(path, it.seg); err != nil {
			err = fmt.Errorf("replica apply: store segment %d..%d: %w", it.p.hdr.FirstSeq, it.p.to.Seq, err)
			if _, serr := os.Stat(path); i == 0 && errors.Is(serr, fs.ErrNotExist) {
				return cur.Applied, err // nothing changed: may be retried
			}
			return cur.Applied, r.fail(err) // Open redoes what was stored
		}
		if err := failpoint("after-store"); err != nil {
			return cur.Applied, r.fail(err)
		}
	}
	ctx = context.WithoutCancel(ctx) // stored segments are applied whole
	var rs []seedRange
	for _, it := range items {
		rs = append(rs, it.p.ranges...)
	}
	if err = r.seed(ctx, rs); err != nil { // the whole batch, before any of it reaches current
		err = fmt.Errorf("replica apply: seed base: %w", err)
	} else {
		r.curMu.Lock()
		for _, it := range items {
			if err = applyRecords(ctx, bytes.NewReader(it.seg), r.cur, it.p.from.Seq, it.p.to.Seq, nil); err != nil {
				err = fmt.Errorf("replica apply: segment %d..%d: apply to current: %w", it.p.hdr.FirstSeq, it.p.to.Seq, err)
				break
			}
		}
		r.generation.Add(1)
		r.curMu.Unlock()
	}
	if err == nil {
		err = failpoint("after-apply")
	}
	if err == nil {
		err = syncImages(r.cur)
	}
	if err == nil {
		err = failpoint("after-fsync")
	}
	if err == nil {
		err = saveState(r.dir, st)
	}
	if err == nil {
		err = failpoint("after-state")
	}
	if err != nil {
		return cur.Applied, r.fail(err)
	}
	r.commit(st)
	return st.Applied, scanErr
}
