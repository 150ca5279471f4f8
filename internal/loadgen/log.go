package loadgen

import "fmt"

// Write is one issued write in a Log.
type Write struct {
	Seq       uint64 `json:"seq"`       // machine-wide sequence number, from 1
	Disk      int    `json:"disk"`      // disk index
	Offset    int64  `json:"offset"`    // byte offset on the disk, block-aligned
	Blocks    int    `json:"blocks"`    // whole blocks written
	Issued    uint64 `json:"issued"`    // tick taken just before WriteAt
	Completed uint64 `json:"completed"` // tick taken just after WriteAt returned
	Failed    bool   `json:"failed,omitempty"`
}

// HappensBefore reports whether w completed before v was issued, so that
// storage keeping write order may hold v only together with w.
func (w Write) HappensBefore(v Write) bool { return w.Completed < v.Issued }

// Log is the record of a generator run: Writes[i] has Seq i+1.
type Log struct {
	RunID     uint64  `json:"run_id"`
	BlockSize int     `json:"block_size"`
	DiskSizes []int64 `json:"disk_sizes"` // bytes, rounded down to BlockSize
	Writes    []Write `json:"writes"`
}

// Write returns the write with sequence number seq, which must be in the log.
func (l *Log) Write(seq uint64) Write { return l.Writes[seq-1] }

// Sequential reports whether every write happened before the next one, so
// that seq order is completion order and every state is a prefix 1..n.
func (l *Log) Sequential() bool {
	for i := 1; i < len(l.Writes); i++ {
		if !l.Writes[i-1].HappensBefore(l.Writes[i]) {
			return false
		}
	}
	return true
}

// Validate checks the log's own consistency: dense sequence numbers, writes
// of whole blocks inside their disks, and ticks in order.
func (l *Log) Validate() error {
	if l.BlockSize < MinBlockSize || l.BlockSize&(l.BlockSize-1) != 0 {
		return fmt.Errorf("log: block size %d: want a power of two ≥ %d", l.BlockSize, MinBlockSize)
	}
	bs := int64(l.BlockSize)
	for d, size := range l.DiskSizes {
		if size < 0 || size%bs != 0 {
			return fmt.Errorf("log: disk %d: size %d is not a multiple of %d", d, size, bs)
		}
	}
	for i, w := range l.Writes {
		switch {
		case w.Seq != uint64(i+1):
			return fmt.Errorf("log: write at position %d has seq %d, want %d", i, w.Seq, i+1)
		case w.Disk < 0 || w.Disk >= len(l.DiskSizes):
			return fmt.Errorf("log: write %d: disk %d, log has %d disks", w.Seq, w.Disk, len(l.DiskSizes))
		case w.Blocks < 1 || w.Offset < 0 || w.Offset%bs != 0 || w.Offset+int64(w.Blocks)*bs > l.DiskSizes[w.Disk]:
			return fmt.Errorf("log: write %d: %d blocks at %d do not fit disk %d of %d bytes",
				w.Seq, w.Blocks, w.Offset, w.Disk, l.DiskSizes[w.Disk])
		case w.Issued >= w.Completed:
			return fmt.Errorf("log: write %d: issued at tick %d, completed at %d", w.Seq, w.Issued, w.Completed)
		}
	}
	return nil
}

// touches reports whether w wrote the block at byte offset off of disk, and
// which block of the write it was.
func (w Write) touches(disk int, off int64, bs int) (index int, ok bool) {
	if disk != w.Disk || off < w.Offset {
		return 0, false
	}
	i := (off - w.Offset) / int64(bs)
	return int(i), i < int64(w.Blocks)
}

// index maps (disk, block) to the seqs of the writes touching it, ascending,
// in compressed-row form: the writes of block b of disk d are
// seqs[d][start[d][b]:start[d][b+1]].
type index struct {
	start [][]uint32
	seqs  [][]uint64
}

func newIndex(l *Log) (*index, error) {
	x := &index{start: make([][]uint32, len(l.DiskSizes)), seqs: make([][]uint64, len(l.DiskSizes))}
	counts := make([]int, len(l.DiskSizes))
	for d, size := range l.DiskSizes {
		x.start[d] = make([]uint32, size/int64(l.BlockSize)+1)
	}
	for _, w := range l.Writes {
		b := w.Offset / int64(l.BlockSize)
		for i := range int64(w.Blocks) {
			x.start[w.Disk][b+i+1]++
		}
		counts[w.Disk] += w.Blocks
		if counts[w.Disk] > 1<<32-1 {
			return nil, fmt.Errorf("log: disk %d: more than 2^32 blocks written, too many to index", w.Disk)
		}
	}
	for d := range x.start {
		for b := 1; b < len(x.start[d]); b++ {
			x.start[d][b] += x.start[d][b-1]
		}
		x.seqs[d] = make([]uint64, counts[d])
	}
	next := make([][]uint32, len(l.DiskSizes))
	for d := range next {
		next[d] = append([]uint32(nil), x.start[d][:len(x.start[d])-1]...)
	}
	for _, w := range l.Writes {
		b := w.Offset / int64(l.BlockSize)
		for i := range int64(w.Blocks) {
			n := &next[w.Disk][b+i]
			x.seqs[w.Disk][*n] = w.Seq
			*n++
		}
	}
	return x, nil
}

// writes returns the seqs of the writes touching block b of disk d.
func (x *index) writes(d int, b int64) []uint64 {
	return x.seqs[d][x.start[d][b]:x.start[d][b+1]]
}

// Payload returns the bytes write seq wrote, as the generator built them,
// so that a test can apply the log's writes in another order.
func (l *Log) Payload(seq uint64) []byte {
	w := l.Write(seq)
	p := make([]byte, w.Blocks*l.BlockSize)
	encodeWrite(p, l.RunID, l.BlockSize, w)
	return p
}

// encodeWrite fills p, w.Blocks blocks long, with the blocks of w.
func encodeWrite(p []byte, runID uint64, bs int, w Write) {
	for i := range w.Blocks {
		Encode(p[i*bs:(i+1)*bs], Header{
			BlockSize: bs, RunID: runID, Seq: w.Seq,
			Offset: w.Offset + int64(i*bs), Disk: w.Disk, Index: i, Count: w.Blocks,
		})
	}
}
