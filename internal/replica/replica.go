package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/retention"
)

// DiskInfo names one disk of the machine. Disks are indexed in the
// journal's records by their position in the list given to Create.
type DiskInfo struct {
	Name string `json:"name"` // file name of its images: 1-64 of A-Z a-z 0-9 . _ -
	Size int64  `json:"size"` // bytes
}

// Options configure Open.
type Options struct {
	// Dir is the replica's directory, made by Create. Required.
	Dir string
	// Retention is the policy Prune applies. Only Prune needs it, and it
	// refuses an invalid one (retention.Policy.Validate); there is no
	// default, as the right history depends on the machine.
	Retention retention.Policy
	// Logger receives what Open repaired. Nil discards.
	Logger *slog.Logger
	// Now is the clock for AppliedAt, Point.Applied and retention. Nil
	// means time.Now.
	Now func() time.Time
}

// Point is a recovery point: the state of every disk of the machine after
// the records before a bookmark.
type Point struct {
	ID            uint64    `json:"id"`      // local, monotonic, never reused; 0 is never a point's id
	Seq           uint64    `json:"seq"`     // journal sequence number of the bookmark
	Chain         uint64    `json:"chain"`   // journal chain after the bookmark: with Seq, its journal.Pos
	Log           uint64    `json:"log"`     // log index of the stored segment holding the bookmark
	Time          time.Time `json:"time"`    // the bookmark's time at the agent
	Applied       time.Time `json:"applied"` // when the replica applied it
	Label         string    `json:"label,omitempty"`
	AppConsistent bool      `json:"app_consistent"`
	Tags          []string  `json:"tags,omitempty"`
	InUse         bool      `json:"in_use"` // a View holds it (not persisted)
}

// Pos is the point's journal position.
func (p Point) Pos() journal.Pos { return journal.Pos{Seq: p.Seq, Chain: p.Chain} }

func (p Point) at() logPos { return logPos{Log: p.Log, Seq: p.Seq} }

// Status describes the replica.
type Status struct {
	MachineID      string      `json:"machine_id"`
	Disks          []DiskInfo  `json:"disks"`
	Epoch          uint64      `json:"epoch"`
	Applied        journal.Pos `json:"applied"`          // the apply frontier
	AppliedAt      time.Time   `json:"applied_at"`       // when the last Apply finished
	LastRecordTime time.Time   `json:"last_record_time"` // agent time of the last applied record
	Consistent     bool        `json:"consistent"`       // the frontier is a consistent state
	Copying        bool        `json:"copying"`          // BeginCopy without EndCopy: Apply refuses segments
	Generation     uint64      `json:"generation"`       // changes whenever current may have changed; not persisted
	Segments       int         `json:"segments"`         // stored segments
	Bytes          int64       `json:"bytes"`            // stored segment bytes
	Points         int         `json:"points"`
	SeedLeft       int64       `json:"seed_left"` // bytes of the lazy base's unseeded blocks (Seed); 0 when the base is not lazy
	InPlace        bool        `json:"in_place"`  // made by CreateInPlace: current writes into files outside the replica directory
}

// Replica is the replica store of one machine. Its methods are safe for
// concurrent use: Apply, Rebase, Tag, Prune and the copy methods are
// serialised; Status, Points, OpenPoint and BlockMap run alongside them,
// and Seed between them, a chunk at a time.
type Replica struct {
	dir  string
	o    Options
	log  *slog.Logger
	id   [16]byte
	lock *os.File
	cur  []image // current/<disk>.img
	base []image // base/<disk>.img

	// generation changes whenever current may have changed (after the
	// change): a cache of anything computed from current keys on it. From 1
	// at Open; not persisted.
	generation atomic.Uint64

	// Lock order: pmu, smu, wmu, curMu, filesMu, mu.
	pmu     sync.Mutex   // one Prune at a time: its base roll runs without wmu
	smu     sync.Mutex   // one Seed at a time; guards seedAt
	wmu     sync.Mutex   // serialises changes of the state; Seed takes it per chunk
	filesMu sync.RWMutex // OpenPoint opens segment files under RLock; Prune deletes them under Lock
	curMu   sync.RWMutex // Apply writes current under Lock; live reads take RLock

	// Guarded by curMu (seeded: see seedMap).
	seeded   []*seedMap  // per disk, the lazy base's seeded bitmaps; nil if the base is not lazy
	unsynced []int64     // per disk, bytes WriteCopy wrote to current since writeback was last started
	direct   directFiles // O_DIRECT descriptors of the images, for copies and seeding

	seedLeft atomic.Int64 // bytes of unseeded blocks; changed with the bits, under curMu
	seedAt   seedCursor   // where the next Seed starts

	mu     sync.Mutex // guards the fields below
	st     *state     // as persisted; replaced, never modified in place
	pins   map[uint64]int
	closed bool
	broken error // set when work was left half done; mutators refuse
}

type image struct {
	f *os.File
	b *nbd.FileBackend
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// Open opens the replica in o.Dir and repairs what a crash left: it removes
// temporary files, re-applies a stored segment whose apply was not
// recorded (or removes it if it does not continue), finishes an
// interrupted base roll, and deletes segments a prune had released. After
// Open, every segment an Apply acknowledged is applied and no half-applied
// segment is visible. Only one Replica may have a directory open at a time.
func Open(ctx context.Context, o Options) (*Replica, error) {
	if o.Dir == "" {
		return nil, errors.New("replica open: Options.Dir is required")
	}
	r := &Replica{dir: o.Dir, o: o, log: o.Logger, pins: make(map[uint64]int)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if err := r.open(ctx); err != nil {
		r.release()
		return nil, fmt.Errorf("replica open %s: %w", o.Dir, err)
	}
	return r, nil
}

func (r *Replica) open(ctx context.Context) error {
	lock, err := lockDir(r.dir)
	if err != nil {
		return err
	}
	r.lock = lock
	st, err := loadState(r.dir)
	if err != nil {
		return err
	}
	_, r.id, _ = parseMachineID(st.MachineID)
	r.st = st
	if err := r.removeTemps(); err != nil {
		return err
	}
	if err := checkCurrentLinks(r.dir, st); err != nil {
		return err
	}
	if r.cur, err = openImages(filepath.Join(r.dir, currentDir), st.Disks); err != nil {
		return err
	}
	if r.base, err = openImages(filepath.Join(r.dir, baseDir), st.Disks); err != nil {
		return err
	}
	r.unsynced = make([]int64, len(st.Disks))
	r.generation.Store(1)
	if err := r.loadSeeded(); err != nil {
		return err
	}
	return r.recover(ctx)
}

func openImages(dir string, disks []DiskInfo) ([]image, error) {
	imgs := make([]image, 0, len(disks))
	for _, d := range disks {
		path := filepath.Join(dir, d.Name+imageExt)
		f, err := os.OpenFile(path, os.O_RDWR, 0) // never O_CREATE: a current image may be a link to a file outside dir
		if err != nil {
			closeImages(imgs)
			return nil, fmt.Errorf("%w: %w", ErrDamaged, linkTarget(path, err))
		}
		b, err := nbd.NewFileBackend(f)
		if err == nil && b.Size() != d.Size {
			err = fmt.Errorf("%w: %s is %d bytes, disk %s has %d", ErrDamaged, path, b.Size(), d.Name, d.Size)
		}
		if err != nil {
			f.Close()
			closeImages(imgs)
			return nil, err
		}
		imgs = append(imgs, image{f: f, b: b})
	}
	return imgs, nil
}

func closeImages(imgs []image) error {
	var errs []error
	for _, im := range imgs {
		errs = append(errs, im.f.Close())
	}
	return errors.Join(errs...)
}

// release closes every file the replica holds, writing nothing: what a
// process that dies does.
func (r *Replica) release() error {
	err := errors.Join(r.direct.close(), closeImages(r.cur), closeImages(r.base), closeSeedMaps(r.seeded))
	r.cur, r.base, r.seeded = nil, nil, nil
	if r.lock != nil {
		err = errors.Join(err, r.lock.Close())
		r.lock = nil
	}
	return err
}

// Close releases the replica's files after any Apply, Rebase or Prune in
// progress has returned. Views opened from it must be closed first; a
// latest-state view returns ErrClosed after Close. Close writes nothing:
// everything acknowledged is already durable.
func (r *Replica) Close() error {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.curMu.Lock()
	defer r.curMu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.closed = true
	return r.release()
}

// snapshot returns the current state and an error if the replica is closed
// (or, with forWrite, broken). The state must not be modified.
func (r *Replica) snapshot(forWrite bool) (*state, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return nil, ErrClosed
	case forWrite && r.broken != nil:
		return nil, fmt.Errorf("%w: %w", ErrBroken, r.broken)
	}
	return r.st, nil
}

// commit makes st the in-memory state; it must already be persisted.
func (r *Replica) commit(st *state) {
	r.mu.Lock()
	r.st = st
	r.mu.Unlock()
}

// fail marks the replica broken after work was left half done, and returns
// err for the caller.
func (r *Replica) fail(err error) error {
	r.mu.Lock()
	if r.broken == nil {
		r.broken = err
	}
	r.mu.Unlock()
	return err
}

// Status returns the replica's status.
func (r *Replica) Status() Status {
	r.mu.Lock()
	st := r.st
	r.mu.Unlock()
	s := Status{
		MachineID:  st.MachineID,
		Disks:      slices.Clone(st.Disks),
		Epoch:      st.Epoch,
		Applied:    st.Applied,
		AppliedAt:  st.AppliedAt,
		Consistent: st.Consistent,
		Copying:    st.Copying,
		Generation: r.generation.Load(),
		Segments:   len(st.Log),
		Bytes:      st.bytes(),
		Points:     len(st.Points),
		SeedLeft:   r.seedLeft.Load(),
		InPlace:    st.InPlace,
	}
	if st.LastRecord != 0 {
		s.LastRecordTime = time.Unix(0, st.LastRecord).UTC()
	}
	return s
}

// Points returns the retained recovery points, oldest first.
func (r *Replica) Points() []Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	pts := make([]Point, len(r.st.Points))
	for i, p := range r.st.Points {
		p.Tags = slices.Clone(p.Tags)
		p.InUse = r.pins[p.ID] > 0
		pts[i] = p
	}
	return pts
}

// Tag adds tag to point id, durably (a no-op if it has it already).
// Retention carries tags; it does not interpret them.
func (r *Replica) Tag(id uint64, tag string) error {
	if tag == "" || len(tag) > 64 {
		return fmt.Errorf("replica tag: tag %q: allowed: 1 to 64 bytes", tag)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	cur, err := r.snapshot(true)
	if err != nil {
		return fmt.Errorf("replica tag: %w", err)
	}
	i, ok := cur.point(id)
	if !ok {
		return fmt.Errorf("replica tag: point %d: %w", id, ErrNotFound)
	}
	if slices.Contains(cur.Points[i].Tags, tag) {
		return nil
	}
	st := cur.clone()
	st.Points[i].Tags = append(st.Points[i].Tags, tag)
	if err := saveState(r.dir, st); err != nil {
		return fmt.Errorf("replica tag: %w", err)
	}
	r.commit(st)
	return nil
}

// removeTemps removes the temporary files of writes a crash interrupted.
func (r *Replica) removeTemps() error {
	for _, d := range []string{r.dir, filepath.Join(r.dir, segmentsDir), filepath.Join(r.dir, currentDir), filepath.Join(r.dir, baseDir)} {
		ents, err := os.ReadDir(d)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDamaged, err)
		}
		removed := false
		for _, e := range ents {
			if filepath.Ext(e.Name()) != tmpExt {
				continue
			}
			if err := os.Remove(filepath.Join(d, e.Name())); err != nil {
				return err
			}
			r.log.Info("replica: removed unfinished write", "machine", r.st.MachineID, "path", filepath.Join(d, e.Name()))
			removed = true
		}
		if removed {
			if err := fsutil.SyncDir(d); err != nil {
				return err
			}
		}
	}
	return nil
}
