package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
)

// state is a machine's state file.
type state struct {
	Released journal.Pos `json:"released"`
	Epoch    uint64      `json:"epoch"`
}

func writeState(dir string, st state, check func() error) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, stateName), append(b, '\n'), check)
}

// Open opens the spool in dir, creating it if needed. It removes temporary
// files left by a crash, finishes an interrupted Release, validates every
// spooled segment through its trailer and rebuilds each machine's queue. A
// segment that does not validate, or segments that do not form one chain,
// make Open fail with an error wrapping ErrDamaged that names the file: the
// spool never drops a segment it acknowledged without being told.
func Open(dir string, o Options) (*Spool, error) {
	if o.Quota <= 0 {
		return nil, fmt.Errorf("spool open %s: quota must be positive, got %d", dir, o.Quota)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool open: %w", err)
	}
	s := &Spool{dir: dir, quota: o.Quota, log: log, machines: make(map[string]*machine)}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool open: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			log.Warn("spool: ignoring unknown file", "path", filepath.Join(dir, e.Name()))
			continue
		}
		id, raw, err := parseMachineID(e.Name())
		if err != nil || id != e.Name() {
			log.Warn("spool: ignoring directory that is not a machine id", "path", filepath.Join(dir, e.Name()))
			continue
		}
		m := &machine{id: id, raw: raw, dir: filepath.Join(dir, id)}
		if err := s.load(m); err != nil {
			return nil, fmt.Errorf("spool open: machine %s: %w", id, err)
		}
		s.machines[id] = m
		s.used += m.bytes
		if m.seen {
			log.Info("spool: machine loaded", "machine", id, "segments", len(m.segs), "bytes", m.bytes,
				"seq", m.tail().Seq, "released_seq", m.released.Seq, "epoch", m.epoch)
		}
	}
	if s.used > s.quota {
		log.Warn("spool: over quota; puts are refused until segments are released", "used", s.used, "quota", s.quota)
	}
	return s, nil
}

// damaged is the error for a file Open cannot trust, with what to do.
func damaged(m *machine, path string, err error) error {
	return fmt.Errorf("%w: %s: %w (hint: move the file out of the spool, then resync the machine with `standby machines resync %s`)",
		ErrDamaged, path, err, m.id)
}

// load rebuilds m from its directory.
func (s *Spool) load(m *machine) error {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return err
	}
	statePath := filepath.Join(m.dir, stateName)
	if b, err := os.ReadFile(statePath); err == nil {
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			return damaged(m, statePath, err)
		}
		m.released, m.epoch, m.seen = st.Released, st.Epoch, true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	changed := false
	var stale []string
	for _, e := range entries {
		name, path := e.Name(), filepath.Join(m.dir, e.Name())
		switch {
		case strings.HasSuffix(name, tmpExt):
			if err := os.Remove(path); err != nil {
				return err
			}
			s.log.Info("spool: removed unfinished write", "machine", m.id, "path", path)
			changed = true
		case strings.HasSuffix(name, segExt):
			g, err := loadSegment(m, path)
			if err != nil {
				return damaged(m, path, err)
			}
			if m.seen && g.pos.Seq <= m.released.Seq {
				stale = append(stale, path) // released, removal interrupted
				continue
			}
			m.segs = append(m.segs, g)
		case name == stateName:
		default:
			s.log.Warn("spool: ignoring unknown file", "machine", m.id, "path", path)
		}
	}
	for _, path := range stale {
		if err := os.Remove(path); err != nil {
			return err
		}
		s.log.Info("spool: removed released segment", "machine", m.id, "path", path)
		changed = true
	}
	if changed {
		if err := fsutil.SyncDir(m.dir); err != nil {
			return err
		}
	}
	sort.Slice(m.segs, func(i, j int) bool { return m.segs[i].prev.Seq < m.segs[j].prev.Seq })
	for i, g := range m.segs {
		want := m.released
		if i > 0 {
			want = m.segs[i-1].pos
		} else if !m.seen {
			continue // the first segment of a machine adopts its position
		}
		h := journal.Header{FirstSeq: g.first(), PrevChain: g.prev.Chain}
		if err := h.Continues(want); err != nil {
			return damaged(m, filepath.Join(m.dir, segName(g.first())), err)
		}
	}
	for _, g := range m.segs {
		m.bytes += g.size
		m.epoch = max(m.epoch, g.epoch)
		m.seen = true
	}
	return nil
}

// loadSegment validates one spooled file and checks that it is where it
// belongs.
func loadSegment(m *machine, path string) (segment, error) {
	f, err := os.Open(path)
	if err != nil {
		return segment{}, err
	}
	defer f.Close()
	hdr, tr, err := validate(f)
	if err != nil {
		return segment{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return segment{}, err
	}
	if hdr.MachineID != m.raw {
		return segment{}, fmt.Errorf("%w: segment of machine %s", ErrMachineID, canonicalID(hdr.MachineID))
	}
	if filepath.Base(path) != segName(hdr.FirstSeq) || tr.Count == 0 {
		return segment{}, fmt.Errorf("%w: file name does not match first seq %d (%d records)", journal.ErrCorrupt, hdr.FirstSeq, tr.Count)
	}
	return segment{prev: hdr.Prev(), pos: tr.Pos(), epoch: hdr.Epoch, size: fi.Size()}, nil
}
