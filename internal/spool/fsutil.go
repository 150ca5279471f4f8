package spool

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	segExt    = ".seg"
	tmpExt    = ".tmp"
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

// syncDir makes the entries of dir (creations, renames, removals) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// writeAtomic makes path hold b durably: a temporary file in the same
// directory, fsync, rename, fsync of the directory. check is called just
// before the rename; an error from it leaves path untouched.
func writeAtomic(path string, b []byte, check func() error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*"+tmpExt)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := check(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	// If this fails the new name may not survive a crash: the caller must
	// not report success.
	return syncDir(dir)
}
