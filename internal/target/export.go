package target

import (
	"sync"

	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/standby-dr/standby/internal/nbd"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/replica"
)

// Exports of recovery points (docs/exports.md): a retained point of a
// machine served over NBD, each disk a writable replica.Overlay over a
// replica.View of the point. The view pins the point against pruning
// until Unexport; writes go to the overlay only. Exports survive a
// restart of the target: New opens them again before pruning starts.

// Sentinel errors of exports; test with errors.Is.
var (
	// ErrExportsOff: the target has no NBD listener for exports.
	ErrExportsOff = errors.New("exports are off on this master target (set exports.listen or exports.unix in its configuration)")
	// ErrNoExport: no export has that name.
	ErrNoExport = errors.New("no such export (list them: standby target exports)")
	// ErrExportExists: an export already has that name.
	ErrExportExists = errors.New("an export of that name exists (choose another name or unexport it)")
	// ErrNoMachine: the target holds no replica of that machine.
	ErrNoMachine = errors.New("no replica of that machine on this master target")
	// ErrNoPoint: no retained recovery point matches the selection.
	ErrNoPoint = errors.New("no retained recovery point matches (list them: standby target points MACHINE)")
	// ErrBadSelector: the point selection is not latest, latest-app, an id or a time.
	ErrBadSelector = errors.New("point: want latest, latest-app, a point id or a time (RFC 3339, e.g. 2026-11-27T10:00:00Z)")
)

// ExportRequest asks for an export.
type ExportRequest struct {
	// Machine is the machine's id or name.
	Machine string `json:"machine"`
	// Point selects the recovery point (SelectPoint); "" means latest.
	Point string `json:"point,omitempty"`
	// Name of the export; "" makes one from the machine and the point.
	Name string `json:"name,omitempty"`
}

// Export is a recovery point served over NBD.
type Export struct {
	Name        string        `json:"name"`
	Machine     string        `json:"machine"` // the machine's id
	MachineName string        `json:"machine_name,omitempty"`
	Point       replica.Point `json:"point"`
	Created     time.Time     `json:"created"`
	// Addr and Unix are where the NBD server listens (either may be empty).
	Addr  string       `json:"addr,omitempty"`
	Unix  string       `json:"unix,omitempty"`
	Disks []ExportDisk `json:"disks"`
}

// ExportDisk is one disk of an export: an NBD export of its own.
type ExportDisk struct {
	Index  int    `json:"index"`
	Name   string `json:"name"`   // the disk's name in the replica
	Export string `json:"export"` // the NBD export name: <export>/<disk>
	Size   int64  `json:"size"`
	// URI and UnixURI are NBD URIs a client (qemu, nbdinfo) can open.
	URI     string `json:"uri,omitempty"`
	UnixURI string `json:"unix_uri,omitempty"`
	// OverlayBytes is how much the overlay holds: blocks written, zeroed
	// or trimmed through the export.
	OverlayBytes int64 `json:"overlay_bytes"`
}

// exported is a live export: what it holds open.
type exported struct {
	info     Export
	dir      string
	view     *replica.View
	overlays []*replica.Overlay

	// routed are the backends the export's disks go to instead of the
	// overlays while reverse replication captures the machine's writes
	// (reverse.go); nil: the overlays. routeMu is held for reading by
	// every request for as long as it runs, so a change of route waits
	// for the requests in flight.
	routeMu sync.RWMutex
	routed  []nbd.Backend
}

// backendLocked is disk i's backend now; routeMu is held.
func (e *exported) backendLocked(i int) nbd.Backend {
	if e.routed != nil {
		return e.routed[i]
	}
	return e.overlays[i]
}

// route sends the export's disks to bs (nil: back to the overlays), once
// the requests in flight are done.
func (e *exported) route(bs []nbd.Backend) {
	e.routeMu.Lock()
	e.routed = bs
	e.routeMu.Unlock()
}

func (e *exported) close() error {
	var errs []error
	for _, o := range e.overlays {
		errs = append(errs, o.Close())
	}
	if e.view != nil {
		errs = append(errs, e.view.Close())
	}
	return errors.Join(errs...)
}

// snapshot is the export's description with its overlays' sizes now.
func (e *exported) snapshot() Export {
	x := e.info
	x.Disks = append([]ExportDisk(nil), e.info.Disks...)
	for i, o := range e.overlays {
		x.Disks[i].OverlayBytes = o.Blocks() * replica.OverlayBlockSize
	}
	return x
}

var errBadExportName = errors.New("want 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")

var exportNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// SelectPoint picks a point of points (oldest first, as Replica.Points
// returns them): "" or "latest" is the newest, "latest-app" the newest
// app-consistent one, a number the point of that id, and a time (RFC
// 3339) the newest point taken at or before it.
func SelectPoint(points []replica.Point, sel string) (replica.Point, error) {
	match := func(ok func(p replica.Point) bool) (replica.Point, error) {
		for i := len(points) - 1; i >= 0; i-- {
			if ok(points[i]) {
				return points[i], nil
			}
		}
		return replica.Point{}, fmt.Errorf("point %q: %w", sel, ErrNoPoint)
	}
	switch sel = strings.TrimSpace(sel); sel {
	case "", "latest":
		return match(func(replica.Point) bool { return true })
	case "latest-app":
		return match(func(p replica.Point) bool { return p.AppConsistent })
	}
	if id, err := strconv.ParseUint(sel, 10, 64); err == nil {
		return match(func(p replica.Point) bool { return p.ID == id })
	}
	at, err := time.Parse(time.RFC3339Nano, sel)
	if err != nil {
		return replica.Point{}, fmt.Errorf("point %q: %w", sel, ErrBadSelector)
	}
	return match(func(p replica.Point) bool { return !p.Time.After(at) })
}

func (t *Target) exportsDir() string { return filepath.Join(t.o.DataDir, "exports") }

// Export serves a recovery point of a machine over NBD, one NBD export
// per disk, each a writable overlay over the point. It costs the same
// whatever the disks' size: a view of the point (its cost follows the
// journal between the base and the point) and two sparse files per disk.
func (t *Target) Export(ctx context.Context, req ExportRequest) (Export, error) {
	if t.front == nil {
		return Export{}, ErrExportsOff
	}
	if req.Name != "" && !exportNameRE.MatchString(req.Name) {
		return Export{}, fmt.Errorf("export name %q: %w", req.Name, errBadExportName)
	}
	rep, id, ok := t.Lookup(req.Machine)
	if !ok {
		return Export{}, fmt.Errorf("export machine %q: %w", req.Machine, ErrNoMachine)
	}
	p, err := SelectPoint(rep.Points(), req.Point)
	if err != nil {
		return Export{}, fmt.Errorf("export machine %s: %w", req.Machine, err)
	}
	v, err := rep.OpenPoint(ctx, p.ID)
	if err != nil {
		if errors.Is(err, replica.ErrNotFound) { // pruned since Points
			err = fmt.Errorf("%w: %w", ErrNoPoint, err)
		}
		return Export{}, fmt.Errorf("export machine %s: %w", req.Machine, err)
	}
	e := &exported{view: v}
	e.info = Export{Name: req.Name, Machine: id, MachineName: t.machineName(id), Point: v.Point(), Created: t.o.Now().UTC()}
	if e.info.Name == "" {
		e.info.Name = t.exportName(id, p.ID)
	}
	if err := t.front.reserve(e.info.Name); err != nil {
		v.Close()
		return Export{}, err
	}
	if err := t.createExport(e); err != nil {
		t.front.release(e.info.Name)
		e.close()
		if e.dir != "" {
			os.RemoveAll(e.dir)
		}
		return Export{}, fmt.Errorf("export machine %s point %d: %w", req.Machine, p.ID, err)
	}
	t.front.add(e)
	t.log.Info("exported recovery point", "export", e.info.Name, "machine", id, "point", p.ID, "disks", len(e.overlays))
	return e.snapshot(), nil
}

// createExport makes the export's directory, overlays and record.
func (t *Target) createExport(e *exported) error {
	if err := os.MkdirAll(t.exportsDir(), 0o700); err != nil {
		return err
	}
	dir := filepath.Join(t.exportsDir(), e.info.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	e.dir = dir // ours to remove if what follows fails
	for i, d := range e.view.Disks() {
		o, err := replica.CreateOverlay(filepath.Join(e.dir, d.Name), e.view.DiskReaderAt(i), d.Size, e.view.Point().ID)
		if err != nil {
			return err
		}
		e.overlays = append(e.overlays, o)
		e.info.Disks = append(e.info.Disks, ExportDisk{Index: i, Name: d.Name, Export: e.info.Name + "/" + d.Name, Size: d.Size})
	}
	t.front.describe(&e.info)
	b, err := json.MarshalIndent(exportRecord{Version: exportRecordVersion, Export: e.info}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteAtomic(filepath.Join(e.dir, exportRecordFile), b, nil)
}

// exportRecord is <data dir>/exports/<name>/export.json: written last, so
// a directory without it is an export that was never made.
type exportRecord struct {
	Version int    `json:"version"`
	Export  Export `json:"export"`
}

const (
	exportRecordFile    = "export.json"
	exportRecordVersion = 1
)

func (t *Target) machineName(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m, ok := t.machines[id]; ok {
		return m.name
	}
	return ""
}

// exportName makes a name from the machine and the point, with a random
// tail so that two exports of one point differ.
func (t *Target) exportName(id string, point uint64) string {
	who := t.machineName(id)
	if !exportNameRE.MatchString(who) || len(who) > 40 {
		who = strings.ReplaceAll(id, "-", "")[:12]
	}
	var r [3]byte
	rand.Read(r[:])
	return fmt.Sprintf("%s-p%d-%s", who, point, hex.EncodeToString(r[:]))
}

// Unexport stops serving an export: its NBD connections are closed, its
// view is closed (the point may be pruned again) and its overlays are
// deleted.
func (t *Target) Unexport(ctx context.Context, name string) error {
	if t.front == nil {
		return ErrExportsOff
	}
	e := t.front.remove(ctx, name)
	if e == nil {
		return fmt.Errorf("unexport %q: %w", name, ErrNoExport)
	}
	err := e.close()
	if rerr := os.RemoveAll(e.dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("unexport %s: %w", name, err)
	}
	t.log.Info("unexported recovery point", "export", name, "machine", e.info.Machine, "point", e.info.Point.ID)
	return nil
}

// Exports lists the exports, by name.
func (t *Target) Exports() []Export {
	if t.front == nil {
		return []Export{}
	}
	return t.front.list()
}

// ExportByName returns one export.
func (t *Target) ExportByName(name string) (Export, error) {
	if t.front != nil {
		for _, e := range t.front.list() {
			if e.Name == name {
				return e, nil
			}
		}
	}
	return Export{}, fmt.Errorf("export %q: %w", name, ErrNoExport)
}

// restoreExports opens the exports a previous run left, before pruning
// starts. One that cannot be opened again (its machine or point is gone,
// a file is damaged, it was never finished) is logged and deleted.
func (t *Target) restoreExports(ctx context.Context) error {
	ents, err := os.ReadDir(t.exportsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	names := make([]string, 0, len(ents))
	for _, d := range ents {
		names = append(names, d.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		dir := filepath.Join(t.exportsDir(), name)
		e, err := t.reopenExport(ctx, dir)
		if err != nil {
			t.log.Warn("export left by an earlier run deleted: it cannot be opened again", "export", name, "err", err)
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("remove export %s: %w", name, err)
			}
			continue
		}
		if err := t.front.reserve(name); err != nil {
			e.close()
			return err
		}
		t.front.add(e)
		t.log.Info("export restored", "export", name, "machine", e.info.Machine, "point", e.info.Point.ID)
	}
	return nil
}

func (t *Target) reopenExport(ctx context.Context, dir string) (*exported, error) {
	b, err := os.ReadFile(filepath.Join(dir, exportRecordFile))
	if err != nil {
		return nil, err
	}
	var rec exportRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", exportRecordFile, err)
	}
	if rec.Version != exportRecordVersion || rec.Export.Name != filepath.Base(dir) {
		return nil, fmt.Errorf("%s: version %d, name %q: this build reads version %d named as its directory", exportRecordFile, rec.Version, rec.Export.Name, exportRecordVersion)
	}
	rep, _, ok := t.Lookup(rec.Export.Machine)
	if !ok {
		return nil, fmt.Errorf("machine %s: %w", rec.Export.Machine, ErrNoMachine)
	}
	v, err := rep.OpenPoint(ctx, rec.Export.Point.ID)
	if err != nil {
		return nil, err
	}
	e := &exported{info: rec.Export, dir: dir, view: v}
	disks := v.Disks()
	if len(disks) != len(rec.Export.Disks) {
		e.close()
		return nil, fmt.Errorf("%d disks recorded, the point has %d", len(rec.Export.Disks), len(disks))
	}
	for i, d := range disks {
		o, err := replica.OpenOverlay(filepath.Join(dir, d.Name), v.DiskReaderAt(i), d.Size, v.Point().ID)
		if err != nil {
			e.close()
			return nil, err
		}
		e.overlays = append(e.overlays, o)
	}
	e.info.Point = v.Point()
	t.front.describe(&e.info) // the listeners may have moved
	return e, nil
}

// startExports starts the exports listener, when one is configured, and
// opens the exports a previous run left.
func (t *Target) startExports(ctx context.Context) error {
	if t.o.Exports.Listen == "" && t.o.Exports.Unix == "" {
		if _, err := os.Stat(t.exportsDir()); err == nil {
			t.log.Warn("exports left by an earlier run are not served: exports are off", "dir", t.exportsDir())
		}
		return nil
	}
	f, err := newFront(t.o.Exports, t.log.With("component", "exports"))
	if err != nil {
		return err
	}
	t.front = f
	return t.restoreExports(ctx)
}
