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
	rec := journal.Record{Kind: journal.KindWrite, Offset: uint64(off), Length: uint64(len(p)), Data: p}
	if err := d.m.mutate(d, &rec, func() error { return d.back.WriteAt(ctx, p, off, false) }); err != nil {
		return err
	}
	if fua {
		return d.m.Sync()
	}
	return nil
}

func (d *Disk) Zero(ctx context.Context, off, length int64, mayTrim, fua bool) error {
	rec := journal.Record{Kind: journal.KindZero, Offset: uint64(off), Length: uint64(length)}
	if !mayTrim {
		rec.Flags |= journal.FlagNoHole
	}
	if err := d.m.mutate(d, &rec, func() error { return d.back.Zero(ctx, off, length, mayTrim, false) }); err != nil {
		return err
	}
	if fua {
		return d.m.Sync()
	}
	return nil
}

func (d *Disk) Trim(ctx context.Context, off, length int64, fua bool) error {
	rec := journal.Record{Kind: journal.KindTrim, Offset: uint64(off), Length: uint64(length)}
	if err := d.m.mutate(d, &rec, func() error { return d.back.Trim(ctx, off, length, false) }); err != nil {
		return err
	}
	if fua {
		return d.m.Sync()
	}
	return nil
}

func (d *Disk) Flush(ctx context.Context) error { return d.m.Sync() }
