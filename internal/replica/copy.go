package replica

import (
	"context"
	"fmt"
	"sync"

	"github.com/standby-dr/standby/internal/journal"
)

// The copy path of initial replication writes each byte once: the agent
// streams its disks' blocks straight into the current images, with no
// segment stored. That is legal only while no recovery point exists, and
// because BeginCopy makes the base lazy: a block no record has touched
// since reads from current (seeded.go). The stream is
//
//	BeginCopy(pos, epoch)  WriteCopy/ZeroCopy ...  EndCopy  Apply(segments after pos) ...
//
// and the replica is consistent from the first bookmark applied after it,
// as after a Rebase.

// writebackEvery is how many bytes WriteCopy writes to an image between
// two starts of its writeback, so that EndCopy's fsync has little left.
const writebackEvery = 32 << 20

// BeginCopy starts a copy into current: like Rebase(pos, epoch) (the same
// checks and errors: epoch 0, ErrFenced, a bad position), but only for a
// replica without recovery points (else ErrHasPoints, nothing changed).
// It also drops the whole log (state.json first, then the segment files),
// and makes the base lazy with a new generation and empty seeded bitmaps
// (empty, sparse base images). From then until EndCopy (or a Rebase) the
// replica takes WriteCopy and ZeroCopy and refuses segments (ErrCopying).
// BeginCopy while a copy is under way starts it again; current keeps what
// was copied. Durable when it returns nil; a failure of one of its steps
// marks the replica ErrBroken, and Open finishes (or has no need of) the
// reset.
func (r *Replica) BeginCopy(ctx context.Context, pos journal.Pos, epoch uint64) error {
	r.pmu.Lock() // a base roll must not write the base images being replaced
	defer r.pmu.Unlock()
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.snapshot(true)
	if err != nil {
		return fmt.Errorf("replica begin copy: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replica begin copy: %w", err)
	}
	if err := checkRebase(cur, pos, epoch); err != nil {
		return fmt.Errorf("replica begin copy: %w", err)
	}
	if len(cur.Points) > 0 {
		return fmt.Errorf("replica begin copy: machine %s: %d points: %w", cur.MachineID, len(cur.Points), ErrHasPoints)
	}
	st := cur.clone()
	st.Applied, st.Epoch = pos, epoch
	st.Consistent, st.Copying = false, true
	st.BaseGen++
	st.Log, st.Roll = nil, nil
	if err := r.beginCopy(st, cur.Log); err != nil {
		return r.fail(fmt.Errorf("replica begin copy: %w", err))
	}
	r.commit(st)
	r.generation.Add(1)
	r.log.Info("replica: copy begun", "machine", st.MachineID, "seq", pos.Seq, "epoch", epoch,
		"base_gen", st.BaseGen, "segments_released", len(cur.Log))
	return nil
}

// beginCopy takes BeginCopy's durable steps to st: state.json, the
// dropped segments' files, then the reset of the base images and bitmaps.
// A crash after state.json leaves bitmaps of an older generation (or
// none), and Open does the reset again.
func (r *Replica) beginCopy(st *state, dropped []logEntry) error {
	if err := saveState(r.dir, st); err != nil {
		return err
	}
	if err := failpoint("copy-after-state"); err != nil {
		return err
	}
	if err := r.removeSegments(dropped); err != nil {
		return err
	}
	r.curMu.Lock()
	defer r.curMu.Unlock()
	maps := make([]*seedMap, len(st.Disks))
	copy(maps, r.seeded)
	r.seeded = maps // resetBase replaces each, closing the old
	all := make([]int, len(st.Disks))
	for i := range all {
		all[i] = i
	}
	return r.resetBase(st.Disks, all, st.BaseGen)
}

// WriteCopy writes data into the current image of disk at off: no segment
// is stored and no base block seeded, as no point exists and an unseeded
// block of the base follows current. Only while a copy is under way (else
// ErrNotCopying); the range must lie inside the disk (else ErrDiskRange).
// The write is buffered (writeback is started every 32 MiB or so) and
// durable only after EndCopy.
func (r *Replica) WriteCopy(ctx context.Context, disk int, off int64, data []byte) error {
	return r.WriteCopies(ctx, []CopyWrite{{Disk: disk, Off: off, Data: data}})
}

// CopyWrite is one run of a copy for WriteCopies.
type CopyWrite struct {
	Disk int
	Off  int64
	Data []byte
}

// WriteCopies is WriteCopy of several runs of disjoint ranges, checked
// first and then written at once: the writes that bypass the page cache
// are all outstanding together (a deeper queue for the disk than one
// write at a time). It fails without writing anything if a run is
// refused; on a failed write, current holds some of the runs.
func (r *Replica) WriteCopies(ctx context.Context, ws []CopyWrite) error {
	r.wmu.Lock() // a copy never overlaps EndCopy, Rebase or Apply
	defer r.wmu.Unlock()
	cur, err := r.copying(ctx, "replica copy write")
	if err != nil {
		return err
	}
	for _, w := range ws {
		if err := checkCopyRange(cur, "replica copy write", w.Disk, w.Off, int64(len(w.Data))); err != nil {
			return err
		}
	}
	r.curMu.Lock()
	defer r.curMu.Unlock()
	defer r.generation.Add(1) // even after an error: part of it may have landed
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		im := r.cur[w.Disk]
		if f := r.direct.file(r.log, im.f, w.Disk, false); f != nil && directAligned(w.Data, w.Off) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = f.WriteAt(w.Data, w.Off)
			}()
			continue
		}
		if errs[i] = im.b.WriteAt(ctx, w.Data, w.Off, false); errs[i] == nil {
			if r.unsynced[w.Disk] += int64(len(w.Data)); r.unsynced[w.Disk] >= writebackEvery {
				r.unsynced[w.Disk] = 0
				startWriteback(im.f)
			}
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("replica copy write: disk %s at %d: %w", cur.Disks[ws[i].Disk].Name, ws[i].Off, err)
		}
	}
	return nil
}

// ZeroCopy makes [off, off+n) of disk read as zeros in current (a punched
// hole where the file system allows), under WriteCopy's conditions.
func (r *Replica) ZeroCopy(ctx context.Context, disk int, off, n int64) error {
	return r.copyOp(ctx, "zero", disk, off, n, func(im image) error {
		return im.b.Zero(ctx, off, n, true, false)
	})
}

// copyOp checks a copy write of n bytes at off of disk and runs do on the
// disk's current image. A failed write leaves the replica usable: current
// holds what the copy wrote so far, which is all it promises until EndCopy.
func (r *Replica) copyOp(ctx context.Context, what string, disk int, off, n int64, do func(image) error) error {
	r.wmu.Lock() // a copy never overlaps EndCopy, Rebase or Apply
	defer r.wmu.Unlock()
	cur, err := r.copying(ctx, "replica copy "+what)
	if err != nil {
		return err
	}
	if err := checkCopyRange(cur, "replica copy "+what, disk, off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	r.curMu.Lock()
	defer r.curMu.Unlock()
	err = do(r.cur[disk])
	r.generation.Add(1) // even after an error: part of it may have landed
	if err != nil {
		return fmt.Errorf("replica copy %s: disk %s at %d: %w", what, cur.Disks[disk].Name, off, err)
	}
	return nil
}

// EndCopy makes what the copy wrote durable (fsync of the current images)
// and records that the copy ended. The replica is still not consistent:
// the next bookmark applied makes it so, as after a Rebase. ErrNotCopying
// if no copy is under way. Durable when it returns nil; a failed fsync
// marks the replica ErrBroken.
func (r *Replica) EndCopy(ctx context.Context) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.copying(ctx, "replica end copy")
	if err != nil {
		return err
	}
	if err := syncImages(r.cur); err != nil {
		return r.fail(fmt.Errorf("replica end copy: %w", err))
	}
	if err := failpoint("copy-after-sync"); err != nil {
		return r.fail(err)
	}
	st := cur.clone()
	st.Copying = false
	if err := saveState(r.dir, st); err != nil {
		return fmt.Errorf("replica end copy: %w", err) // still copying; may be retried
	}
	r.commit(st)
	r.curMu.Lock()
	clear(r.unsynced)
	r.curMu.Unlock()
	r.generation.Add(1)
	r.log.Info("replica: copy ended", "machine", st.MachineID, "seq", st.Applied.Seq)
	return nil
}

// copying returns the replica's state if a copy is under way (else
// ErrNotCopying) and ctx is not done; errors start with what. Called with
// wmu held.
func (r *Replica) copying(ctx context.Context, what string) (*state, error) {
	cur, err := r.snapshot(true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !cur.Copying {
		return nil, fmt.Errorf("%s: machine %s: %w", what, cur.MachineID, ErrNotCopying)
	}
	return cur, nil
}

// checkCopyRange refuses a copy of n bytes at off of disk that does not
// lie inside the disk (ErrDiskRange).
func checkCopyRange(cur *state, what string, disk int, off, n int64) error {
	if disk < 0 || disk >= len(cur.Disks) {
		return fmt.Errorf("%s: %w: disk %d, the machine has %d", what, ErrDiskRange, disk, len(cur.Disks))
	}
	if d := cur.Disks[disk]; off < 0 || n < 0 || off > d.Size-n {
		return fmt.Errorf("%s: %w: %d+%d, disk %s has %d bytes", what, ErrDiskRange, off, n, d.Name, d.Size)
	}
	return nil
}
