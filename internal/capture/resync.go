package capture

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/journal"
)

func (m *Machine) kickResync() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// resyncLoop appends the content of dirty chunks to the journal whenever
// there is room, until the bitmap is empty.
func (m *Machine) resyncLoop() {
	defer m.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	buf := make([]byte, m.o.ChunkSize)
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		case <-t.C:
		}
		m.resync(buf) // also ends a resync that MarkDirty found nothing for

	}
}

func (m *Machine) resync(buf []byte) {
	disk, chunk := 0, int64(0)
	for m.ctx.Err() == nil {
		done, err := m.resyncChunk(buf, &disk, &chunk)
		if err != nil {
			m.log.Warn("resync", "machine", m.st.MachineID, "err", err)
			return
		}
		if done {
			return
		}
	}
}

// resyncChunk appends the next dirty chunk at or after (*disk, *chunk), if
// the journal has room, and clears its bit. done is true when there is
// nothing more to do for now.
func (m *Machine) resyncChunk(buf []byte, disk *int, chunk *int64) (done bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed != nil {
		return true, nil
	}
	d, c, ok := m.bits.next(*disk, *chunk)
	if !ok {
		if m.resyncing && !m.holdBM {
			m.log.Info("resync complete: journal consistent again", "machine", m.st.MachineID, "seq", m.seg.pos.Seq)
			m.resyncing = false
			// The first consistent point after a resync, at once: the
			// master target presents none until it has one.
			if _, err := m.bookmarkLocked("resync-complete", false); err != nil {
				m.sinceBM++ // the interval loop tries again
			}
		}
		return true, nil
	}
	e := m.bits.chunkExtent(d, c)
	if !m.seg.fits(journal.RecordHeaderSize + e.Length) {
		return true, nil
	}
	if !m.resyncing {
		m.log.Info("resync started", "machine", m.st.MachineID, "dirty_bytes", m.bits.count.Load()*m.o.ChunkSize)
		m.resyncing = true
	}
	data := buf[:e.Length]
	// Earlier writes into the chunk may still be on their way to the disk.
	op := m.inflight.begin(d, e.Offset, e.Offset+e.Length, 0)
	op.wait()
	err = m.disks[d].back.ReadAt(m.ctx, data, e.Offset)
	m.inflight.end(op)
	if err != nil {
		return true, fmt.Errorf("read dirty chunk of disk %s at %d: %w", m.disks[d].name, e.Offset, err)
	}
	rec := journal.Record{Kind: journal.KindWrite, Flags: journal.FlagResync, Disk: uint16(d), Offset: uint64(e.Offset), Length: uint64(e.Length), Data: data, Time: m.o.Now().UnixNano()}
	if isZero(data) {
		rec.Kind, rec.Data = journal.KindZero, nil
	}
	// The cleared bit and the resync record both sit in the page cache;
	// after a power loss the activity log must cover the chunk in case only
	// the bitmap page reached the disk.
	// Resync walks the disk in order: make the extents of the next
	// MaxRange hot at once, so that one activity-log fsync covers many
	// chunks instead of one per extent.
	ahead := min(m.o.MaxRange, m.disks[d].Size()-e.Offset)
	if _, err := m.touchActivity(d, e.Offset, max(ahead, e.Length)); err != nil {
		return true, err
	}
	if err := m.seg.append(&rec, journal.PayloadCRC(rec.Data)); err != nil {
		return true, err
	}
	if err := m.bits.clear(d, c); err != nil {
		return true, m.fail(err)
	}
	*disk, *chunk = d, c+1
	return false, nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// StartResync begins a resynchronisation against a replica (initial
// replication, or after a gap or fork): it seals the active segment, stops
// bookmarks, and returns the journal position at that instant. The caller
// ships every record after the returned position, compares the disks with
// the replica (reading them only after this call: every write journaled
// before the position has reached the disk by then), and passes the ranges
// that differ to MarkDirty; their current content is then appended to the
// journal as resync records. The first bookmark after that is a consistent
// recovery point again ("resync-complete", appended as soon as the dirty
// ranges are all journaled).
func (m *Machine) StartResync() (journal.Pos, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed != nil {
		return journal.Pos{}, m.failed
	}
	if m.seg.active != nil && m.seg.active.count > 0 {
		if err := m.seg.seal(m.o.Now().UnixNano()); err != nil {
			return journal.Pos{}, m.fail(err)
		}
	}
	// Writes journaled before this position may still be on their way to
	// the disk: the caller's reads (hashing, copying) must see them, as
	// the records before the position are not shipped. New writes wait
	// for the lock meanwhile.
	m.inflight.waitIdle()
	m.holdBM = true
	m.resyncing = true
	m.log.Info("resync against the replica started", "machine", m.st.MachineID, "seq", m.seg.pos.Seq)
	return m.seg.pos, nil
}

// MarkDirty marks ranges for resynchronisation (their current content will
// be journaled as resync records) and ends the hold StartResync put on
// bookmarks. Ranges are rounded out to dirty-bitmap chunks.
func (m *Machine) MarkDirty(exts []Extent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range exts {
		if e.Disk < 0 || e.Disk >= len(m.disks) || e.Offset < 0 || e.Length < 0 || e.Offset+e.Length > m.disks[e.Disk].Size() {
			return fmt.Errorf("mark dirty: extent %+v is outside the machine's disks", e)
		}
	}
	for _, e := range exts {
		if err := m.bits.mark(e.Disk, e.Offset, e.Length); err != nil {
			return m.fail(err)
		}
	}
	m.holdBM = false
	m.resyncing = true
	m.kickResync()
	return nil
}
