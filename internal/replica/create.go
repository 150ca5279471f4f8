package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/nbd"
)

// Create makes a new replica of machine machineID (a 128-bit hex id, as
// in the journal's header) with the given disks in dir, which must not
// exist or be empty (else ErrExists); its parent is created if need be.
// Its images are all zeros, or, with seed (one image path per disk), a
// sparse copy of the seed images — a "seeded copy" that lets initial
// replication send almost nothing. A seed image may be shorter than its
// disk (the rest reads as zeros), not longer.
//
// The new replica is not consistent and its applied position is the start
// of the journal until the agent's first Rebase and bookmark. Create builds
// the replica in a temporary sibling directory and renames it into place,
// so a crash leaves dir as it was (and at worst a .<name>.creating-*
// sibling to remove by hand).
func Create(dir, machineID string, disks []DiskInfo, seed []string) error {
	if err := create(dir, machineID, disks, seed); err != nil {
		return fmt.Errorf("replica create %s: %w", dir, err)
	}
	return nil
}

func create(dir, machineID string, disks []DiskInfo, seed []string) error {
	id, _, err := parseMachineID(machineID)
	if err != nil {
		return err
	}
	if err := validateDisks(disks); err != nil {
		return err
	}
	if seed != nil && len(seed) != len(disks) {
		return fmt.Errorf("%d seed images for %d disks", len(seed), len(disks))
	}
	st := &state{
		Version:   stateVersion,
		MachineID: id,
		Disks:     disks,
		NextLog:   1,
		NextPoint: 1,
	}
	return build(dir, func(tmp string) error {
		return populate(tmp, st, func(d DiskInfo, i int) error {
			src := ""
			if seed != nil {
				src = seed[i]
			}
			return makeImages(tmp, d, src)
		})
	})
}

// build makes a new replica directory dir, which must be missing or empty
// (else ErrExists): fill writes the replica into a temporary sibling
// directory, which is then renamed into place and the parent fsynced. On
// an error the temporary directory is removed (os.RemoveAll: a symbolic
// link in it is removed, never what it points to).
func build(dir string, fill func(tmp string) error) (err error) {
	if err := checkNew(dir); err != nil {
		return err
	}
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".creating-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := fill(tmp); err != nil {
		return err
	}
	if err := failpoint("create-before-rename"); err != nil {
		return err
	}
	if err := checkNew(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err // an empty directory is replaced
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return fsutil.SyncDir(parent)
}

// checkNew returns ErrExists unless dir is missing or an empty directory.
func checkNew(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("%w: %w", ErrExists, err)
	case len(ents) > 0:
		return fmt.Errorf("%w: %s is not empty", ErrExists, dir)
	}
	return nil
}

// populate writes a complete new replica into dir: its subdirectories
// and lock file, each disk's images (makeDisk), then st as state.json.
func populate(dir string, st *state, makeDisk func(d DiskInfo, i int) error) error {
	for _, d := range []string{currentDir, baseDir, segmentsDir} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, lockName), nil, 0o600); err != nil {
		return err
	}
	for i, d := range st.Disks {
		if err := makeDisk(d, i); err != nil {
			return fmt.Errorf("disk %s: %w", d.Name, err)
		}
	}
	for _, d := range []string{currentDir, baseDir, segmentsDir} {
		if err := fsutil.SyncDir(filepath.Join(dir, d)); err != nil {
			return err
		}
	}
	return saveState(dir, st)
}

// makeImages creates base and current images of d: sparse zeros, or a
// sparse copy of the image at seed.
func makeImages(dir string, d DiskInfo, seed string) (err error) {
	var files []*os.File
	defer func() {
		for _, f := range files {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}()
	for _, sub := range []string{baseDir, currentDir} {
		f, err := os.OpenFile(filepath.Join(dir, sub, d.Name+imageExt), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		files = append(files, f)
		if err := f.Truncate(d.Size); err != nil {
			return err
		}
	}
	if seed != "" {
		if err := copySeed(seed, d.Size, files); err != nil {
			return fmt.Errorf("seed %s: %w", seed, err)
		}
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

// copySeed copies the data of the image at path into dsts, skipping its
// holes (SEEK_DATA/SEEK_HOLE) and blocks of zeros, so the copies stay
// sparse.
func copySeed(path string, size int64, dsts []*os.File) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	b, err := nbd.NewFileBackend(src)
	if err != nil {
		return err
	}
	if b.Size() > size {
		return fmt.Errorf("image is %d bytes, larger than the disk's %d", b.Size(), size)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < b.Size(); {
		exts, err := b.Extents(context.Background(), off, b.Size()-off)
		if err != nil {
			return err
		}
		for _, e := range exts {
			if !e.Hole {
				if err := copyRange(src, dsts, off, e.Length, buf); err != nil {
					return err
				}
			}
			off += e.Length
		}
	}
	return nil
}

// copyRange copies [off, off+n) of src to dsts, chunk by chunk, leaving
// out chunks of zeros.
func copyRange(src io.ReaderAt, dsts []*os.File, off, n int64, buf []byte) error {
	for n > 0 {
		p := buf[:min(n, int64(len(buf)))]
		if _, err := io.ReadFull(io.NewSectionReader(src, off, int64(len(p))), p); err != nil {
			return err
		}
		if !allZero(p) {
			for _, f := range dsts {
				if _, err := f.WriteAt(p, off); err != nil {
					return err
				}
			}
		}
		off += int64(len(p))
		n -= int64(len(p))
	}
	return nil
}

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zeros [seedBlock]byte
