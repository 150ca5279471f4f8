package capture

import (
	"context"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
)

// Disk is one captured disk: an nbd.Backend that journals every change
// before passing it to the disk behind it.
type Disk struct {
	m     *Machine
	index int
	name  string
	back  nbd.Backend
}

var _ nbd.Backend = (*Disk)(nil)

// Name is the disk's name in the machine.
func (d *Disk) Name() string { return d.name }

// Index is the disk's number in journal records.
func (d *Disk) Index() int { return d.index }

func (d *Disk) Size() int64 { return d.back.Size() }

func (d *Disk) ReadAt(ctx context.Context, p []byte, off int64) error {
	return d.back.ReadAt(ctx, p, off)
}

func (d *Disk) Extents(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	return d.back.Extents(ctx, off, length)
}

func (d *Disk) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	for len(p) > 0 {
		n := d.piece(off, int64(len(p)))
		q := p[:n]
		rec := journal.Record{Kind: journal.KindWrite, Offset: uint64(off), Length: uint64(n), Data: q}
		if err := d.m.mutate(d, &rec, func() error { return d.back.WriteAt(ctx, q, off, false) }); err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	if fua {
		return d.m.Sync()
	}
	return nil
}

func (d *Disk) Zero(ctx context.Context, off, length int64, mayTrim, fua bool) error {
	for length > 0 {
		n, o := d.piece(off, length), off
		rec := journal.Record{Kind: journal.KindZero, Offset: uint64(off), Length: uint64(n)}
		if !mayTrim {
			rec.Flags |= journal.FlagNoHole
		}
		if err := d.m.mutate(d, &rec, func() error { return d.back.Zero(ctx, o, n, mayTrim, false) }); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	if fua {
		return d.m.Sync()
	}
	return nil
}

func (d *Disk) Trim(ctx context.Context, off, length int64, fua bool) error {
	for length > 0 {
		n, o := d.piece(off, length), off
		rec := journal.Record{Kind: journal.KindTrim, Offset: uint64(off), Length: uint64(n)}
		if err := d.m.mutate(d, &rec, func() error { return d.back.Trim(ctx, o, n, false) }); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	if fua {
		return d.m.Sync()
	}
	return nil
}

// piece is how much of [off, off+length) one record covers: up to
// MaxRange, cut at a MaxRange boundary so pieces stay aligned.
func (d *Disk) piece(off, length int64) int64 {
	max := d.m.o.MaxRange
	return min(length, max-off%max)
}

func (d *Disk) Flush(ctx context.Context) error { return d.m.Sync() }
