package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
)

// The activity log file: a 64-byte header, then a fixed array of 16-byte
// slots, each naming one hot extent (disk, extent index) or empty. A slot is
// written and the file made durable before the first write into its extent;
// slots are recycled only for extents whose writes a completed flush made
// durable. docs/format/capture-state.md describes it.
const (
	alHeaderSize = 64
	alSlotSize   = 16
	alVersion    = 1
)

var (
	alMagic    = [8]byte{'S', 'T', 'B', 'Y', 'A', 'C', 'T', '1'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

type alKey struct {
	disk   int
	extent int64
}

type alSlot struct {
	key  alKey
	used bool
	gen  uint64 // write generation of the newest write into the extent
	lru  uint64 // touch counter, for choosing a victim
}

// activityLog is DRBD's activity log, in a file. Its methods are called with
// the machine's lock held.
type activityLog struct {
	f          *os.File
	extentSize int64
	slots      []alSlot
	index      map[alKey]int
	clock      uint64
	syncs      uint64 // fsyncs of the log: cold-extent misses
	unsynced   bool   // a slot was written and not yet fsynced
}

// openActivityLog opens or creates the log and returns the extents it held,
// the ones that may have had writes in flight when the last run ended. It
// does not clear them: the caller resets the log once it has recorded them
// elsewhere, so a recovery that dies half-way finds them again.
func openActivityLog(path string, extentSize int64, nslots int) (*activityLog, []alKey, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	a := &activityLog{f: f, extentSize: extentSize, slots: make([]alSlot, nslots), index: make(map[alKey]int)}
	var hot []alKey
	hdr := make([]byte, alHeaderSize)
	if n, _ := f.ReadAt(hdr, 0); n == alHeaderSize {
		if [8]byte(hdr[0:8]) != alMagic || binary.LittleEndian.Uint32(hdr[60:]) != crc32.Checksum(hdr[:60], castagnoli) {
			f.Close()
			return nil, nil, fmt.Errorf("activity log %s is corrupt", path)
		}
		if v := binary.LittleEndian.Uint32(hdr[8:]); v != alVersion {
			f.Close()
			return nil, nil, fmt.Errorf("activity log %s has version %d; this build reads %d", path, v, alVersion)
		}
		oldSize := int64(binary.LittleEndian.Uint64(hdr[16:]))
		oldSlots := int(binary.LittleEndian.Uint32(hdr[12:]))
		raw := make([]byte, alSlotSize*oldSlots)
		if _, err := f.ReadAt(raw, alHeaderSize); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("read activity log: %w", err)
		}
		for i := range oldSlots {
			s := raw[alSlotSize*i:]
			if binary.LittleEndian.Uint16(s[2:]) == 1 {
				if int(binary.LittleEndian.Uint16(s[0:])) >= maxDisks || oldSize <= 0 {
					f.Close()
					return nil, nil, fmt.Errorf("activity log %s: slot %d is corrupt", path, i)
				}
				// Report in units of the new extent size.
				disk := int(binary.LittleEndian.Uint16(s[0:]))
				start := int64(binary.LittleEndian.Uint64(s[8:])) * oldSize
				for e := start / extentSize; e*extentSize < start+oldSize; e++ {
					hot = append(hot, alKey{disk, e})
				}
			}
		}
	}
	return a, hot, nil
}

// reset rewrites the log empty and durable. The caller must reset before
// the first touch: at open once the hot extents are safely in the dirty
// bitmap, and at a clean close.
func (a *activityLog) reset() error {
	buf := make([]byte, alHeaderSize+alSlotSize*len(a.slots))
	copy(buf, alMagic[:])
	binary.LittleEndian.PutUint32(buf[8:], alVersion)
	binary.LittleEndian.PutUint32(buf[12:], uint32(len(a.slots)))
	binary.LittleEndian.PutUint64(buf[16:], uint64(a.extentSize))
	binary.LittleEndian.PutUint32(buf[60:], crc32.Checksum(buf[:60], castagnoli))
	if _, err := a.f.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("write activity log: %w", err)
	}
	if err := a.f.Truncate(int64(len(buf))); err != nil {
		return err
	}
	for i := range a.slots {
		a.slots[i] = alSlot{}
	}
	clear(a.index)
	return a.f.Sync()
}

// errALFull means every activity-log slot holds writes that are not durable
// yet: the caller must release its lock, sync, and try again.
var errALFull = errors.New("activity log full of unflushed extents")

// touch makes every extent of [off, off+n) of disk hot before a write with
// generation gen. synced is the newest generation a completed sync made
// durable. It returns errALFull when no slot can be recycled until a sync
// completes; extents made hot before that stay hot.
func (a *activityLog) touch(disk int, off, n int64, gen, synced uint64) error {
	if n <= 0 {
		return nil
	}
	for e := off / a.extentSize; e <= (off+n-1)/a.extentSize; e++ {
		k := alKey{disk, e}
		a.clock++
		if i, ok := a.index[k]; ok {
			a.slots[i].gen, a.slots[i].lru = gen, a.clock
			continue
		}
		i, ok := a.victim(synced)
		if !ok {
			return errALFull
		}
		if a.slots[i].used {
			delete(a.index, a.slots[i].key)
		}
		a.slots[i] = alSlot{key: k, used: true, gen: gen, lru: a.clock}
		a.index[k] = i
		var s [alSlotSize]byte
		binary.LittleEndian.PutUint16(s[0:], uint16(disk))
		binary.LittleEndian.PutUint16(s[2:], 1)
		binary.LittleEndian.PutUint64(s[8:], uint64(e))
		if _, err := a.f.WriteAt(s[:], alHeaderSize+alSlotSize*int64(i)); err != nil {
			return fmt.Errorf("write activity log: %w", err)
		}
		a.unsynced = true
	}
	// One fsync for every slot the range took: they are all durable before
	// the write they cover goes ahead. A slot written before errALFull
	// stays unsynced until the next touch syncs it.
	if a.unsynced {
		if err := a.f.Sync(); err != nil {
			return fmt.Errorf("sync activity log: %w", err)
		}
		a.unsynced = false
		a.syncs++
	}
	return nil
}

// victim picks a free slot, else the least recently used slot whose writes
// are durable.
func (a *activityLog) victim(synced uint64) (int, bool) {
	best := -1
	for i := range a.slots {
		s := &a.slots[i]
		if !s.used {
			return i, true
		}
		if s.gen <= synced && (best < 0 || s.lru < a.slots[best].lru) {
			best = i
		}
	}
	return best, best >= 0
}

func (a *activityLog) close() error { return a.f.Close() }
