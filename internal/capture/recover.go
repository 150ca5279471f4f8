package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
)

// recover loads the machine's state, opens the journal, bitmap and activity
// log, and repairs what an unclean stop left behind.
func (m *Machine) recover(ctx context.Context) error {
	dir := m.o.Dir
	st, existed, err := loadState(dir)
	if err != nil {
		return err
	}
	layout := make([]stateDisk, len(m.o.Disks))
	sizes := make([]int64, len(m.o.Disks))
	for i, d := range m.o.Disks {
		layout[i] = stateDisk{Name: d.Name, Size: d.Backend.Size()}
		sizes[i] = layout[i].Size
		m.disks = append(m.disks, &Disk{m: m, index: i, name: d.Name, back: d.Backend})
	}
	if !existed {
		st = state{MachineID: newMachineID(), Epoch: 1, Clean: true, BootID: bootID(), Disks: layout}
		if m.o.MachineID != "" {
			if _, err := journal.ParseMachineID(m.o.MachineID); err != nil {
				return fmt.Errorf("capture: machine id %q: %w", m.o.MachineID, err)
			}
			st.MachineID = m.o.MachineID
		}
		if m.o.Epoch > 0 {
			st.Epoch = m.o.Epoch
		}
	} else if m.o.MachineID != "" && !strings.EqualFold(m.o.MachineID, st.MachineID) {
		return fmt.Errorf("capture: %s holds the journal of machine %s, not %s", dir, st.MachineID, m.o.MachineID)
	} else if !slices.Equal(st.Disks, layout) {
		return fmt.Errorf("capture: the disks of %s changed since the journal was written (was %v, now %v); "+
			"protect the machine again to start a new journal", dir, st.Disks, layout)
	}
	m.st = st
	if m.id, err = st.machineID(); err != nil {
		return err
	}
	if m.bits, err = openBitmap(filepath.Join(dir, "dirty.bitmap"), m.o.ChunkSize, sizes); err != nil {
		return err
	}
	var hot []alKey
	if m.al, hot, err = openActivityLog(filepath.Join(dir, "activity.log"), m.o.ExtentSize, m.o.ActivityExtents); err != nil {
		return err
	}
	m.seg = &segments{
		dir:     filepath.Join(dir, "journal"),
		hdr:     journal.Header{Version: journal.Version, MachineID: m.id, Epoch: st.Epoch},
		segSize: m.o.SegmentSize,
		limit:   m.o.JournalLimit,
	}

	unclean := existed && !st.Clean
	// Without a readable boot id, assume the worst: every unclean stop may
	// have been a power loss.
	rebooted := unclean && (st.BootID != bootID() || bootID() == unknownBoot)
	cut, err := m.loadSegments(unclean, rebooted)
	if err != nil {
		return err
	}
	if unclean {
		if rebooted {
			for _, k := range hot {
				if k.disk >= len(sizes) {
					continue // a disk the layout check says is not there
				}
				if ext := min(m.o.ExtentSize, sizes[k.disk]-k.extent*m.o.ExtentSize); ext > 0 {
					if err := m.bits.mark(k.disk, k.extent*m.o.ExtentSize, ext); err != nil {
						return err
					}
				}
			}
		}
		n, err := m.redo(ctx)
		if err != nil {
			return fmt.Errorf("redo journal: %w", err)
		}
		// The retained segments are called synced from here on: make it
		// true, since the stop may have left them in the page cache only.
		for _, s := range m.seg.list {
			if err := cutAndSync(s.Path, s.Size); err != nil {
				return fmt.Errorf("sync recovered segment: %w", err)
			}
		}
		if err := fsutil.SyncDir(m.seg.dir); err != nil {
			return err
		}
		m.stats.Recovered = fmt.Sprintf("unclean stop (new boot: %v): %d damaged journal bytes cut, %d records re-applied, %d activity-log extents marked dirty",
			rebooted, cut, n, map[bool]int{true: len(hot)}[rebooted])
		m.log.Warn("recovered from an unclean stop", "machine", st.MachineID, "detail", m.stats.Recovered)
		if err := m.bits.f.Sync(); err != nil {
			return err
		}
	}
	// The hot extents are durable in the bitmap now; the log starts empty.
	if err := m.al.reset(); err != nil {
		return err
	}
	m.st.Clean, m.st.BootID = false, bootID()
	return saveState(dir, &m.st)
}

// loadSegments reads every segment, checking checksums and continuity. A
// damaged or unsealed last segment (the agent stopped while appending) is
// cut to its valid records and sealed. After a power loss a damaged segment
// anywhere ends the journal: later ones are removed, and the activity log
// covers their writes. Otherwise damage before the tail is an error. It
// returns the number of bytes cut.
func (m *Machine) loadSegments(unclean, rebooted bool) (int64, error) {
	removeStaleSpares(m.seg.dir)
	names, err := listSegments(m.seg.dir)
	if err != nil {
		return 0, err
	}
	pos := m.st.Released
	var cut int64
	for i, path := range names {
		last := i == len(names)-1
		rd, err := scanSegment(path, nil)
		if rd == nil {
			if unclean && (last || rebooted) {
				// The header itself never reached the disk.
				cut += fileSize(path)
				if err := m.removeFrom(names[i:]); err != nil {
					return cut, err
				}
				break
			}
			return cut, fmt.Errorf("journal segment: %w (run `standby journal inspect %s`)", err, path)
		}
		h := rd.Header()
		if h.MachineID != m.id {
			return cut, fmt.Errorf("journal segment %s belongs to another machine", path)
		}
		if err == nil && rd.Pos().Seq <= m.st.Released.Seq {
			// Released, but the agent stopped before removing the file.
			if err := os.Remove(path); err != nil {
				return cut, err
			}
			continue
		}
		if pos.Seq > 0 || i > 0 || h.FirstSeq == 1 {
			if cerr := h.Continues(pos); cerr != nil {
				return cut, fmt.Errorf("journal segment %s: %w", path, cerr)
			}
		}
		info := SegmentInfo{Path: path, FirstSeq: h.FirstSeq, LastSeq: rd.Pos().Seq, Size: rd.Offset(), Sealed: true, Synced: true}
		if err == nil {
			info.Size += journal.TrailerSize
			if rd.Padding() > 0 {
				// Sealed, but stopped before its preallocated tail was cut.
				if err := cutAndSync(path, info.Size); err != nil {
					return cut, err
				}
			}
		} else {
			if !unclean || !(last || rebooted) {
				return cut, fmt.Errorf("journal segment %s is damaged: %w (run `standby journal inspect %s`)", path, err, path)
			}
			if !errors.Is(err, journal.ErrNotSealed) {
				cut += fileSize(path) - rd.Offset() // damage, not preallocated space
			}
			if err := m.sealRecovered(path, rd); err != nil {
				return cut, err
			}
			if rd.Count() == 0 {
				info.Size = 0
			} else {
				info.Size += journal.TrailerSize
			}
		}
		pos = rd.Pos()
		if info.Size > 0 {
			m.seg.list = append(m.seg.list, &segment{SegmentInfo: info, count: rd.Count(), end: rd.Pos()})
			m.seg.used += info.Size
		}
		if err != nil && !last {
			for _, p := range names[i+1:] {
				cut += fileSize(p)
			}
			if err := m.removeFrom(names[i+1:]); err != nil {
				return cut, err
			}
			break
		}
	}
	m.seg.pos = pos
	return cut, nil
}

// sealRecovered cuts a segment to its valid records and seals it; an empty
// one is removed.
func (m *Machine) sealRecovered(path string, rd *journal.Reader) error {
	if rd.Count() == 0 {
		return os.Remove(path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(rd.Offset()); err != nil {
		return err
	}
	var payload uint64
	if _, err := scanSegment(path, func(r *journal.Record) error { payload += uint64(len(r.Data)); return nil }); !errors.Is(err, journal.ErrNotSealed) {
		return fmt.Errorf("rescan %s after cut: %v", path, err)
	}
	t := journal.Trailer{LastSeq: rd.Pos().Seq, Count: rd.Count(), Chain: rd.Pos().Chain, Payload: payload, Sealed: m.o.Now().UnixNano()}
	if _, err := f.WriteAt(journal.AppendTrailer(nil, &t), rd.Offset()); err != nil {
		return err
	}
	return f.Sync()
}

func cutAndSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

func (m *Machine) removeFrom(paths []string) error {
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return fsutil.SyncDir(m.seg.dir)
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// redo re-applies every retained record to the disks, in order, except in
// chunks the dirty bitmap holds (their newest content may not be in the
// journal, and resync will send it). Records are idempotent, so this is
// safe whichever of them had reached the disk.
func (m *Machine) redo(ctx context.Context) (int, error) {
	n := 0
	for _, s := range m.seg.list {
		_, err := scanSegment(s.Path, func(rec *journal.Record) error {
			if rec.Kind == journal.KindBookmark {
				return nil
			}
			if int(rec.Disk) >= len(m.disks) {
				return fmt.Errorf("record %d names disk %d of %d", rec.Seq, rec.Disk, len(m.disks))
			}
			n++
			return m.applyClean(ctx, rec)
		})
		if err != nil {
			return n, fmt.Errorf("%s: %w", s.Path, err)
		}
	}
	for _, d := range m.disks {
		if err := d.back.Flush(ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}

// applyClean applies the parts of rec that fall in chunks that are not dirty.
func (m *Machine) applyClean(ctx context.Context, rec *journal.Record) error {
	disk := int(rec.Disk)
	start, end := int64(rec.Offset), int64(rec.End())
	for off := start; off < end; {
		c := off / m.o.ChunkSize
		next := min(end, (c+1)*m.o.ChunkSize)
		if !m.bits.isDirty(disk, c) {
			piece := *rec
			piece.Offset, piece.Length = uint64(off), uint64(next-off)
			if rec.Kind == journal.KindWrite {
				piece.Data = rec.Data[off-start : next-start]
			}
			if err := Apply(ctx, m.disks[disk].back, &piece); err != nil {
				return err
			}
		}
		off = next
	}
	return nil
}
