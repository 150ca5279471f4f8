package spool

import (
	"fmt"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
)

const (
	segExt    = ".seg"
	tmpExt    = fsutil.TmpExt
	stateName = "state.json"
)

// segName is the file name of a segment whose first record is first: the
// zero padding makes lexical order the sequence order.
func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segExt) }

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

// writeAtomic makes path hold b durably (fsutil.WriteAtomic); check is
// called just before the rename, and an error from it leaves path
// untouched.
func writeAtomic(path string, b []byte, check func() error) error {
	return fsutil.WriteAtomic(path, b, check)
}
