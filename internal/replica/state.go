package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
)

// File and directory names inside a replica directory.
const (
	stateName   = "state.json"
	lockName    = "lock"
	currentDir  = "current"
	baseDir     = "base"
	segmentsDir = "segments"
	imageExt    = ".img"
	segExt      = ".seg"
	seededExt   = ".seeded"
	tmpExt      = fsutil.TmpExt

	stateVersion = 1
)

// failpoint is called at each durable step boundary with the step's name.
// Tests replace it to make the step fail as a crash would: an error from it
// stops the operation right there, as if the process had died.
var failpoint = func(string) error { return nil }

// logPos is a place in the local log: after record Seq of the stored
// segment with log index Log. Journal sequence numbers alone cannot order
// the log, because a Rebase may make them restart; (Log, Seq) can. The zero
// logPos is before every stored segment.
type logPos struct {
	Log uint64 `json:"log"`
	Seq uint64 `json:"seq"`
}

func (a logPos) before(b logPos) bool {
	return a.Log < b.Log || a.Log == b.Log && a.Seq < b.Seq
}

// logEntry is one stored segment. Of its records, those with
// From.Seq < seq ≤ To.Seq were applied (records at or before From were
// already there when it arrived).
type logEntry struct {
	Index   uint64      `json:"index"`
	From    journal.Pos `json:"from"`
	To      journal.Pos `json:"to"`
	Epoch   uint64      `json:"epoch"`
	Bytes   int64       `json:"bytes"`
	Records uint64      `json:"records"`
}

// span returns the sequence numbers (lo, hi] of e's records that lie in
// the stretch of the log after a up to b; lo == hi if none.
func (e logEntry) span(a, b logPos) (lo, hi uint64) {
	if e.Index < a.Log || e.Index > b.Log {
		return 0, 0
	}
	lo, hi = e.From.Seq, e.To.Seq
	if e.Index == a.Log {
		lo = max(lo, a.Seq)
	}
	if e.Index == b.Log {
		hi = min(hi, b.Seq)
	}
	return lo, max(lo, hi)
}

// end is the logPos after e's last record.
func (e logEntry) end() logPos { return logPos{Log: e.Index, Seq: e.To.Seq} }

// state is state.json: everything about the replica but the bytes of the
// images and segments. docs/format/replica.md describes each field.
type state struct {
	Version    int         `json:"version"`
	MachineID  string      `json:"machine_id"`
	Disks      []DiskInfo  `json:"disks"`
	Epoch      uint64      `json:"epoch"`
	Applied    journal.Pos `json:"applied"`
	AppliedAt  time.Time   `json:"applied_at"`
	LastRecord int64       `json:"last_record_time"`
	Consistent bool        `json:"consistent"`
	Base       logPos      `json:"base"`
	BaseGen    uint64      `json:"base_gen,omitempty"` // 0: every block seeded; else the lazy base's generation
	Roll       *logPos     `json:"roll,omitempty"`
	Log        []logEntry  `json:"log"`
	NextLog    uint64      `json:"next_log"`
	Points     []Point     `json:"points"`
	NextPoint  uint64      `json:"next_point"`
	Copying    bool        `json:"copying,omitempty"`  // BeginCopy without EndCopy (or Rebase) yet
	InPlace    bool        `json:"in_place,omitempty"` // CreateInPlace: the current images are links to files outside dir
}

// clone returns a deep copy that a mutator may change before persisting it.
func (s *state) clone() *state {
	c := *s
	c.Disks = slices.Clone(s.Disks)
	c.Log = slices.Clone(s.Log)
	c.Points = make([]Point, len(s.Points))
	for i, p := range s.Points {
		p.Tags = slices.Clone(p.Tags)
		c.Points[i] = p
	}
	if s.Roll != nil {
		r := *s.Roll
		c.Roll = &r
	}
	return &c
}

// frontier is the logPos after the last stored record: where current is.
func (s *state) frontier() logPos {
	if n := len(s.Log); n > 0 {
		return s.Log[n-1].end()
	}
	return s.Base
}

func (s *state) point(id uint64) (int, bool) {
	return slices.BinarySearchFunc(s.Points, id, func(p Point, id uint64) int {
		switch {
		case p.ID < id:
			return -1
		case p.ID > id:
			return 1
		}
		return 0
	})
}

func (s *state) bytes() int64 {
	var n int64
	for _, e := range s.Log {
		n += e.Bytes
	}
	return n
}

func (s *state) validate() error {
	if s.Version != stateVersion {
		return fmt.Errorf("state version %d, this build reads %d", s.Version, stateVersion)
	}
	if _, _, err := parseMachineID(s.MachineID); err != nil {
		return err
	}
	if err := validateDisks(s.Disks); err != nil {
		return err
	}
	for i, e := range s.Log {
		if e.Index >= s.NextLog || i > 0 && e.Index <= s.Log[i-1].Index {
			return fmt.Errorf("log entry %d out of order", e.Index)
		}
	}
	for i, p := range s.Points {
		if p.ID >= s.NextPoint || i > 0 && p.ID <= s.Points[i-1].ID {
			return fmt.Errorf("point %d out of order", p.ID)
		}
	}
	return nil
}

func loadState(dir string) (*state, error) {
	path := filepath.Join(dir, stateName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoReplica, dir)
	} else if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDamaged, path, err)
	}
	if err := st.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrDamaged, path, err)
	}
	return &st, nil
}

// saveState makes st the replica's state, atomically and durably.
func saveState(dir string, st *state) error {
	c := st.clone()
	for i := range c.Points {
		c.Points[i].InUse = false // a property of this process, not of the replica
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, stateName), append(b, '\n'))
}

// writeAtomic makes path hold b durably (fsutil.WriteAtomic): a crash
// leaves either the old file or the new one, and at most a *.tmp file that
// Open removes.
func writeAtomic(path string, b []byte) error {
	return fsutil.WriteAtomic(path, b, func() error { return failpoint("before-rename") })
}

func segName(index uint64) string { return fmt.Sprintf("%012d%s", index, segExt) }

// parseSegName returns the log index of a segment file name.
func parseSegName(name string) (uint64, bool) {
	var idx uint64
	if len(name) != 12+len(segExt) || !strings.HasSuffix(name, segExt) {
		return 0, false
	}
	if _, err := fmt.Sscanf(name, "%012d"+segExt, &idx); err != nil {
		return 0, false
	}
	return idx, name == segName(idx)
}

// parseMachineID returns the canonical form and the raw bytes of a
// machine id (journal.ParseMachineID).
func parseMachineID(s string) (string, [16]byte, error) {
	id, err := journal.ParseMachineID(s)
	if err != nil {
		return "", id, fmt.Errorf("%w: %w", ErrMachineID, err)
	}
	return journal.FormatMachineID(id), id, nil
}

func canonicalID(id [16]byte) string { return journal.FormatMachineID(id) }

// validateDisks checks that every disk has a name usable as a file name
// and a positive size, and that names are unique.
func validateDisks(disks []DiskInfo) error {
	if len(disks) == 0 {
		return errors.New("no disks")
	}
	seen := make(map[string]bool)
	for i, d := range disks {
		if !validDiskName(d.Name) {
			return fmt.Errorf("disk %d: name %q: allowed: 1-64 of A-Z a-z 0-9 . _ -, not starting with . or -", i, d.Name)
		}
		if seen[d.Name] {
			return fmt.Errorf("disk %d: name %q used twice", i, d.Name)
		}
		seen[d.Name] = true
		if d.Size <= 0 {
			return fmt.Errorf("disk %s: size %d: allowed: a positive number of bytes", d.Name, d.Size)
		}
	}
	return nil
}

func validDiskName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}
