package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/nbd"
	"github.com/standby-dr/standby/internal/trust"
)

// An embedded agent runs inside another role: the master target that
// failed a machine over captures the replica machine's writes to its
// export and ships them back to the primary site (reverse replication,
// docs/control-plane.md). Its disks are backends (the export's overlays)
// rather than files, it has no NBD listener of its own (the caller serves
// Machine().Disks()), no status listener and no control section: the
// caller says where to ship (ShipTo) and reports its Status.

// EmbeddedConfig configures an embedded agent.
type EmbeddedConfig struct {
	Machine   string // the machine's name
	MachineID string // the machine's id: the journal continues the machine's
	Epoch     uint64 // the machine's epoch, for a new journal
	StateDir  string
	Disks     []EmbeddedDisk
	// Identity is the join directory whose certificate the agent presents
	// to the process server (the master target's own).
	Identity string
	Revoked  *trust.RevocationSet // nil: none revoked
	// BookmarkInterval of crash-consistent bookmarks; 0: 10 s.
	BookmarkInterval time.Duration
}

// EmbeddedDisk is one disk of an embedded agent.
type EmbeddedDisk struct {
	Name    string
	Backend nbd.Backend
}

// NewEmbedded opens (or continues) the journal in ec.StateDir over the
// backends. Run it with Run; it ships nothing until ShipTo.
func NewEmbedded(ctx context.Context, ec EmbeddedConfig, log *slog.Logger) (*Agent, error) {
	cfg := Defaults()
	cfg.Machine, cfg.StateDir = ec.Machine, ec.StateDir
	if ec.BookmarkInterval == 0 {
		ec.BookmarkInterval = capture.DefaultBookmarkInterval
	}
	if ec.Revoked == nil {
		ec.Revoked = &trust.RevocationSet{}
	}
	var errs []error
	if ec.Machine == "" || ec.MachineID == "" || ec.StateDir == "" || ec.Identity == "" {
		errs = append(errs, errors.New("embedded agent: machine, machine id, state directory and identity are required"))
	}
	if len(ec.Disks) == 0 {
		errs = append(errs, errors.New("embedded agent: at least one disk"))
	}
	for i, d := range ec.Disks {
		if !diskName.MatchString(d.Name) || d.Backend == nil {
			errs = append(errs, fmt.Errorf("embedded agent: disk %d: a name of 1-63 letters, digits, '.', '_' or '-' and a backend", i))
		}
		cfg.Disks = append(cfg.Disks, DiskConfig{Name: d.Name})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d := ReplicationDefaults()
	cfg.Replication = &d
	return newAgent(ctx, cfg, log, &ec)
}

// ShipTo makes an embedded agent ship to the process server at addr
// whose certificate names id (role process); "" stops shipping.
func (a *Agent) ShipTo(addr, id string) {
	if a.emb == nil {
		panic("agent: ShipTo on an agent that is not embedded")
	}
	var p *peer
	if addr != "" {
		p = managedPeer(addr, id, a.emb.Identity, a.emb.Revoked)
	}
	a.ship.setPeer(p)
}

// Fence stops shipping for good in this process: the machine's epoch
// moved past the journal's.
func (a *Agent) Fence(why string) { a.ship.fence(why) }

// Replication is the shipper's status.
func (a *Agent) Replication() ReplicationStatus { return a.ship.Status() }

// Disks are the capture's disks, as NBD backends: what the caller serves.
func (a *Agent) Disks() []nbd.Backend {
	var bs []nbd.Backend
	for _, d := range a.machine.Disks() {
		bs = append(bs, d)
	}
	return bs
}

// Freeze refuses writes from now on (capture.Machine.Freeze).
func (a *Agent) Freeze(why string) { a.machine.Freeze(why) }

// Report is the agent's replication as a reverse direction's report
// carries it.
func (a *Agent) Report() control.ReverseReport {
	rs := a.ship.Status()
	return control.ReverseReport{SentBytes: int64(rs.SentBytes), ResyncBytes: rs.ResyncBytes,
		Replication: control.ReplicationReport{State: rs.State, RPOSeconds: rs.RPOSeconds, ResyncBytes: rs.ResyncBytes, ResyncLeft: rs.ResyncLeft,
			LastError: rs.LastError, Epoch: a.machine.Stats().Epoch, LastPointAt: a.ship.appliedAt()}}
}

// FinalBookmark takes a bookmark labelled label (app-consistent with
// app) and ships until the master target has applied it; the caller has
// frozen the machine first, so that it is the last record. It retries a
// bookmark refused while the journal is not consistent (a resync), and
// fails when the agent is fenced or ctx ends.
func (a *Agent) FinalBookmark(ctx context.Context, label string, app bool, progress func(seq uint64, err error)) (uint64, error) {
	m := a.machine
	seq, err := m.Bookmark(label, app)
	for err != nil {
		progress(0, err)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
		seq, err = m.Bookmark(label, app)
	}
	progress(seq, nil)
	a.ship.shipSoon()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		st := a.ship.Status()
		if st.Applied.Seq >= seq && st.Consistent {
			return seq, nil
		}
		if st.State == ReplFenced {
			return seq, errors.New("fenced before the final bookmark was applied: the machine was failed over meanwhile")
		}
		select {
		case <-ctx.Done():
			return seq, ctx.Err()
		case <-t.C:
		}
	}
}

// backendReader reads a backend as an io.ReaderAt, for comparisons and
// copies.
type backendReader struct{ b nbd.Backend }

func (r backendReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.b.ReadAt(context.Background(), p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}
