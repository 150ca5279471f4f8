package segpack

import (
	"bytes"
	"hash/maphash"
)

// The dedup window. Both ends keep the last Blocks distinct payload blocks
// to enter it, in a ring: block number n (the n-th block to enter since the
// stream started, from 0) lives in slot n mod Blocks until block n+Blocks
// evicts it. Only BLOCK ops make blocks enter; references do not change the
// window, so its state is the pair (geometry, Seq) and both ends agree on it
// as long as they see the same segments in the same order.
//
// The packer indexes its blocks by a seeded 64-bit hash and compares the
// bytes before it emits a reference, so a hash collision costs a missed
// dedup, never a wrong block.

// packWindow is the packer's side: the blocks and an index of them.
type packWindow struct {
	bs    int
	n     uint64 // capacity in blocks; 0: dedup disabled
	seq   uint64 // blocks that have entered
	seed  maphash.Seed
	index map[uint64]uint64 // hash -> block number, for blocks in the window
	keys  []uint64          // hash of the block in each slot
	data  []byte            // slot i is data[i*bs : (i+1)*bs]
}

func newPackWindow(bs int, blocks uint32) packWindow {
	return packWindow{
		bs:    bs,
		n:     uint64(blocks),
		seed:  maphash.MakeSeed(),
		index: make(map[uint64]uint64, min(int(blocks), 1<<16)),
	}
}

func (w *packWindow) state() Window {
	return Window{BlockSize: uint32(w.bs), Blocks: uint32(w.n), Seq: w.seq}
}

// find returns the number of a block in the window equal to b, and the hash
// of b for a following insert.
func (w *packWindow) find(b []byte) (num, h uint64, ok bool) {
	h = maphash.Bytes(w.seed, b)
	num, ok = w.index[h]
	if ok && !bytes.Equal(w.block(num), b) {
		return 0, h, false // a hash collision: the window does not have b
	}
	return num, h, ok
}

func (w *packWindow) block(num uint64) []byte {
	i := int(num%w.n) * w.bs
	return w.data[i : i+w.bs]
}

// insert makes b, whose hash is h, enter the window, evicting the oldest
// block if the window is full.
func (w *packWindow) insert(h uint64, b []byte) {
	num := w.seq
	slot := int(num % w.n)
	if num >= w.n {
		old := num - w.n
		if k := w.keys[slot]; w.index[k] == old {
			delete(w.index, k)
		}
		w.keys[slot] = h
	} else {
		w.keys = append(w.keys, h)
	}
	w.data = growRing(w.data, (slot+1)*w.bs, int(w.n)*w.bs)
	copy(w.data[slot*w.bs:], b)
	w.index[h] = num // a collision's older block stays in the ring, unindexed
	w.seq++
}

func (w *packWindow) reset() {
	w.seq = 0
	clear(w.index)
	w.keys = w.keys[:0]
	w.data = w.data[:0]
}

// unpackWindow is the unpacker's side: the blocks, and the blocks of the
// segment being unpacked that will enter once it checks out.
type unpackWindow struct {
	bs      int
	n       uint64
	seq     uint64
	data    []byte
	pending []int // offsets, in the segment being unpacked, of blocks entering
}

func (w *unpackWindow) state() Window {
	return Window{BlockSize: uint32(w.bs), Blocks: uint32(w.n), Seq: w.seq}
}

// block returns block number num, which may be a pending block of seg.
// The caller has checked that num is in the window.
func (w *unpackWindow) block(seg []byte, num uint64) []byte {
	if num >= w.seq {
		off := w.pending[num-w.seq]
		return seg[off : off+w.bs]
	}
	i := int(num%w.n) * w.bs
	return w.data[i : i+w.bs]
}

// commit makes the pending blocks of seg enter the window. Blocks that a
// later pending block would evict at once are not copied.
func (w *unpackWindow) commit(seg []byte) {
	p := w.pending
	first := w.seq
	if uint64(len(p)) > w.n {
		first += uint64(len(p)) - w.n
		p = p[uint64(len(p))-w.n:]
	}
	for i, off := range p {
		slot := int((first + uint64(i)) % w.n)
		w.data = growRing(w.data, (slot+1)*w.bs, int(w.n)*w.bs)
		copy(w.data[slot*w.bs:(slot+1)*w.bs], seg[off:off+w.bs])
	}
	w.seq += uint64(len(w.pending))
	w.pending = w.pending[:0]
}

func (w *unpackWindow) reset() {
	w.seq = 0
	w.data = w.data[:0]
	w.pending = w.pending[:0]
}

// growRing returns b with a length of at least need, never giving it a
// capacity above limit, so a window's memory stays within its size.
func growRing(b []byte, need, limit int) []byte {
	if need <= len(b) {
		return b
	}
	if need > cap(b) {
		c := min(max(2*cap(b), need, 64<<10), limit)
		nb := make([]byte, len(b), c)
		copy(nb, b)
		b = nb
	}
	return b[:need]
}
