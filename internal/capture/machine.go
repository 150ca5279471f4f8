package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
)

// Defaults for Options. They are the one place these numbers live.
const (
	DefaultSegmentSize      = 16 << 20
	DefaultJournalLimit     = 1 << 30
	DefaultBookmarkInterval = 10 * time.Second
	DefaultChunkSize        = 64 << 10
	DefaultExtentSize       = 4 << 20
	DefaultActivityExtents  = 1024
	DefaultMaxRange         = 32 << 20 // NBD's largest request

	maxDisks = 256
)

// DiskSpec is one disk of the machine.
type DiskSpec struct {
	Name    string
	Backend nbd.Backend // the disk the journal fronts; capture is its only writer
}

// Options configure a Machine. Zero values take the defaults above.
type Options struct {
	Dir   string // state directory; created if missing
	Disks []DiskSpec

	SegmentSize  int64 // a segment is sealed when it would grow past this
	JournalLimit int64 // bytes of journal kept at most; past it, writes go to the dirty bitmap
	// BookmarkInterval is the crash-consistent bookmark interval; negative disables them.
	BookmarkInterval time.Duration
	ChunkSize        int64 // dirty bitmap granularity
	ExtentSize       int64 // activity log granularity
	ActivityExtents  int   // activity log slots
	// MaxRange is the largest range one journal record covers: writes,
	// zeroes and trims beyond it are split, so the activity log can always
	// hold one record's extents.
	MaxRange int64

	// MachineID and Epoch start a new journal (a directory without one)
	// with that machine id and epoch instead of a random id and epoch 1:
	// a capture that continues another site's machine (reverse
	// replication at the master target that failed it over). An existing
	// journal must carry the same machine id.
	MachineID string
	Epoch     uint64

	Logger *slog.Logger
	Now    func() time.Time
}

func (o *Options) setDefaults() error {
	if o.Dir == "" {
		return errors.New("capture: Options.Dir is required")
	}
	if len(o.Disks) == 0 {
		return errors.New("capture: a machine needs at least one disk")
	}
	if len(o.Disks) > maxDisks {
		return fmt.Errorf("capture: %d disks, at most %d", len(o.Disks), maxDisks)
	}
	names := map[string]bool{}
	for i, d := range o.Disks {
		if d.Name == "" || d.Backend == nil {
			return fmt.Errorf("capture: disk %d needs a name and a backend", i)
		}
		if names[d.Name] {
			return fmt.Errorf("capture: disk name %q used twice", d.Name)
		}
		names[d.Name] = true
	}
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.SegmentSize, DefaultSegmentSize)
	def(&o.JournalLimit, DefaultJournalLimit)
	def(&o.ChunkSize, DefaultChunkSize)
	def(&o.ExtentSize, DefaultExtentSize)
	def(&o.MaxRange, DefaultMaxRange)
	if o.BookmarkInterval == 0 {
		o.BookmarkInterval = DefaultBookmarkInterval
	}
	if o.ActivityExtents == 0 {
		o.ActivityExtents = DefaultActivityExtents
	}
	if o.SegmentSize < 4096 || o.JournalLimit < 2*(journal.HeaderSize+journal.TrailerSize) {
		return fmt.Errorf("capture: segment size %d or journal limit %d too small", o.SegmentSize, o.JournalLimit)
	}
	if o.ChunkSize < 4096 || o.ChunkSize&(o.ChunkSize-1) != 0 || o.ExtentSize < o.ChunkSize || o.ExtentSize%o.ChunkSize != 0 {
		return fmt.Errorf("capture: chunk size %d must be a power of two >= 4096 and divide extent size %d", o.ChunkSize, o.ExtentSize)
	}
	if need := 2 * (o.MaxRange/o.ExtentSize + 2); int64(o.ActivityExtents) < need {
		return fmt.Errorf("capture: %d activity log extents of %d bytes cannot hold two ranges of %d bytes; use at least %d",
			o.ActivityExtents, o.ExtentSize, o.MaxRange, need)
	}
	if o.MaxRange > journal.MaxPayload {
		return fmt.Errorf("capture: max range %d is over the journal's record limit %d", o.MaxRange, journal.MaxPayload)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// State is the capture state a machine is in.
type State string

const (
	StateJournaling State = "journaling" // every write is in the journal
	StateOverflow   State = "overflow"   // the journal is full; writes mark the dirty bitmap
	StateResyncing  State = "resyncing"  // dirty chunks are being appended to the journal
	StateFailed     State = "failed"     // a journal or disk sync failed; writes are refused
)

// Stats is a snapshot of a machine's capture counters.
type Stats struct {
	MachineID    string      `json:"machine_id"`
	Epoch        uint64      `json:"epoch"`
	State        State       `json:"state"`
	Pos          journal.Pos `json:"pos"`
	LastBookmark uint64      `json:"last_bookmark_seq"`
	Writes       uint64      `json:"writes"`
	WriteBytes   uint64      `json:"write_bytes"`
	Zeroes       uint64      `json:"zeroes"`
	Trims        uint64      `json:"trims"`
	Bookmarks    uint64      `json:"bookmarks"`
	Flushes      uint64      `json:"flushes"`
	SyncRounds   uint64      `json:"sync_rounds"`
	JournalBytes int64       `json:"journal_bytes"`
	JournalLimit int64       `json:"journal_limit"`
	Segments     int         `json:"segments"`
	DirtyBytes   int64       `json:"dirty_bytes"`
	ALSyncs      uint64      `json:"activity_log_syncs"`
	// SegmentsAhead counts segments started from one prepared ahead of
	// need; SegmentsInline those made on the write path because none was
	// ready (a sign the preparer cannot keep up).
	SegmentsAhead  uint64 `json:"segments_prepared_ahead"`
	SegmentsInline uint64 `json:"segments_made_inline"`
	Recovered      string `json:"recovered,omitempty"` // what Open had to recover, if anything
	// Frozen says why writes are refused (Freeze), when they are.
	Frozen string `json:"frozen,omitempty"`
}

// Machine captures the writes of one machine's disks into one journal.
type Machine struct {
	o     Options
	log   *slog.Logger
	id    [16]byte
	st    state
	disks []*Disk

	mu       sync.Mutex // the write lock: journal appends, in order
	inflight inflight   // disk operations in flight, ordered where they overlap
	// beforeApply, set only by tests, runs between the journal append and
	// the disk operation to widen the window in which they can reorder.
	beforeApply func()
	seg         *segments
	bits        *bitmap
	al          *activityLog
	writeGen    uint64 // generation of the newest mutation
	syncedGen   uint64 // newest generation a completed sync made durable
	failed      error
	frozen      string        // why writes are refused (Freeze); "" when they are not
	hold        chan struct{} // closed when held writes may go on (Hold); nil: not held
	sinceBM     uint64        // records since the last bookmark
	lastBM      uint64
	stats       Stats
	resyncing   bool
	holdBM      bool // StartResync until MarkDirty: no bookmarks
	flushCount  atomic.Uint64

	sync groupSync

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	kick     chan struct{} // wakes the resync loop
	sealKick chan struct{} // wakes the sealer
	closed   bool
}

// Open opens (or creates) the machine's state in o.Dir, recovers from an
// unclean stop if needed, and starts the bookmark and resync loops.
func Open(ctx context.Context, o Options) (*Machine, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "journal"), 0o700); err != nil {
		return nil, err
	}
	m := &Machine{o: o, log: o.Logger, kick: make(chan struct{}, 1)}
	if err := m.recover(ctx); err != nil {
		m.closeFiles()
		return nil, err
	}
	m.sync.init(m.syncRound)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	// Two ready segments at most (one here, one held by the preparer):
	// each is mapped and populated, so each counts in the agent's memory;
	// a third bought nothing measurable.
	m.seg.spares = make(chan *segment, 1)
	m.sealKick = make(chan struct{}, 1)
	m.seg.kickSealer = func() {
		select {
		case m.sealKick <- struct{}{}:
		default:
		}
	}
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.seg.makeSpares(m.ctx, m.log) }()
	go m.sealer()
	if o.BookmarkInterval > 0 {
		m.wg.Add(1)
		go m.bookmarkLoop()
	}
	m.wg.Add(1)
	go m.resyncLoop()
	if m.bits.count.Load() > 0 {
		m.kickResync()
	}
	return m, nil
}

// Disks returns the machine's disks, in the order of Options.Disks; each is
// an nbd.Backend to export.
func (m *Machine) Disks() []*Disk { return m.disks }

// ID is the machine id, stable across runs.
func (m *Machine) ID() string { return m.st.MachineID }

// mutate journals rec (or marks the dirty bitmap when the journal is full)
// under the write lock, then applies it to the disk outside the lock, after
// any earlier overlapping operation (see inflight).
func (m *Machine) mutate(d *Disk, rec *journal.Record, apply func() error) error {
	if rec.Length == 0 {
		return nil
	}
	off, end := int64(rec.Offset), int64(rec.End())
	pcrc := journal.PayloadCRC(rec.Data)
	m.mu.Lock()
	if m.failed != nil {
		m.mu.Unlock()
		return m.failed
	}
	for m.hold != nil && m.frozen == "" && m.failed == nil {
		ch := m.hold
		m.mu.Unlock()
		<-ch
		m.mu.Lock()
	}
	if m.failed != nil {
		m.mu.Unlock()
		return m.failed
	}
	if m.frozen != "" {
		why := m.frozen
		m.mu.Unlock()
		return &FrozenError{Why: why}
	}
	gen, err := m.touchActivity(d.index, off, end-off)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	rec.Disk = uint16(d.index)
	rec.Time = m.o.Now().UnixNano()
	journaled := m.appendLocked(rec, pcrc)
	if !journaled {
		if err := m.bits.mark(d.index, off, end-off); err != nil {
			err = m.fail(err)
			m.mu.Unlock()
			return err
		}
	}
	m.count(rec)
	op := m.inflight.begin(d.index, off, end, gen)
	m.mu.Unlock()

	if m.beforeApply != nil {
		m.beforeApply()
	}
	op.wait()
	err = apply()
	m.inflight.end(op)
	if err != nil && journaled {
		// The journal holds a change the disk may lack: resync the range.
		m.mu.Lock()
		if merr := m.bits.mark(d.index, off, end-off); merr != nil {
			m.fail(merr)
		}
		m.mu.Unlock()
	}
	return err
}

// touchActivity makes the extents of a range hot in the activity log and
// returns the new write generation. Called with m.mu held. When every slot
// holds writes that are not durable yet it syncs in place, still holding
// the lock, so that the freed slots cannot be taken by other writers first:
// Options guarantees that the log has room for any one range.
func (m *Machine) touchActivity(disk int, off, n int64) (uint64, error) {
	if m.failed != nil {
		return 0, m.failed
	}
	gen := m.writeGen + 1
	err := m.al.touch(disk, off, n, gen, m.syncedGen)
	if errors.Is(err, errALFull) {
		if err = m.syncInPlace(); err == nil {
			err = m.al.touch(disk, off, n, gen, m.syncedGen)
		}
	}
	if err != nil {
		return 0, m.fail(err)
	}
	m.writeGen = gen
	return gen, nil
}

// syncInPlace makes every record and disk write so far durable, with m.mu
// held. It only syncs: closing synced segments is left to the sync
// goroutine, which does that under m.mu too, so the two never race on a
// file.
func (m *Machine) syncInPlace() error {
	// Disk operations in flight finish without the lock; wait for them so
	// that the disk flush below covers every write so far.
	m.inflight.waitIdle()
	for _, s := range m.seg.takeToFinish() {
		if err := s.finishSeal(); err != nil {
			return err
		}
	}
	dirDirty, bitsDirty := m.seg.dirDirty, m.bits.dirty
	m.seg.dirDirty, m.bits.dirty = false, false
	if err := m.syncFiles(snapshotSync(m.seg.syncList()), dirDirty, bitsDirty, true); err != nil {
		return err
	}
	m.syncedGen = m.writeGen
	return nil
}

func (m *Machine) count(rec *journal.Record) {
	switch rec.Kind {
	case journal.KindWrite:
		m.stats.Writes++
		m.stats.WriteBytes += rec.Length
	case journal.KindZero:
		m.stats.Zeroes++
	case journal.KindTrim:
		m.stats.Trims++
	}
}

// appendLocked appends rec to the journal if it fits. A record that does not
// fit (or a journal write error) is not an error for the caller: it returns
// false, and the caller marks the dirty bitmap.
func (m *Machine) appendLocked(rec *journal.Record, payloadCRC uint32) bool {
	if m.bits.count.Load() > 0 && !m.resyncing {
		// Overflowed and waiting for room: every write goes to the bitmap
		// until resync starts, so the journal does not fill with a few
		// small writes that happen to fit.
		return false
	}
	if !m.seg.fits(int64(journal.EncodedSize(rec))) {
		m.enterOverflow("journal limit reached")
		return false
	}
	if err := m.seg.append(rec, payloadCRC); err != nil {
		m.enterOverflow(err.Error())
		return false
	}
	m.sinceBM++
	return true
}

func (m *Machine) enterOverflow(why string) {
	if m.bits.count.Load() == 0 && !m.resyncing {
		m.log.Warn("journal overflow: tracking writes in the dirty bitmap",
			"machine", m.st.MachineID, "reason", why, "journal_bytes", m.seg.used, "journal_limit", m.seg.limit)
	}
}

// fail makes the machine refuse writes: after a failed fsync the page cache
// cannot be trusted to hold what was written.
func (m *Machine) fail(err error) error {
	if m.failed == nil {
		m.failed = fmt.Errorf("capture failed, writes refused (restart the agent to recover): %w", err)
		m.log.Error("capture failed", "machine", m.st.MachineID, "err", err)
	}
	return m.failed
}

// AdoptEpoch continues the journal at epoch e, newer than its own: the
// machine failed back to these disks, which the master target of the
// reverse direction wrote in place while writes were refused here. What
// the journal holds belongs to the old epoch (a master target refuses it
// now), so it is dropped; the caller compares the disks with the replica
// (a resync) before trusting it again. An epoch not newer is refused.
func (m *Machine) AdoptEpoch(e uint64) error {
	if err := m.SealActive(); err != nil {
		return err
	}
	if err := m.Sync(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e <= m.st.Epoch {
		return fmt.Errorf("capture: adopt epoch %d: the journal is at epoch %d already", e, m.st.Epoch)
	}
	if _, err := m.seg.release(math.MaxUint64, func(end journal.Pos) error {
		m.st.Released = end
		return nil
	}); err != nil {
		return m.fail(err)
	}
	if len(m.seg.list) > 0 {
		return fmt.Errorf("capture: adopt epoch %d: %d segments are not durable yet; try again", e, len(m.seg.list))
	}
	old := m.st.Epoch
	m.st.Epoch = e
	m.seg.hdr.Epoch = e
	if err := saveState(m.o.Dir, &m.st); err != nil {
		return m.fail(err)
	}
	m.log.Info("journal continues at a new epoch; the old epoch's records were dropped", "machine", m.st.MachineID, "epoch", e, "from_epoch", old)
	return nil
}

// Hold makes writes wait from now on, until Unhold or for at most max:
// a write journaled before Hold returns is in the journal, and no write
// is journaled (so none is acknowledged) until the hold ends. Machines
// that hold together and then bookmark share a consistent cut: the
// multi-machine consistent points of a recovery plan (a barrier across
// agents). Holding a held machine extends nothing.
func (m *Machine) Hold(max time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hold != nil {
		return
	}
	ch := make(chan struct{})
	m.hold = ch
	time.AfterFunc(max, func() { m.unhold(ch) })
}

// Unhold ends a Hold; held writes go on.
func (m *Machine) Unhold() {
	m.mu.Lock()
	ch := m.hold
	m.mu.Unlock()
	if ch != nil {
		m.unhold(ch)
	}
}

func (m *Machine) unhold(ch chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hold == ch {
		m.hold = nil
		close(ch)
	}
}

// Held says whether writes are held.
func (m *Machine) Held() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hold != nil
}

// FrozenError is a write refused because the machine is frozen; it
// wraps syscall.EROFS, so NBD clients see EPERM.
type FrozenError struct{ Why string }

func (e *FrozenError) Error() string { return "writes refused: " + e.Why }

// Unwrap makes errors.Is(err, syscall.EROFS) and errors.As to a
// syscall.Errno hold.
func (e *FrozenError) Unwrap() error { return syscall.EROFS }

// Freeze makes the machine refuse every write, trim and zeroing from now
// on (a planned failover: the source machine is stopped, and nothing
// written after the final bookmark could be replicated). Writes already
// accepted are in the journal. Reads and flushes go on. Freezing a
// frozen machine changes only the reason. It lasts until Thaw or Close.
func (m *Machine) Freeze(why string) {
	if why == "" {
		why = "frozen"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.frozen == "" {
		m.log.Info("writes refused from now on", "machine", m.st.MachineID, "why", why)
	}
	m.frozen = why
}

// Thaw accepts writes again after Freeze.
func (m *Machine) Thaw() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.frozen != "" {
		m.log.Info("writes accepted again", "machine", m.st.MachineID, "was", m.frozen)
	}
	m.frozen = ""
}

// Bookmark appends a bookmark and returns its sequence number. It fails
// while the journal is not a consistent prefix (overflow or resync).
func (m *Machine) Bookmark(label string, appConsistent bool) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bookmarkLocked(label, appConsistent)
}

// ErrNotConsistent is returned for a bookmark asked for while the journal
// is not a consistent prefix of the disks' history.
var ErrNotConsistent = errors.New("capture: journal is not consistent (overflow or resync in progress)")

func (m *Machine) bookmarkLocked(label string, app bool) (uint64, error) {
	if m.failed != nil {
		return 0, m.failed
	}
	if m.bits.count.Load() > 0 || m.holdBM {
		return 0, ErrNotConsistent
	}
	rec := journal.Record{Kind: journal.KindBookmark, Data: []byte(label), Time: m.o.Now().UnixNano()}
	if app {
		rec.Flags |= journal.FlagAppConsistent
	}
	if len(rec.Data) > journal.MaxLabel {
		return 0, fmt.Errorf("bookmark label of %d bytes, at most %d", len(rec.Data), journal.MaxLabel)
	}
	if !m.seg.fits(int64(journal.EncodedSize(&rec))) {
		return 0, ErrNotConsistent
	}
	if err := m.seg.append(&rec, journal.PayloadCRC(rec.Data)); err != nil {
		return 0, m.fail(err)
	}
	m.sinceBM = 0
	m.lastBM = rec.Seq
	m.stats.Bookmarks++
	return rec.Seq, nil
}

func (m *Machine) bookmarkLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.o.BookmarkInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		if m.sinceBM > 0 {
			if _, err := m.bookmarkLocked("interval", false); err != nil && !errors.Is(err, ErrNotConsistent) {
				m.log.Warn("interval bookmark", "machine", m.st.MachineID, "err", err)
			}
		}
		m.mu.Unlock()
	}
}

// Sync makes every write completed before the call durable in the journal
// and on the disks. Concurrent calls share fsyncs.
func (m *Machine) Sync() error {
	m.flushCount.Add(1)
	return m.sync.wait(true)
}

// syncRound is one group-commit round, run by the sync goroutine, the only
// goroutine that syncs and closes segment files while the machine runs.
// disks is false for rounds that only make sealed segments durable.
func (m *Machine) syncRound(disks bool) error {
	m.mu.Lock()
	if m.failed != nil {
		m.mu.Unlock()
		return m.failed
	}
	// Writes whose disk operation is still in flight may reach the disk
	// after this round's flush: they do not count as durable yet.
	gen := min(m.writeGen, m.inflight.oldestGen()-1)
	var segs []*segment
	var sealed []bool
	for _, s := range m.seg.syncList() {
		// A journal-only round leaves the active segment alone: syncing it
		// would write back (and write-protect) pages still being filled.
		if disks || s.Sealed {
			segs, sealed = append(segs, s), append(sealed, s.Sealed)
		}
	}
	snap := snapshotSync(segs)
	dirDirty := m.seg.dirDirty
	m.seg.dirDirty = false
	bitsDirty := disks && m.bits.dirty
	if disks {
		m.bits.dirty = false
	}
	m.mu.Unlock()

	err := m.syncFiles(snap, dirDirty, bitsDirty, disks)

	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		return m.fail(err)
	}
	m.seg.markSynced(segs, sealed)
	if disks {
		m.syncedGen = max(m.syncedGen, gen)
		m.stats.SyncRounds++
	}
	return nil
}

// sealer unmaps and cuts segments sealed on the write path, then makes them
// durable, so that a sealed segment is ready to ship soon after it is
// sealed even when no client flushes.
func (m *Machine) sealer() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			m.finishSealed()
			return
		case <-m.sealKick:
		}
		if m.finishSealed() {
			m.sync.kick()
		}
	}
}

// finishSealed runs finishSeal on every segment waiting for it, and reports
// whether there were any.
func (m *Machine) finishSealed() bool {
	m.mu.Lock()
	segs := m.seg.takeToFinish()
	m.mu.Unlock()
	for _, s := range segs {
		if err := s.finishSeal(); err != nil {
			m.mu.Lock()
			m.fail(err)
			m.mu.Unlock()
		}
	}
	return len(segs) > 0
}

// syncTarget is a segment file to sync, as seen under the lock: finished
// is non-nil when it was sealed by a copy, and the sync waits for the
// sealer to cut it first.
type syncTarget struct {
	*segment
	finished chan struct{}
}

// snapshotSync records what syncFiles needs from segs; call it with m.mu
// held, since sealing changes the segments.
func snapshotSync(segs []*segment) []syncTarget {
	out := make([]syncTarget, len(segs))
	for i, s := range segs {
		out[i] = syncTarget{segment: s, finished: s.finished}
	}
	return out
}

func (m *Machine) syncFiles(segs []syncTarget, dirDirty, bitsDirty, disks bool) error {
	for _, s := range segs {
		if s.finished != nil {
			<-s.finished
		}
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", s.Path, err)
		}
	}
	if dirDirty {
		if err := fsutil.SyncDir(m.seg.dir); err != nil {
			return fmt.Errorf("sync journal directory: %w", err)
		}
	}
	if bitsDirty {
		if err := m.bits.f.Sync(); err != nil {
			return fmt.Errorf("sync dirty bitmap: %w", err)
		}
	}
	for _, d := range m.disks {
		if !disks {
			break
		}
		if err := d.back.Flush(context.Background()); err != nil {
			return fmt.Errorf("flush disk %s: %w", d.name, err)
		}
	}
	return nil
}

// syncLocked is a full sync that also closes synced segments, for Close,
// once the sync goroutine has stopped.
func (m *Machine) syncLocked() error {
	segs := m.seg.syncList()
	sealed := make([]bool, len(segs))
	for i, s := range segs {
		sealed[i] = s.Sealed
	}
	if err := m.syncInPlace(); err != nil {
		return m.fail(err)
	}
	m.seg.markSynced(segs, sealed)
	return nil
}

// SealActive seals the active segment so that its records can be shipped.
func (m *Machine) SealActive() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seg.active == nil || m.seg.active.count == 0 {
		return nil
	}
	return m.seg.seal(m.o.Now().UnixNano())
}

// Segments lists the journal's segment files, oldest first.
func (m *Machine) Segments() []SegmentInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seg.infos()
}

// Release drops sealed, durable segments whose records are all at or before
// seq (they were shipped), and resumes resync if the journal was full.
func (m *Machine) Release(seq uint64) error {
	m.mu.Lock()
	freed, err := m.seg.release(seq, func(end journal.Pos) error {
		// Open checks the first retained segment's continuity against this.
		m.st.Released = end
		return saveState(m.o.Dir, &m.st)
	})
	m.mu.Unlock()
	if freed > 0 {
		m.kickResync()
	}
	return err
}

// DirtyExtents lists the ranges the dirty bitmap holds: writes the journal
// does not have.
func (m *Machine) DirtyExtents() []Extent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bits.extents()
}

// Stats returns a snapshot of the counters.
func (m *Machine) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.MachineID, s.Epoch = m.st.MachineID, m.st.Epoch
	s.Pos, s.LastBookmark = m.seg.pos, m.lastBM
	s.JournalBytes, s.JournalLimit, s.Segments = m.seg.used, m.seg.limit, len(m.seg.list)
	s.DirtyBytes = m.bits.count.Load() * m.o.ChunkSize
	s.ALSyncs = m.al.syncs
	s.SegmentsAhead, s.SegmentsInline = m.seg.fromSpare, m.seg.inline
	s.Flushes = m.flushCount.Load()
	s.Frozen = m.frozen
	switch {
	case m.failed != nil:
		s.State = StateFailed
	case m.resyncing || m.holdBM:
		s.State = StateResyncing
	case m.bits.count.Load() > 0:
		s.State = StateOverflow
	default:
		s.State = StateJournaling
	}
	return s
}

// Close stops the loops, makes everything durable, seals the journal and
// leaves the clean-shutdown mark. Writes after Close fail.
func (m *Machine) Close(ctx context.Context) error {
	m.Unhold() // held writes go on, to be refused or finished
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.seg.dropSpares()
	err := m.Sync()
	m.sync.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		err = m.seg.seal(m.o.Now().UnixNano())
	}
	if err == nil {
		err = m.syncLocked()
	}
	if err == nil {
		err = m.al.reset()
	}
	if err == nil && m.failed == nil {
		m.st.Clean = true
		err = saveState(m.o.Dir, &m.st)
	}
	if m.failed == nil {
		m.failed = errors.New("capture: machine closed")
	}
	m.closeFiles()
	return err
}

func (m *Machine) closeFiles() {
	if m.seg != nil {
		m.seg.close()
	}
	if m.bits != nil {
		m.bits.close()
	}
	if m.al != nil {
		m.al.close()
	}
}
