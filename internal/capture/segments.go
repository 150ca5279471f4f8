package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/standby-dr/standby/internal/journal"
)

// SegmentInfo describes one journal segment file.
type SegmentInfo struct {
	Path     string
	FirstSeq uint64
	LastSeq  uint64 // FirstSeq-1 when empty
	Size     int64
	Sealed   bool
	Synced   bool // sealed and durable: safe to ship
	// FirstTime is the Time of the segment's first record (unix ns) when
	// this run appended it, else 0; the agent measures its RPO from it.
	FirstTime int64
}

type segment struct {
	SegmentInfo
	f       *os.File // open while active or not yet synced
	count   uint64
	payload uint64
	end     journal.Pos // position after the last record, once sealed

	finished chan struct{} // closed when finishSeal is done (sealed by a copy)

	// The active segment is preallocated to alloc bytes and mapped: an
	// append is a copy into the page cache, with no system call. mm is nil
	// where the filesystem cannot preallocate; appends then use pwritev.
	alloc int64
	mm    []byte
}

// segments is the journal directory: sealed segments and one active one.
// Its methods are called with the machine's lock held.
type segments struct {
	dir     string
	hdr     journal.Header // template: machine id and epoch
	segSize int64
	limit   int64

	list   []*segment // oldest first; the last is active when active != nil
	active *segment
	spares chan *segment // ready-made segment files (see makeSpares)
	// toFinish holds segments sealed by a copy that the sealer must still
	// unmap and cut; kickSealer wakes it.
	toFinish   []*segment
	kickSealer func()
	// Segments started from a ready-made spare, and made on the write path
	// because none was ready: the second should stay near zero.
	fromSpare, inline uint64
	pos               journal.Pos
	used              int64
	dirDirty          bool
	recHdr            [journal.RecordHeaderSize]byte
	iov               [2][]byte
}

func segmentName(first uint64) string { return fmt.Sprintf("%020d.seg", first) }

// listSegments returns the segment files of dir, oldest first.
func listSegments(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".seg") {
			if _, err := strconv.ParseUint(strings.TrimSuffix(n, ".seg"), 10, 64); err == nil {
				names = append(names, filepath.Join(dir, n))
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// fits reports whether a record of n encoded bytes can be appended within
// the journal limit.
func (s *segments) fits(n int64) bool {
	need := n + journal.TrailerSize
	if s.rotates(n) {
		need += journal.HeaderSize
	}
	return s.used+need <= s.limit
}

// rotates reports whether appending n bytes starts a new segment.
func (s *segments) rotates(n int64) bool {
	a := s.active
	return a == nil || (a.count > 0 && a.Size+n+journal.TrailerSize > max(a.alloc, s.segSize))
}

// append writes rec (whose Seq it sets) and advances the position. The
// caller checked fits. payloadCRC is journal.PayloadCRC(rec.Data), computed
// by the caller before it took the lock.
func (s *segments) append(rec *journal.Record, payloadCRC uint32) error {
	n := int64(journal.EncodedSize(rec))
	if s.rotates(n) {
		if err := s.seal(rec.Time); err != nil {
			return err
		}
		if err := s.create(rec.Time, n); err != nil {
			return err
		}
	}
	a := s.active
	rec.Seq = s.pos.Seq + 1
	if a.count == 0 {
		a.FirstTime = rec.Time
	}
	var crc uint32
	if a.mm != nil && a.Size+n <= a.alloc {
		crc = journal.PutRecordHeaderCRC(a.mm[a.Size:], rec, payloadCRC)
		copy(a.mm[a.Size+journal.RecordHeaderSize:], rec.Data)
	} else {
		crc = journal.PutRecordHeaderCRC(s.recHdr[:], rec, payloadCRC)
		s.iov[0], s.iov[1] = s.recHdr[:], rec.Data
		iov := s.iov[:]
		if len(rec.Data) == 0 {
			iov = iov[:1]
		}
		if err := pwritevFull(int(a.f.Fd()), iov, a.Size); err != nil {
			// Cut a partial record so the segment stays decodable.
			_ = a.f.Truncate(a.Size)
			return fmt.Errorf("append record %d to %s: %w", rec.Seq, a.Path, err)
		}
	}
	a.Size += n
	a.count++
	a.payload += uint64(len(rec.Data))
	a.LastSeq = rec.Seq
	s.used += n
	s.pos = s.pos.Next(crc)
	return nil
}

func pwritevFull(fd int, iov [][]byte, off int64) error {
	for len(iov) > 0 {
		n, err := unix.Pwritev(fd, iov, off)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		off += int64(n)
		for n > 0 && len(iov) > 0 {
			if n >= len(iov[0]) {
				n -= len(iov[0])
				iov = iov[1:]
			} else {
				iov[0] = iov[0][n:]
				n = 0
			}
		}
		for len(iov) > 0 && len(iov[0]) == 0 {
			iov = iov[1:]
		}
	}
	return nil
}

// create starts a new active segment after the current position, with room
// for at least a first record of n bytes.
func (s *segments) create(now int64, n int64) error {
	h := s.hdr
	h.FirstSeq, h.PrevChain, h.Created = s.pos.Seq+1, s.pos.Chain, now
	path := filepath.Join(s.dir, segmentName(h.FirstSeq))
	if seg := s.takeSpare(journal.HeaderSize + n + journal.TrailerSize); seg != nil {
		if err := os.Rename(seg.Path, path); err != nil {
			seg.discard()
			return fmt.Errorf("activate segment: %w", err)
		}
		seg.SegmentInfo = SegmentInfo{Path: path, FirstSeq: h.FirstSeq, LastSeq: h.FirstSeq - 1, Size: journal.HeaderSize}
		copy(seg.mm, journal.AppendHeader(nil, &h))
		s.list = append(s.list, seg)
		s.active = seg
		s.used += journal.HeaderSize
		s.dirDirty = true
		s.fromSpare++
		return nil
	}
	s.inline++
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	seg := &segment{SegmentInfo: SegmentInfo{Path: path, FirstSeq: h.FirstSeq, LastSeq: h.FirstSeq - 1, Size: journal.HeaderSize}, f: f}
	seg.alloc = max(s.segSize, journal.HeaderSize+n+journal.TrailerSize)
	if err := unix.Fallocate(int(f.Fd()), 0, 0, seg.alloc); err == nil {
		seg.mm, err = unix.Mmap(int(f.Fd()), 0, int(seg.alloc), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			seg.mm = nil
		}
	}
	if seg.mm == nil {
		// No preallocation here: a sparse mapping could SIGBUS on a full
		// disk, so append with pwritev instead.
		seg.alloc = 0
		if err := f.Truncate(0); err != nil {
			f.Close()
			os.Remove(path)
			return err
		}
	}
	if _, err := f.WriteAt(journal.AppendHeader(nil, &h), 0); err != nil {
		seg.unmap()
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write segment header %s: %w", path, err)
	}
	s.list = append(s.list, seg)
	s.active = seg
	s.used += journal.HeaderSize
	s.dirDirty = true
	return nil
}

// takeSpare returns a ready-made segment with room for need bytes, or nil.
func (s *segments) takeSpare(need int64) *segment {
	if s.spares == nil {
		return nil
	}
	select {
	case seg := <-s.spares:
		if seg.alloc >= need {
			return seg
		}
		seg.discard()
	default:
	}
	return nil
}

const spareSuffix = ".spare"

// makeSpares keeps one segment file ready ahead of need: preallocated,
// mapped, and written once per page so that its pages are in the page
// cache and mapped writable. Rotating to it is then a rename, and appends
// into it copy without page faults; the cost moves off the write path onto
// this goroutine.
func (s *segments) makeSpares(ctx context.Context, log *slog.Logger) {
	for n := 0; ctx.Err() == nil; n++ {
		seg, err := prepareSpare(filepath.Join(s.dir, fmt.Sprintf("%d%s", n, spareSuffix)), s.segSize)
		if err != nil {
			// Rotation falls back to making segments on the write path.
			log.Warn("cannot prepare journal segments ahead of need", "err", err)
			return
		}
		select {
		case s.spares <- seg:
		case <-ctx.Done():
			seg.discard()
		}
	}
}

func prepareSpare(path string, size int64) (*segment, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	seg := &segment{SegmentInfo: SegmentInfo{Path: path}, f: f, alloc: size}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		seg.discard()
		return nil, fmt.Errorf("preallocate %s: %w", path, err)
	}
	if seg.mm, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		seg.discard()
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	// Fault every page in writable, in one call where the kernel can
	// (Linux 5.14+), else by touching each page.
	if err := unix.Madvise(seg.mm, unix.MADV_POPULATE_WRITE); err != nil {
		for i := 0; i < len(seg.mm); i += os.Getpagesize() {
			seg.mm[i] = 0
		}
	}
	return seg, nil
}

// discard unmaps, closes and removes a segment file that holds no records.
func (seg *segment) discard() {
	seg.unmap()
	if seg.f != nil {
		seg.f.Close()
		seg.f = nil
	}
	os.Remove(seg.Path)
}

// dropSpares discards the ready-made segments; call after makeSpares ended.
func (s *segments) dropSpares() {
	if s.spares == nil {
		return
	}
	for {
		select {
		case seg := <-s.spares:
			seg.discard()
		default:
			return
		}
	}
}

// removeStaleSpares deletes ready-made segments a previous run left.
func removeStaleSpares(dir string) {
	m, _ := filepath.Glob(filepath.Join(dir, "*"+spareSuffix))
	for _, p := range m {
		os.Remove(p)
	}
}

func (seg *segment) unmap() {
	if seg.mm != nil {
		unix.Munmap(seg.mm)
		seg.mm = nil
	}
}

// seal closes the active segment with its trailer. A mapped segment gets
// its trailer by a copy; unmapping it and cutting its preallocated tail are
// left to the sealer goroutine (finishSeal), off the write path. The file
// stays open until the syncer has made it durable.
func (s *segments) seal(now int64) error {
	a := s.active
	if a == nil {
		return nil
	}
	t := journal.Trailer{LastSeq: s.pos.Seq, Count: a.count, Chain: s.pos.Chain, Payload: a.payload, Sealed: now}
	if a.mm != nil && a.Size+journal.TrailerSize <= int64(len(a.mm)) {
		copy(a.mm[a.Size:], journal.AppendTrailer(nil, &t))
		a.finished = make(chan struct{})
		s.toFinish = append(s.toFinish, a)
		if s.kickSealer != nil {
			s.kickSealer()
		}
	} else {
		a.unmap()
		if a.alloc > 0 {
			if err := a.f.Truncate(a.Size); err != nil {
				return fmt.Errorf("seal %s: %w", a.Path, err)
			}
		}
		if _, err := a.f.WriteAt(journal.AppendTrailer(nil, &t), a.Size); err != nil {
			return fmt.Errorf("seal %s: %w", a.Path, err)
		}
	}
	a.Size += journal.TrailerSize
	s.used += journal.TrailerSize
	a.Sealed = true
	a.end = s.pos
	s.active = nil
	return nil
}

// takeToFinish hands the sealed segments awaiting finishSeal to the caller.
func (s *segments) takeToFinish() []*segment {
	out := s.toFinish
	s.toFinish = nil
	return out
}

// finishSeal unmaps a sealed segment and cuts its preallocated tail. Run
// without the machine's lock; the segment is no longer written.
func (seg *segment) finishSeal() error {
	defer close(seg.finished)
	seg.unmap()
	if err := seg.f.Truncate(seg.Size); err != nil {
		return fmt.Errorf("seal %s: %w", seg.Path, err)
	}
	return nil
}

// syncList is the files the next sync round must make durable.
func (s *segments) syncList() []*segment {
	var out []*segment
	for _, seg := range s.list {
		if seg.f != nil {
			out = append(out, seg)
		}
	}
	return out
}

// markSynced records that segs were made durable (their sealed state at the
// time the round began is passed in sealed).
func (s *segments) markSynced(segs []*segment, sealed []bool) {
	for i, seg := range segs {
		if sealed[i] && seg.f != nil {
			seg.Synced = true
			seg.f.Close()
			seg.f = nil
		}
	}
}

// release removes sealed, synced segments whose records are all at or
// before seq. commit is called with the position after the last record to
// be removed before any file is removed, so that it can be made durable
// first. It returns how many bytes it freed.
func (s *segments) release(seq uint64, commit func(end journal.Pos) error) (int64, error) {
	n := 0
	for n < len(s.list) && s.list[n].Synced && s.list[n].LastSeq <= seq {
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if err := commit(s.list[n-1].end); err != nil {
		return 0, err
	}
	var freed int64
	for _, seg := range s.list[:n] {
		if err := os.Remove(seg.Path); err != nil {
			return freed, fmt.Errorf("release segment: %w", err)
		}
		s.used -= seg.Size
		freed += seg.Size
		s.list = s.list[1:]
	}
	s.dirDirty = true
	return freed, nil
}

func (s *segments) infos() []SegmentInfo {
	out := make([]SegmentInfo, len(s.list))
	for i, seg := range s.list {
		out[i] = seg.SegmentInfo
	}
	return out
}

func (s *segments) close() {
	for _, seg := range s.list {
		if seg.finished != nil {
			select {
			case <-seg.finished:
			default:
				close(seg.finished) // nobody will finish it now
			}
		}
		seg.unmap()
		if seg.f != nil {
			seg.f.Close()
			seg.f = nil
		}
	}
}

// scanSegment reads a segment file through, calling fn for every valid
// record. It returns the reader (for the header, position and offset of the
// valid prefix) and the error that ended the scan: nil for a sealed segment,
// journal.ErrNotSealed for one that simply ends, another error for damage.
func scanSegment(path string, fn func(*journal.Record) error) (*journal.Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd, err := journal.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var rec journal.Record
	for {
		err := rd.Next(&rec)
		if err == io.EOF {
			return rd, nil
		}
		if err != nil {
			return rd, err
		}
		if fn != nil {
			if err := fn(&rec); err != nil {
				return rd, err
			}
		}
	}
}
