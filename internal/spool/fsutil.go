package spool

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/standby-dr/standby/internal/fsutil"
)

const (
	segExt    = ".seg"
	tmpExt    = fsutil.TmpExt
	stateName = "state.json"
)

// segName is the file name of a segment whose first record is first: the
// zero padding makes lexical order the sequence order.
func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segExt) }

// parseMachineID returns the canonical form (lowercase, dashed UUID layout)
// and the raw bytes of a machine id. Only hex digits and dashes are
// accepted, so an id can never name a path outside the spool.
func parseMachineID(s string) (string, [16]byte, error) {
	var id [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		return "", id, fmt.Errorf("%w: %q is not a 128-bit hex id", ErrMachineID, s)
	}
	copy(id[:], b)
	return canonicalID(id), id, nil
}

func canonicalID(id [16]byte) string {
	h := hex.EncodeToString(id[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// writeAtomic makes path hold b durably (fsutil.WriteAtomic); check is
// called just before the rename, and an error from it leaves path
// untouched.
func writeAtomic(path string, b []byte, check func() error) error {
	return fsutil.WriteAtomic(path, b, check)
}
