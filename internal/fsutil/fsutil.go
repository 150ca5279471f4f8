// Package fsutil holds the two file-system steps every durable store of
// Standby takes the same way: making a directory's entries durable, and
// replacing a file atomically and durably.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// TmpExt ends the name of every temporary file WriteAtomic makes; a store
// removes leftovers with it when it opens.
const TmpExt = ".tmp"

// SyncDir makes the entries of dir (creations, renames, removals) durable.
func SyncDir(dir string) error {
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

// WriteAtomic makes path hold b durably: a temporary file in the same
// directory ("."+name+"-*"+TmpExt), fsync, rename, fsync of the directory.
// beforeRename, when not nil, is called just before the rename; an error
// from it leaves path untouched (the temporary file is removed).
func WriteAtomic(path string, b []byte, beforeRename func() error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*"+TmpExt)
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
	if beforeRename != nil {
		if err := beforeRename(); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	// If this fails the new name may not survive a crash: the caller must
	// not report success.
	return SyncDir(dir)
}
