package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/nbd"
)

// Apply applies one change record to a disk. Bookmarks change nothing.
func Apply(ctx context.Context, disk nbd.Backend, rec *journal.Record) error {
	switch rec.Kind {
	case journal.KindWrite:
		return disk.WriteAt(ctx, rec.Data, int64(rec.Offset), false)
	case journal.KindZero:
		return disk.Zero(ctx, int64(rec.Offset), int64(rec.Length), rec.Flags&journal.FlagNoHole == 0, false)
	case journal.KindTrim:
		return disk.Trim(ctx, int64(rec.Offset), int64(rec.Length), false)
	case journal.KindBookmark:
		return nil
	}
	return fmt.Errorf("apply record %d: unknown kind %v", rec.Seq, rec.Kind)
}

// ReplayOptions bound a replay.
type ReplayOptions struct {
	// From is the position the disks are at; zero means the start of the
	// journal, and the first segment must then begin at sequence 1.
	From journal.Pos
	// UpTo stops after the record with this sequence number (a bookmark,
	// typically); zero replays everything.
	UpTo uint64
}

// Replay applies the journal segments in dir (a machine's journal/
// directory) to disks, checking continuity segment by segment, and returns
// the position reached. Disks are indexed as in the journal's records.
func Replay(ctx context.Context, dir string, disks []nbd.Backend, o ReplayOptions) (journal.Pos, error) {
	names, err := listSegments(dir)
	if err != nil {
		return o.From, err
	}
	pos := o.From
	for _, path := range names {
		if o.UpTo > 0 && pos.Seq >= o.UpTo {
			break
		}
		done, err := replaySegment(ctx, path, disks, &pos, o.UpTo)
		if err != nil {
			return pos, fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		if done {
			break
		}
	}
	for _, d := range disks {
		if err := d.Flush(ctx); err != nil {
			return pos, err
		}
	}
	return pos, nil
}

// replaySegment applies one segment's records after *pos, up to upTo.
func replaySegment(ctx context.Context, path string, disks []nbd.Backend, pos *journal.Pos, upTo uint64) (done bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	rd, err := journal.NewReader(f)
	if err != nil {
		return false, err
	}
	h := rd.Header()
	if h.FirstSeq > pos.Seq+1 || (h.FirstSeq == pos.Seq+1 && h.PrevChain != pos.Chain) {
		return false, h.Continues(*pos)
	}
	var rec journal.Record
	for {
		err := rd.Next(&rec)
		if err == io.EOF || errors.Is(err, journal.ErrNotSealed) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if rec.Seq <= pos.Seq {
			if rec.Seq == pos.Seq && rd.Pos() != *pos {
				return false, &journal.PosMismatchError{Want: *pos, Got: rd.Pos()}
			}
			continue // already applied: idempotent by sequence number
		}
		if int(rec.Disk) >= len(disks) {
			return false, fmt.Errorf("record %d names disk %d; %d disks given", rec.Seq, rec.Disk, len(disks))
		}
		if err := Apply(ctx, disks[rec.Disk], &rec); err != nil {
			return false, fmt.Errorf("apply record %d: %w", rec.Seq, err)
		}
		*pos = rd.Pos()
		if upTo > 0 && rec.Seq >= upTo {
			return true, nil
		}
	}
}
