package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
)

// Options configure a Spool.
type Options struct {
	// Quota is the number of bytes all spooled segments may take together.
	// Required: the right size depends on the disk and the WAN outage to
	// ride out, so there is no default.
	Quota int64
	// Logger receives what Open repaired. Nil discards.
	Logger *slog.Logger
}

// SegmentRef names one spooled segment.
type SegmentRef struct {
	Path     string
	FirstSeq uint64
	LastSeq  uint64
	Size     int64
	Epoch    uint64
}

// MachineStats describe one machine's queue.
type MachineStats struct {
	Segments int
	Bytes    int64
	Tail     journal.Pos // after the last spooled segment; the next Put continues here
	Released journal.Pos // after the last released segment
	Epoch    uint64      // highest epoch accepted
}

// Spool is a durable per-machine queue of segments. It is safe for
// concurrent use.
type Spool struct {
	dir   string
	quota int64
	log   *slog.Logger

	mu       sync.Mutex // guards used, machines and every machine's state
	used     int64
	machines map[string]*machine
}

type machine struct {
	id  string
	raw [16]byte
	dir string

	// wmu serialises Put and Release of this machine, so that a slow
	// fsync of one machine holds up neither other machines nor readers.
	wmu sync.Mutex

	// Guarded by Spool.mu.
	segs     []segment // sorted by first seq, contiguous
	bytes    int64
	released journal.Pos
	epoch    uint64
	seen     bool // the position is known: a segment or a state file exists
}

type segment struct {
	prev  journal.Pos // the position the segment continues from
	pos   journal.Pos // the position after its last record
	epoch uint64
	size  int64
}

func (g segment) first() uint64 { return g.prev.Seq + 1 }

func (m *machine) tail() journal.Pos {
	if n := len(m.segs); n > 0 {
		return m.segs[n-1].pos
	}
	return m.released
}

func (m *machine) ref(g segment) SegmentRef {
	return SegmentRef{
		Path:     filepath.Join(m.dir, segName(g.first())),
		FirstSeq: g.first(),
		LastSeq:  g.pos.Seq,
		Size:     g.size,
		Epoch:    g.epoch,
	}
}

// known returns a position of the machine with the given sequence number
// whose chain the spool knows: the released position or a boundary of a
// spooled segment.
func (m *machine) known(seq uint64) (journal.Pos, bool) {
	if m.released.Seq == seq {
		return m.released, true
	}
	for _, g := range m.segs {
		if g.prev.Seq == seq {
			return g.prev, true
		}
		if g.pos.Seq == seq {
			return g.pos, true
		}
	}
	return journal.Pos{}, false
}

// Put makes seg, the bytes of one sealed segment of machineID, durable in
// the spool and returns the position after it. When Put returns nil the
// segment survives a crash and the agent may drop it.
//
// A segment the spool already holds or has released (by sequence number) is
// accepted again without writing and returns the same position. A segment
// that does not continue from the machine's tail returns a
// *journal.PosMismatchError (wrapped); one from an older epoch ErrFenced;
// one that does not fit in the quota ErrFull. In each of those cases
// nothing was written.
func (s *Spool) Put(ctx context.Context, machineID string, seg []byte) (journal.Pos, error) {
	if err := ctx.Err(); err != nil {
		return journal.Pos{}, err
	}
	id, raw, err := parseMachineID(machineID)
	if err != nil {
		return journal.Pos{}, err
	}
	hdr, tr, err := validate(bytes.NewReader(seg))
	if err != nil {
		return journal.Pos{}, fmt.Errorf("spool put: machine %s: %w", id, err)
	}
	if hdr.MachineID != raw {
		return journal.Pos{}, fmt.Errorf("spool put: %w: segment of machine %s put as %s", ErrMachineID, canonicalID(hdr.MachineID), id)
	}
	g := segment{prev: hdr.Prev(), pos: tr.Pos(), epoch: hdr.Epoch, size: int64(len(seg))}

	m := s.machine(id, raw)
	m.wmu.Lock()
	defer m.wmu.Unlock()

	pos, done, err := s.admit(m, g, tr.Count)
	if err != nil || done {
		return pos, err
	}
	path := filepath.Join(m.dir, segName(g.first()))
	if err := s.write(ctx, m, path, seg); err != nil {
		os.Remove(path) // ENOENT unless the directory sync failed after the rename
		s.mu.Lock()
		s.used -= g.size
		s.mu.Unlock()
		return journal.Pos{}, fmt.Errorf("spool put: machine %s segment %d..%d: %w", id, g.first(), g.pos.Seq, err)
	}
	s.mu.Lock()
	m.segs = append(m.segs, g)
	m.bytes += g.size
	m.epoch = max(m.epoch, g.epoch)
	m.seen = true
	s.mu.Unlock()
	return g.pos, nil
}

// admit decides what Put does with g. done reports that there is nothing to
// write (a duplicate, or an empty segment); otherwise g's size has been
// reserved against the quota.
func (s *Spool) admit(m *machine, g segment, count uint64) (pos journal.Pos, done bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g.epoch < m.epoch {
		return pos, false, fmt.Errorf("spool put: machine %s segment %d..%d: %w: epoch %d, spool has accepted epoch %d",
			m.id, g.first(), g.pos.Seq, ErrFenced, g.epoch, m.epoch)
	}
	tail := m.tail()
	if m.seen && g.pos.Seq <= tail.Seq {
		return s.duplicate(m, g)
	}
	if m.seen {
		if err := (&journal.Header{FirstSeq: g.first(), PrevChain: g.prev.Chain}).Continues(tail); err != nil {
			return pos, false, fmt.Errorf("spool put: machine %s segment %d..%d: %w", m.id, g.first(), g.pos.Seq, err)
		}
	}
	if count == 0 {
		// Nothing to forward; storing it would also clash with the name
		// of the next segment, which starts at the same sequence number.
		return g.prev, true, nil
	}
	if s.used+g.size > s.quota {
		return pos, false, fmt.Errorf("spool put: machine %s segment %d..%d of %d bytes: %w (%d of %d bytes used)",
			m.id, g.first(), g.pos.Seq, g.size, ErrFull, s.used, s.quota)
	}
	s.used += g.size
	return pos, false, nil
}

// duplicate handles a segment that ends at or before the tail: accepted if
// its ends agree with what the spool knows, a fork if they do not. Called
// with s.mu held.
func (s *Spool) duplicate(m *machine, g segment) (journal.Pos, bool, error) {
	wrap := func(err error) error {
		return fmt.Errorf("spool put: machine %s segment %d..%d: %w", m.id, g.first(), g.pos.Seq, err)
	}
	if k, ok := m.known(g.pos.Seq); ok {
		if k != g.pos {
			return journal.Pos{}, false, wrap(&journal.PosMismatchError{Want: k, Got: g.pos})
		}
		return g.pos, true, nil
	}
	if k, ok := m.known(g.prev.Seq); ok && k != g.prev {
		return journal.Pos{}, false, wrap(&journal.PosMismatchError{Want: k, Got: g.prev})
	}
	if g.pos.Seq < m.released.Seq {
		// Released long ago: its chain can no longer be checked, and
		// applying is idempotent by sequence number.
		return g.pos, true, nil
	}
	// It overlaps spooled segments without matching their boundaries:
	// not a retry of what the spool holds.
	return journal.Pos{}, false, wrap(&journal.PosMismatchError{Want: m.tail(), Got: g.prev})
}

func (s *Spool) write(ctx context.Context, m *machine, path string, seg []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.ensureDir(m); err != nil {
		return err
	}
	return writeAtomic(path, seg, ctx.Err)
}

// ensureDir creates the machine's directory, durably, if it is missing.
func (s *Spool) ensureDir(m *machine) error {
	if err := os.Mkdir(m.dir, 0o700); err == nil {
		return fsutil.SyncDir(s.dir)
	} else if !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// machine returns the state of id, creating it empty.
func (s *Spool) machine(id string, raw [16]byte) *machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.machines[id]
	if !ok {
		m = &machine{id: id, raw: raw, dir: filepath.Join(s.dir, id)}
		s.machines[id] = m
	}
	return m
}

func (s *Spool) lookup(machineID string) (*machine, bool) {
	id, _, err := parseMachineID(machineID)
	if err != nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.machines[id]
	return m, ok
}

// Next returns the first spooled segment of machineID whose first sequence
// number is greater than after, for a forwarder that has sent everything up
// to after. ok is false when there is none (yet).
func (s *Spool) Next(machineID string, after uint64) (ref SegmentRef, ok bool) {
	m, ok := s.lookup(machineID)
	if !ok {
		return SegmentRef{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := sort.Search(len(m.segs), func(i int) bool { return m.segs[i].first() > after })
	if i == len(m.segs) {
		return SegmentRef{}, false
	}
	return m.ref(m.segs[i]), true
}

// ReadSegment returns the bytes of a spooled segment, as Put received them.
// A segment released in the meantime returns an error wrapping
// fs.ErrNotExist.
func (s *Spool) ReadSegment(ref SegmentRef) ([]byte, error) {
	b, err := os.ReadFile(ref.Path)
	if err != nil {
		return nil, fmt.Errorf("spool read segment: %w", err)
	}
	if int64(len(b)) != ref.Size {
		return nil, fmt.Errorf("spool read segment %s: %w: %d bytes, spooled %d", ref.Path, ErrDamaged, len(b), ref.Size)
	}
	return b, nil
}

// Release deletes the spooled segments of machineID whose last sequence
// number is at most upto (the master target acknowledged them), durably.
// The position after the last one deleted becomes the released position:
// it is persisted, later duplicates of released segments are recognised,
// and the next Put must continue from it once nothing is spooled. A
// segment that upto ends inside of is kept.
func (s *Spool) Release(ctx context.Context, machineID string, upto uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m, ok := s.lookup(machineID)
	if !ok {
		return nil
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()

	s.mu.Lock()
	k := sort.Search(len(m.segs), func(i int) bool { return m.segs[i].pos.Seq > upto })
	gone := append([]segment(nil), m.segs[:k]...)
	epoch := m.epoch
	s.mu.Unlock()
	if k == 0 {
		return nil
	}
	released := gone[k-1].pos
	// The state file first: a crash after it and before the removals is
	// finished by Open, which deletes segments at or before the released
	// position.
	if err := writeState(m.dir, state{Released: released, Epoch: epoch}, ctx.Err); err != nil {
		return fmt.Errorf("spool release: machine %s up to %d: %w", m.id, upto, err)
	}
	var errs []error
	var freed int64
	for _, g := range gone {
		if err := os.Remove(filepath.Join(m.dir, segName(g.first()))); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		freed += g.size
	}
	errs = append(errs, fsutil.SyncDir(m.dir))

	// The state file is the truth now, whether or not every removal
	// succeeded: a leftover file is removed at the next Open.
	s.mu.Lock()
	m.segs = m.segs[k:]
	m.bytes -= freed
	s.used -= freed
	m.released = released
	s.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spool release: machine %s up to %d: %w", m.id, upto, err)
	}
	return nil
}

// Stats returns every machine's queue, by machine id.
func (s *Spool) Stats() map[string]MachineStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]MachineStats, len(s.machines))
	for id, m := range s.machines {
		if !m.seen {
			continue
		}
		out[id] = MachineStats{Segments: len(m.segs), Bytes: m.bytes, Tail: m.tail(), Released: m.released, Epoch: m.epoch}
	}
	return out
}

// Usage returns the bytes spooled over all machines and the quota.
func (s *Spool) Usage() (used, quota int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.quota
}

// validate reads a whole segment: header, every record, trailer.
func validate(r io.Reader) (journal.Header, journal.Trailer, error) {
	jr, err := journal.NewReader(r)
	if err != nil {
		return journal.Header{}, journal.Trailer{}, err
	}
	var rec journal.Record
	for {
		err := jr.Next(&rec)
		if err == io.EOF {
			break
		}
		if err != nil {
			return journal.Header{}, journal.Trailer{}, err
		}
	}
	tr, _ := jr.Trailer()
	return jr.Header(), tr, nil
}
