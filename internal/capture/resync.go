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
		if m.bits.count.Load() > 0 {
			m.resync(buf)
		}
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
		if m.resyncing {
			m.log.Info("resync complete: journal consistent again", "machine", m.st.MachineID, "seq", m.seg.pos.Seq)
		}
		m.resyncing = false
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
	if _, err := m.touchActivity(d, e.Offset, e.Length); err != nil {
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
