package replica

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
)

// plan is what one segment does to the replica, worked out from its bytes
// before anything is written.
type plan struct {
	hdr        journal.Header
	from, to   journal.Pos // the replica's applied position before; the segment's end
	records    uint64      // records after from: the ones to apply
	points     []Point     // from its bookmarks after from; ID, Log and Applied unset
	consistent bool        // the replica's Consistent flag after it
	lastTime   int64       // Time of its last record after from
	ranges     []seedRange // what its records after from write, if lazy
	lazy       bool        // the base is lazy: collect ranges, to seed them before applying
}

// fresh reports whether the segment brings records the replica lacks.
func (p *plan) fresh() bool { return p.to.Seq > p.from.Seq }

// Apply validates seg, the verbatim bytes of one sealed journal segment of
// the machine, stores it and applies its records after the replica's
// applied position to the current images, and returns the new applied
// position. When Apply returns nil the segment survives a crash.
//
// Errors, each leaving the replica unchanged: a segment that does not
// validate (wrapping journal.ErrCorrupt and friends); one of another
// machine (ErrMachineID); one of an older epoch (ErrFenced); a gap or a
// fork (a wrapped *journal.PosMismatchError with the evidence: the agent
// must resynchronise, see Rebase); a record outside the disks
// (ErrDiskRange); any segment while a copy is under way (ErrCopying). A
// segment entirely at or before the applied position returns that position
// and writes nothing: retries are harmless. A segment of a higher epoch
// raises the replica's epoch.
//
// Once the segment is stored, Apply finishes the work even if ctx is
// cancelled; an error after that point marks the replica ErrBroken until it
// is opened again, and Open finishes the work.
func (r *Replica) Apply(ctx context.Context, seg []byte) (journal.Pos, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.snapshot(true)
	if err != nil {
		return journal.Pos{}, fmt.Errorf("replica apply: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return journal.Pos{}, fmt.Errorf("replica apply: %w", err)
	}
	if cur.Copying {
		return journal.Pos{}, fmt.Errorf("replica apply: machine %s: %w", cur.MachineID, ErrCopying)
	}
	p, err := r.scan(cur, bytes.NewReader(seg))
	if err != nil {
		return journal.Pos{}, fmt.Errorf("replica apply: machine %s: %w", cur.MachineID, err)
	}
	if !p.fresh() {
		return r.applyNothing(cur, p)
	}
	idx := cur.NextLog
	path := filepath.Join(r.dir, segmentsDir, segName(idx))
	if err := writeAtomic(path, seg); err != nil {
		err = fmt.Errorf("replica apply: store segment %d..%d: %w", p.hdr.FirstSeq, p.to.Seq, err)
		if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
			return journal.Pos{}, err // nothing changed (a full disk, say): may be retried
		}
		return journal.Pos{}, r.fail(err) // renamed but maybe not durable: let Open decide
	}
	if err := failpoint("after-store"); err != nil {
		return journal.Pos{}, r.fail(err)
	}
	if err := r.applyStored(ctx, cur, p, idx, bytes.NewReader(seg), int64(len(seg))); err != nil {
		return journal.Pos{}, r.fail(fmt.Errorf("replica apply: segment %d..%d: %w", p.hdr.FirstSeq, p.to.Seq, err))
	}
	return p.to, nil
}

// applyNothing answers a segment that brings no new record: a retry, or an
// empty segment. Only a higher epoch is recorded, for a segment that ends
// exactly at the applied position.
func (r *Replica) applyNothing(cur *state, p *plan) (journal.Pos, error) {
	if p.to.Seq < p.from.Seq || p.hdr.Epoch <= cur.Epoch {
		return cur.Applied, nil
	}
	st := cur.clone()
	st.Epoch = p.hdr.Epoch
	if err := saveState(r.dir, st); err != nil {
		return journal.Pos{}, fmt.Errorf("replica apply: raise epoch to %d: %w", st.Epoch, err)
	}
	r.commit(st)
	return st.Applied, nil
}

// applyStored takes a stored segment (log index idx, bytes src) through the
// remaining durable steps: seed a lazy base, apply to current, fsync
// current, state.json. Apply and Open's redo share it.
func (r *Replica) applyStored(ctx context.Context, cur *state, p *plan, idx uint64, src io.Reader, size int64) error {
	ctx = context.WithoutCancel(ctx) // a stored segment is applied whole
	if err := r.seed(ctx, p.ranges); err != nil {
		return fmt.Errorf("seed base: %w", err)
	}
	r.curMu.Lock()
	err := applyRecords(ctx, src, r.cur, p.from.Seq, p.to.Seq, nil)
	r.generation.Add(1)
	r.curMu.Unlock()
	if err != nil {
		return fmt.Errorf("apply to current: %w", err)
	}
	if err := failpoint("after-apply"); err != nil {
		return err
	}
	if err := syncImages(r.cur); err != nil {
		return err
	}
	if err := failpoint("after-fsync"); err != nil {
		return err
	}
	st := p.next(cur, idx, size, r.o.now())
	if err := saveState(r.dir, st); err != nil {
		return err
	}
	if err := failpoint("after-state"); err != nil {
		return err
	}
	r.commit(st)
	return nil
}

// next is the state after the segment, stored with log index idx.
func (p *plan) next(cur *state, idx uint64, size int64, now time.Time) *state {
	st := cur.clone()
	st.Epoch = max(st.Epoch, p.hdr.Epoch)
	st.Applied = p.to
	st.AppliedAt = now.UTC()
	st.LastRecord = p.lastTime
	st.Consistent = p.consistent
	st.Log = append(st.Log, logEntry{Index: idx, From: p.from, To: p.to, Epoch: p.hdr.Epoch, Bytes: size, Records: p.records})
	st.NextLog = idx + 1
	for _, pt := range p.points {
		pt.ID = st.NextPoint
		pt.Log = idx
		pt.Applied = now.UTC()
		st.NextPoint++
		st.Points = append(st.Points, pt)
	}
	return st
}

// scan reads the whole segment from src and checks it against the replica
// in state st: every record, the trailer, machine, epoch, continuity from
// the applied position and the disks' ranges. It writes nothing.
func (r *Replica) scan(st *state, src io.Reader) (*plan, error) {
	rd, err := journal.NewReader(src)
	if err != nil {
		return nil, err
	}
	h := rd.Header()
	if h.MachineID != r.id {
		return nil, fmt.Errorf("%w: segment of machine %s", ErrMachineID, canonicalID(h.MachineID))
	}
	if h.Epoch < st.Epoch {
		return nil, fmt.Errorf("%w: segment epoch %d, replica epoch %d", ErrFenced, h.Epoch, st.Epoch)
	}
	from := st.Applied
	if h.FirstSeq > from.Seq+1 || h.FirstSeq == from.Seq+1 && h.PrevChain != from.Chain {
		return nil, h.Continues(from) // a gap or a fork
	}
	p := &plan{hdr: h, from: from, consistent: st.Consistent, lastTime: st.LastRecord, lazy: st.BaseGen > 0}
	var rec journal.Record
	for {
		err := rd.Next(&rec)
		if err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		if err := checkRange(st.Disks, &rec); err != nil {
			return nil, err
		}
		if rec.Seq < from.Seq {
			continue
		}
		if rec.Seq == from.Seq {
			if rd.Pos() != from {
				return nil, &journal.PosMismatchError{Want: from, Got: rd.Pos()} // a fork further back
			}
			continue
		}
		p.add(&rec, rd.Pos())
	}
	tr, _ := rd.Trailer()
	p.to = tr.Pos()
	return p, nil
}

// add accounts for one record after the applied position, at pos.
func (p *plan) add(rec *journal.Record, pos journal.Pos) {
	p.records++
	p.lastTime = rec.Time
	if p.lazy && rec.Kind != journal.KindBookmark {
		p.ranges = append(p.ranges, seedRange{disk: int(rec.Disk), off: int64(rec.Offset), end: int64(rec.End())})
	}
	if rec.Flags&journal.FlagResync != 0 {
		// The journal is not a consistent prefix until the resync is
		// complete, which the agent marks with its next bookmark.
		p.consistent = false
		return
	}
	if rec.Kind != journal.KindBookmark {
		return
	}
	// The agent does not bookmark while it resynchronises, so a bookmark
	// is consistent, and after a Rebase it is the first consistent point.
	p.consistent = true
	p.points = append(p.points, Point{
		Seq:           rec.Seq,
		Chain:         pos.Chain,
		Time:          time.Unix(0, rec.Time).UTC(),
		Label:         string(rec.Data),
		AppConsistent: rec.Flags&journal.FlagAppConsistent != 0,
	})
}

// checkRange checks that a change record lies inside a disk of the machine.
func checkRange(disks []DiskInfo, rec *journal.Record) error {
	if rec.Kind == journal.KindBookmark {
		return nil
	}
	if int(rec.Disk) >= len(disks) {
		return fmt.Errorf("%w: record %d names disk %d, the machine has %d", ErrDiskRange, rec.Seq, rec.Disk, len(disks))
	}
	if d := disks[rec.Disk]; rec.End() > uint64(d.Size) {
		return fmt.Errorf("%w: record %d covers %d+%d, disk %s has %d bytes", ErrDiskRange, rec.Seq, rec.Offset, rec.Length, d.Name, d.Size)
	}
	return nil
}

// applyRecords applies the records with lo < seq ≤ hi of the segment read
// from src to imgs. The segment is read and checked again as it goes.
// check, if not nil, is called with each change record before it is
// applied; an error from it stops there.
func applyRecords(ctx context.Context, src io.Reader, imgs []image, lo, hi uint64, check func(*journal.Record) error) error {
	rd, err := journal.NewReader(src)
	if err != nil {
		return err
	}
	var rec journal.Record
	for {
		err := rd.Next(&rec)
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if rec.Seq <= lo || rec.Kind == journal.KindBookmark {
			continue
		}
		if rec.Seq > hi {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if int(rec.Disk) >= len(imgs) {
			return fmt.Errorf("%w: record %d names disk %d", ErrDiskRange, rec.Seq, rec.Disk)
		}
		if check != nil {
			if err := check(&rec); err != nil {
				return err
			}
		}
		if err := applyRecord(ctx, imgs[rec.Disk].b, &rec); err != nil {
			return fmt.Errorf("record %d: %w", rec.Seq, err)
		}
		if err := failpoint("record-applied"); err != nil {
			return err
		}
	}
}

// applyRecord applies one change record. Unlike capture.Apply, a trim is
// made to read as zeros even where holes cannot be punched: a point's view
// maps trims to zeros, and current must agree with it byte for byte.
func applyRecord(ctx context.Context, b *nbd.FileBackend, rec *journal.Record) error {
	off, n := int64(rec.Offset), int64(rec.Length)
	switch rec.Kind {
	case journal.KindWrite:
		return b.WriteAt(ctx, rec.Data, off, false)
	case journal.KindZero:
		return b.Zero(ctx, off, n, rec.Flags&journal.FlagNoHole == 0, false)
	case journal.KindTrim:
		return b.Zero(ctx, off, n, true, false)
	}
	return fmt.Errorf("unknown record kind %v", rec.Kind)
}

// syncImages fsyncs every image: data, holes punched, and size.
func syncImages(imgs []image) error {
	for _, im := range imgs {
		if err := im.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", im.f.Name(), err)
		}
	}
	return nil
}

// applyFile applies the records (lo, hi] of the stored segment at path
// (check as for applyRecords).
func applyFile(ctx context.Context, path string, imgs []image, lo, hi uint64, check func(*journal.Record) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := applyRecords(ctx, bufio.NewReaderSize(f, 64<<10), imgs, lo, hi, check); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}

// Rebase makes pos the replica's applied position although it does not
// continue from it: the agent is resynchronising (initial replication, or
// after a gap or a fork) and will send every block that differs in the
// segments after pos. Sequence numbers may go backwards. The replica is not
// consistent from now until the next bookmark is applied, and points resume
// there. epoch must not be lower than the replica's (else ErrFenced) and
// becomes its epoch. A copy under way (BeginCopy) ends: what it wrote
// stays in current. Rebase is durable when it returns nil.
func (r *Replica) Rebase(ctx context.Context, pos journal.Pos, epoch uint64) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.snapshot(true)
	if err != nil {
		return fmt.Errorf("replica rebase: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replica rebase: %w", err)
	}
	if err := checkRebase(cur, pos, epoch); err != nil {
		return fmt.Errorf("replica rebase: %w", err)
	}
	st := cur.clone()
	st.Applied = pos
	st.Epoch = epoch
	st.Consistent = false
	st.Copying = false
	if err := saveState(r.dir, st); err != nil {
		return fmt.Errorf("replica rebase: %w", err)
	}
	r.commit(st)
	r.generation.Add(1)
	r.log.Info("replica: rebased", "machine", st.MachineID, "seq", pos.Seq, "epoch", epoch, "from_seq", cur.Applied.Seq)
	return nil
}

// checkRebase checks the arguments of Rebase and BeginCopy against the
// replica in state cur.
func checkRebase(cur *state, pos journal.Pos, epoch uint64) error {
	switch {
	case epoch == 0:
		return errors.New("epoch 0: allowed: the machine's replication epoch, at least 1")
	case epoch < cur.Epoch:
		return fmt.Errorf("machine %s: %w: epoch %d, replica epoch %d", cur.MachineID, ErrFenced, epoch, cur.Epoch)
	case pos.Seq == 0 && pos.Chain != 0:
		return fmt.Errorf("position %s: the start of a journal has chain 0", pos)
	}
	return nil
}
