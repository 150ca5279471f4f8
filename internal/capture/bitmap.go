package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/bits"
	"os"
	"sync/atomic"
)

// The dirty bitmap file: a 4 KiB header, then one bitmap per disk, each a
// whole number of little-endian uint64 words, bit i of word w standing for
// chunk 64*w+i. docs/format/capture-state.md describes it.
const (
	bitmapHeaderSize = 4096
	bitmapVersion    = 1
)

var bitmapMagic = [8]byte{'S', 'T', 'B', 'Y', 'D', 'B', 'M', '1'}

// Extent is a byte range of one disk.
type Extent struct {
	Disk   int
	Offset int64
	Length int64
}

// bitmap is the persistent dirty bitmap. Its methods are called with the
// machine's lock held; count is also read without it.
type bitmap struct {
	f     *os.File
	chunk int64
	disks []diskBits
	count atomic.Int64 // set bits
	dirty bool         // written since the last sync
}

type diskBits struct {
	fileOff int64
	size    int64
	words   []uint64
}

func bitmapLayout(chunk int64, sizes []int64) (hdr []byte, disks []diskBits) {
	hdr = make([]byte, bitmapHeaderSize)
	copy(hdr, bitmapMagic[:])
	binary.LittleEndian.PutUint32(hdr[8:], bitmapVersion)
	binary.LittleEndian.PutUint32(hdr[12:], uint32(len(sizes)))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(chunk))
	off := int64(bitmapHeaderSize)
	for i, size := range sizes {
		binary.LittleEndian.PutUint64(hdr[24+8*i:], uint64(size))
		chunks := (size + chunk - 1) / chunk
		words := (chunks + 63) / 64
		disks = append(disks, diskBits{fileOff: off, size: size, words: make([]uint64, words)})
		off += 8 * words
	}
	binary.LittleEndian.PutUint32(hdr[bitmapHeaderSize-4:], crc32.Checksum(hdr[:bitmapHeaderSize-4], castagnoli))
	return hdr, disks
}

// openBitmap opens or creates the bitmap for disks of the given sizes. An
// existing file must have the same layout.
func openBitmap(path string, chunk int64, sizes []int64) (*bitmap, error) {
	if len(sizes) > (bitmapHeaderSize-28)/8 {
		return nil, fmt.Errorf("dirty bitmap: %d disks, at most %d", len(sizes), (bitmapHeaderSize-28)/8)
	}
	hdr, disks := bitmapLayout(chunk, sizes)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		// Build the file aside and rename it in, so a crash never leaves a
		// half-made bitmap behind.
		last := disks[len(disks)-1]
		buf := make([]byte, last.fileOff+8*int64(len(last.words)))
		copy(buf, hdr)
		if err := writeFileAtomic(path, buf); err != nil {
			return nil, fmt.Errorf("create dirty bitmap: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	b := &bitmap{f: f, chunk: chunk, disks: disks}
	got := make([]byte, bitmapHeaderSize)
	if _, err := f.ReadAt(got, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("read dirty bitmap header: %w", err)
	}
	if string(got) != string(hdr) {
		f.Close()
		return nil, fmt.Errorf("dirty bitmap %s was written for another disk layout or is corrupt", path)
	}
	for i := range b.disks {
		d := &b.disks[i]
		raw := make([]byte, 8*len(d.words))
		if _, err := f.ReadAt(raw, d.fileOff); err != nil {
			f.Close()
			return nil, fmt.Errorf("read dirty bitmap of disk %d: %w", i, err)
		}
		for w := range d.words {
			d.words[w] = binary.LittleEndian.Uint64(raw[8*w:])
			b.count.Add(int64(bits.OnesCount64(d.words[w])))
		}
	}
	return b, nil
}

// mark sets the chunks covering [off, off+n) of disk and writes the changed
// words to the file (page cache: enough for a process crash; sync makes it
// durable).
func (b *bitmap) mark(disk int, off, n int64) error {
	if n <= 0 {
		return nil
	}
	d := &b.disks[disk]
	first, last := off/b.chunk, (off+n-1)/b.chunk
	lo, hi := -1, -1
	for c := first; c <= last; c++ {
		w, m := c/64, uint64(1)<<(c%64)
		if d.words[w]&m == 0 {
			d.words[w] |= m
			b.count.Add(1)
			if lo < 0 {
				lo = int(w)
			}
			hi = int(w)
		}
	}
	if lo < 0 {
		return nil
	}
	return b.writeWords(d, lo, hi)
}

// clear clears one chunk.
func (b *bitmap) clear(disk int, chunk int64) error {
	d := &b.disks[disk]
	w, m := chunk/64, uint64(1)<<(chunk%64)
	if d.words[w]&m == 0 {
		return nil
	}
	d.words[w] &^= m
	b.count.Add(-1)
	return b.writeWords(d, int(w), int(w))
}

func (b *bitmap) writeWords(d *diskBits, lo, hi int) error {
	buf := make([]byte, 8*(hi-lo+1))
	for w := lo; w <= hi; w++ {
		binary.LittleEndian.PutUint64(buf[8*(w-lo):], d.words[w])
	}
	b.dirty = true
	if _, err := b.f.WriteAt(buf, d.fileOff+8*int64(lo)); err != nil {
		return fmt.Errorf("write dirty bitmap: %w", err)
	}
	return nil
}

func (b *bitmap) isDirty(disk int, chunk int64) bool {
	return b.disks[disk].words[chunk/64]&(1<<(chunk%64)) != 0
}

// next finds the first dirty chunk at or after (disk, chunk).
func (b *bitmap) next(disk int, chunk int64) (int, int64, bool) {
	for ; disk < len(b.disks); disk, chunk = disk+1, 0 {
		words := b.disks[disk].words
		for w := chunk / 64; w < int64(len(words)); w++ {
			v := words[w]
			if w == chunk/64 {
				v &^= (1 << (chunk % 64)) - 1
			}
			if v != 0 {
				return disk, 64*w + int64(bits.TrailingZeros64(v)), true
			}
		}
	}
	return 0, 0, false
}

// chunkExtent is the byte range of a chunk, cut at the disk's end.
func (b *bitmap) chunkExtent(disk int, chunk int64) Extent {
	off := chunk * b.chunk
	return Extent{Disk: disk, Offset: off, Length: min(b.chunk, b.disks[disk].size-off)}
}

// extents lists the dirty ranges, adjacent chunks merged.
func (b *bitmap) extents() []Extent {
	var out []Extent
	for disk, c, ok := b.next(0, 0); ok; disk, c, ok = b.next(disk, c+1) {
		e := b.chunkExtent(disk, c)
		if n := len(out); n > 0 && out[n-1].Disk == disk && out[n-1].Offset+out[n-1].Length == e.Offset {
			out[n-1].Length += e.Length
			continue
		}
		out = append(out, e)
	}
	return out
}

func (b *bitmap) sync() error {
	if !b.dirty {
		return nil
	}
	b.dirty = false
	return b.f.Sync()
}

func (b *bitmap) close() error { return b.f.Close() }
