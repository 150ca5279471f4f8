package replica

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/standby-dr/standby/internal/fsutil"
)

// recover brings the files in line with state.json after a crash (Open).
// Every step is idempotent, so a crash during recover is repaired by the
// next Open.
func (r *Replica) recover(ctx context.Context) error {
	idxs, err := r.segmentFiles(r.st)
	if err != nil {
		return err
	}
	if err := r.redo(ctx, idxs); err != nil {
		return err
	}
	if err := r.finishRoll(ctx); err != nil {
		return err
	}
	if idxs, err = r.segmentFiles(r.st); err != nil {
		return err
	}
	if err := r.removeStale(r.st, idxs); err != nil {
		return err
	}
	return r.checkLog()
}

// segmentFiles lists the log indexes of the files in segments/, in order.
func (r *Replica) segmentFiles(st *state) ([]uint64, error) {
	ents, err := os.ReadDir(filepath.Join(r.dir, segmentsDir))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	var idxs []uint64
	for _, e := range ents {
		if idx, ok := parseSegName(e.Name()); ok {
			idxs = append(idxs, idx)
		} else if filepath.Ext(e.Name()) != tmpExt {
			// (A temporary file is a segment being written now, when
			// Prune sweeps; Open removes those a crash left.)
			r.log.Warn("replica: ignoring unknown file", "machine", st.MachineID, "path", filepath.Join(r.dir, segmentsDir, e.Name()))
		}
	}
	slices.Sort(idxs)
	return idxs, nil
}

// redo finishes an Apply that stored its segment but did not record it in
// state.json: the segment file with the next log index. Its records after
// the applied position may be on current in part, in full or not at all;
// applying them again makes current the state after the segment (every
// record sets bytes, so a replay in order is idempotent). On a lazy base
// the blocks they write are seeded first, which skips the blocks already
// seeded: those hold their content from before any of the records. A
// stored segment that does not continue from the applied position, or one
// past the next log index, cannot have been acknowledged and is removed;
// so is any while a copy is under way, as Apply refuses segments then.
func (r *Replica) redo(ctx context.Context, idxs []uint64) error {
	for _, idx := range idxs {
		if idx < r.st.NextLog {
			continue
		}
		path := filepath.Join(r.dir, segmentsDir, segName(idx))
		if idx == r.st.NextLog && !r.st.Copying {
			done, err := r.redoOne(ctx, idx, path)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		if err := os.Remove(path); err != nil {
			return err
		}
		if err := fsutil.SyncDir(filepath.Dir(path)); err != nil {
			return err
		}
		r.log.Info("replica: removed unrecorded segment", "machine", r.st.MachineID, "path", path)
	}
	return nil
}

// redoOne applies the unrecorded segment idx if it continues from the
// applied position; done reports that it did.
func (r *Replica) redoOne(ctx context.Context, idx uint64, path string) (done bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	p, err := r.scan(r.st, bufio.NewReaderSize(f, 64<<10))
	if err != nil || !p.fresh() {
		r.log.Warn("replica: unrecorded segment does not apply", "machine", r.st.MachineID, "path", path, "err", err)
		return false, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return false, err
	}
	if err := r.applyStored(ctx, r.st, p, idx, bufio.NewReaderSize(f, 64<<10), fi.Size()); err != nil {
		return false, fmt.Errorf("redo %s: %w", path, err)
	}
	r.log.Info("replica: applied unrecorded segment", "machine", r.st.MachineID, "path", path, "seq", p.to.Seq)
	return true, nil
}

// removeStale removes segment files that are no longer in the log: a
// prune recorded their release but did not finish deleting them.
func (r *Replica) removeStale(st *state, idxs []uint64) error {
	inLog := make(map[uint64]bool, len(st.Log))
	for _, e := range st.Log {
		inLog[e.Index] = true
	}
	removed := false
	for _, idx := range idxs {
		if inLog[idx] || idx >= st.NextLog {
			continue
		}
		path := filepath.Join(r.dir, segmentsDir, segName(idx))
		if err := os.Remove(path); err != nil {
			return err
		}
		r.log.Info("replica: removed released segment", "machine", st.MachineID, "path", path)
		removed = true
	}
	if removed {
		return fsutil.SyncDir(filepath.Join(r.dir, segmentsDir))
	}
	return nil
}

// checkLog checks that every segment in the log is stored, whole.
func (r *Replica) checkLog() error {
	for _, e := range r.st.Log {
		path := filepath.Join(r.dir, segmentsDir, segName(e.Index))
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%w: segment %d (seq %d..%d): %w", ErrDamaged, e.Index, e.From.Seq+1, e.To.Seq, err)
		}
		if fi.Size() != e.Bytes {
			return fmt.Errorf("%w: %s is %d bytes, stored %d", ErrDamaged, path, fi.Size(), e.Bytes)
		}
	}
	return nil
}
