package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"os"
	"path/filepath"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/nbd"
)

// The overlay's map file (docs/exports.md): a fixed header in the first
// mapPageSize bytes, then the bitmap, one bit per OverlayBlockSize block,
// bit k being bit k%8 (least significant first) of byte k/8. The file is
// made sparse at its full length, so an empty overlay allocates only its
// header; pages of the bitmap are written as bits are set. The bitmap
// carries no checksum on purpose: bits are only set, so any mix of old
// and new sectors a crash leaves is a valid map (see Overlay).

const (
	mapPageSize   = 4096 // bytes of bitmap written at a time; also the header's page
	mapHeaderSize = 64
	mapVersion    = 1
	pageBlocks    = mapPageSize * 8 // blocks per bitmap page
)

var mapMagic = [8]byte{'S', 'T', 'B', 'Y', 'O', 'V', 'L', 'M'}

// mapHeader is the fixed header of an overlay's map file.
type mapHeader struct {
	Version   uint32
	BlockSize uint32
	Size      int64  // the disk's size in bytes
	Point     uint64 // the recovery point the overlay is over
}

func (h mapHeader) blocks() int64 {
	return (h.Size + int64(h.BlockSize) - 1) / int64(h.BlockSize)
}

// fileSize is the map file's length: header page plus whole bitmap pages.
func (h mapHeader) fileSize() int64 {
	return mapPageSize + (h.blocks()+pageBlocks-1)/pageBlocks*mapPageSize
}

// encode returns the header's mapHeaderSize bytes.
func (h mapHeader) encode() []byte {
	b := make([]byte, mapHeaderSize)
	copy(b, mapMagic[:])
	binary.LittleEndian.PutUint32(b[8:], h.Version)
	binary.LittleEndian.PutUint32(b[12:], h.BlockSize)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.Size))
	binary.LittleEndian.PutUint64(b[24:], h.Point)
	binary.LittleEndian.PutUint64(b[32:], uint64(h.blocks()))
	binary.LittleEndian.PutUint64(b[40:], mapPageSize) // offset of the bitmap
	// b[48:60] reserved, zero.
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	return b
}

// Validate checks a header's fields against what this build writes.
func (h mapHeader) Validate() error {
	switch {
	case h.Version != mapVersion:
		return fmt.Errorf("version %d, this build reads %d", h.Version, mapVersion)
	case h.BlockSize != OverlayBlockSize:
		return fmt.Errorf("block size %d, this build uses %d", h.BlockSize, OverlayBlockSize)
	case h.Size <= 0:
		return fmt.Errorf("disk size %d", h.Size)
	}
	return nil
}

// decodeMapHeader reads and checks the header at the start of b.
func decodeMapHeader(b []byte) (mapHeader, error) {
	var h mapHeader
	switch {
	case len(b) < mapHeaderSize:
		return h, fmt.Errorf("%d bytes, shorter than the header", len(b))
	case [8]byte(b[:8]) != mapMagic:
		return h, errors.New("bad magic")
	case binary.LittleEndian.Uint32(b[60:]) != crc32.Checksum(b[:60], castagnoli):
		return h, errors.New("header checksum mismatch")
	}
	h.Version = binary.LittleEndian.Uint32(b[8:])
	h.BlockSize = binary.LittleEndian.Uint32(b[12:])
	h.Size = int64(binary.LittleEndian.Uint64(b[16:]))
	h.Point = binary.LittleEndian.Uint64(b[24:])
	if err := h.Validate(); err != nil {
		return h, err
	}
	if n := binary.LittleEndian.Uint64(b[32:]); n != uint64(h.blocks()) {
		return h, fmt.Errorf("%d blocks for %d bytes", n, h.Size)
	}
	if off := binary.LittleEndian.Uint64(b[40:]); off != mapPageSize {
		return h, fmt.Errorf("bitmap at %d, this build reads it at %d", off, mapPageSize)
	}
	return h, nil
}

// overlayMap is the bitmap in memory, sparse: a page is allocated when a
// bit of it is first set. The Overlay's mu guards it, except the file
// writes of writePages, which use copies.
type overlayMap struct {
	f      *os.File
	h      mapHeader
	pages  map[int64]*[mapPageSize / 8]uint64
	dirty  map[int64]bool // pages changed since the last flush took them
	count  int64          // bits set
	blocks int64
}

func createMap(path string, h mapHeader) (*overlayMap, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteAt(h.encode(), 0)
	if err == nil {
		err = f.Truncate(h.fileSize())
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return newMap(f, h), nil
}

func newMap(f *os.File, h mapHeader) *overlayMap {
	return &overlayMap{f: f, h: h, blocks: h.blocks(), pages: map[int64]*[mapPageSize / 8]uint64{}, dirty: map[int64]bool{}}
}

// openMap opens a map file and loads its allocated pages (holes are
// skipped, so the cost follows what was written, not the disk's size).
func openMap(path string, size int64, point uint64) (*overlayMap, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	m, err := loadMap(f, size, point)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func loadMap(f *os.File, size int64, point uint64) (*overlayMap, error) {
	b := make([]byte, mapPageSize)
	if _, err := f.ReadAt(b[:mapHeaderSize], 0); err != nil {
		return nil, fmt.Errorf("%w: map header: %w", ErrDamaged, err)
	}
	h, err := decodeMapHeader(b)
	if err != nil {
		return nil, fmt.Errorf("%w: map header: %w", ErrDamaged, err)
	}
	if h.Size != size || h.Point != point {
		return nil, fmt.Errorf("%w: map of point %d, %d bytes; want point %d, %d bytes", ErrDamaged, h.Point, h.Size, point, size)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() != h.fileSize() {
		return nil, fmt.Errorf("%w: map file of %d bytes, want %d", ErrDamaged, fi.Size(), h.fileSize())
	}
	m := newMap(f, h)
	fb, err := nbd.NewFileBackend(f)
	if err != nil {
		return nil, err
	}
	for off := int64(mapPageSize); off < fi.Size(); {
		exts, err := fb.Extents(context.Background(), off, fi.Size()-off)
		if err != nil {
			return nil, fmt.Errorf("map extents: %w", err)
		}
		for _, e := range exts {
			if !e.Hole {
				if err := m.loadPages(b, off, off+e.Length); err != nil {
					return nil, err
				}
			}
			off += e.Length
		}
	}
	return m, nil
}

// loadPages reads the bitmap pages in the file range [from, to).
func (m *overlayMap) loadPages(b []byte, from, to int64) error {
	from = from / mapPageSize * mapPageSize
	for off := from; off < to; off += mapPageSize {
		if _, err := m.f.ReadAt(b, off); err != nil {
			return fmt.Errorf("%w: map page at %d: %w", ErrDamaged, off, err)
		}
		pg := &[mapPageSize / 8]uint64{}
		var n int
		for i := range pg {
			pg[i] = binary.LittleEndian.Uint64(b[8*i:])
			n += bits.OnesCount64(pg[i])
		}
		if n == 0 {
			continue
		}
		p := off/mapPageSize - 1
		if last := (m.blocks - 1) / pageBlocks; p == last {
			// Bits past the disk's last block must be clear.
			if tail := m.blocks - p*pageBlocks; tail < pageBlocks {
				for k := tail; k < pageBlocks; k++ {
					if pg[k/64]&(1<<(k%64)) != 0 {
						return fmt.Errorf("%w: map bit %d set past the disk's %d blocks", ErrDamaged, p*pageBlocks+k, m.blocks)
					}
				}
			}
		}
		m.pages[p] = pg
		m.count += int64(n)
	}
	return nil
}

func (m *overlayMap) get(k int64) bool {
	pg := m.pages[k/pageBlocks]
	if pg == nil {
		return false
	}
	i := k % pageBlocks
	return pg[i/64]&(1<<(i%64)) != 0
}

// setRange sets the bits of blocks [from, to).
func (m *overlayMap) setRange(from, to int64) {
	for k := from; k < to; k++ {
		p := k / pageBlocks
		pg := m.pages[p]
		if pg == nil {
			pg = &[mapPageSize / 8]uint64{}
			m.pages[p] = pg
		}
		i := k % pageBlocks
		if w := &pg[i/64]; *w&(1<<(i%64)) == 0 {
			*w |= 1 << (i % 64)
			m.count++
			m.dirty[p] = true
		}
	}
}

// takeDirty returns copies of the pages changed since the last call, in
// their file encoding, and forgets that they changed.
func (m *overlayMap) takeDirty() map[int64][]byte {
	out := make(map[int64][]byte, len(m.dirty))
	for p := range m.dirty {
		b := make([]byte, mapPageSize)
		for i, w := range m.pages[p] {
			binary.LittleEndian.PutUint64(b[8*i:], w)
		}
		out[p] = b
	}
	clear(m.dirty)
	return out
}

// redirty marks pages a failed flush took as changed again.
func (m *overlayMap) redirty(pages map[int64][]byte) {
	for p := range pages {
		m.dirty[p] = true
	}
}

// writePages writes pages (from takeDirty) and makes them durable.
func (m *overlayMap) writePages(pages map[int64][]byte) error {
	if len(pages) == 0 {
		return nil
	}
	for p, b := range pages {
		if _, err := m.f.WriteAt(b, mapPageSize*(p+1)); err != nil {
			return err
		}
	}
	return m.f.Sync()
}

func (m *overlayMap) close() error { return m.f.Close() }

// syncDir makes the creation of the files at path durable.
func syncDir(path string) error { return fsutil.SyncDir(filepath.Dir(path)) }
