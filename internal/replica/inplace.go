package replica

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/standby-dr/standby/internal/nbd"
)

// An in-place replica is one whose current images are files outside the
// replica directory: current/<disk>.img is a symbolic link to an absolute
// path, so that everything the replica writes into current (Apply, the
// copy path) lands in that file. Re-protection uses it: the master target
// at the primary site replicates the failed-over machine back into the old
// primary machine's own disk files, so that after failback the original
// machine's disks already hold the final state.
//
// The replica never removes, renames, truncates or recreates a current
// image: it opens it (O_RDWR, never O_CREATE), writes, punches holes and
// fsyncs it, and that is all. Only base images are ever replaced
// (BeginCopy), and those are the replica's own files. Removing the replica
// directory (os.RemoveAll) removes the links, not the files they point to.

// CreateInPlace makes a new replica whose current images are the files at
// images (one per disk, existing, each exactly the disk's size):
// current/<disk>.img is a symbolic link to the absolute path, so writes the
// replica applies land in that file. The base is lazy from the start (as
// BeginCopy leaves it: base_gen ≥ 1, every block unseeded, so the base
// reads through from current until a record overwrites a block), so
// nothing is copied at creation, whatever the size.
//
// An image must be a regular file or a block device that this process can
// open for writing, of exactly its disk's size, and no two disks may have
// the same image; a relative path is made absolute. The images are opened
// to check them and fsynced (their content is the state at the base), and
// never created, truncated or deleted. Otherwise CreateInPlace is Create:
// dir must be missing or empty (else ErrExists), the replica is built in
// a temporary sibling directory and renamed into place, and it is not
// consistent until the agent's first Rebase (or copy) and bookmark.
//
// Nothing but the replica may write the images while it exists: the lazy
// base reads every block no record has overwritten from them.
func CreateInPlace(dir, machineID string, disks []DiskInfo, images []string) error {
	if err := createInPlace(dir, machineID, disks, images); err != nil {
		return fmt.Errorf("replica create in place %s: %w", dir, err)
	}
	return nil
}

func createInPlace(dir, machineID string, disks []DiskInfo, images []string) error {
	id, _, err := parseMachineID(machineID)
	if err != nil {
		return err
	}
	if err := validateDisks(disks); err != nil {
		return err
	}
	if len(images) != len(disks) {
		return fmt.Errorf("%d images for %d disks", len(images), len(disks))
	}
	if err := checkNew(dir); err != nil {
		return err
	}
	paths, err := checkInPlaceImages(disks, images)
	if err != nil {
		return err
	}
	st := &state{
		Version:   stateVersion,
		MachineID: id,
		Disks:     disks,
		BaseGen:   1,
		NextLog:   1,
		NextPoint: 1,
		InPlace:   true,
	}
	return build(dir, func(tmp string) error {
		return populate(tmp, st, func(d DiskInfo, i int) error {
			if err := os.Symlink(paths[i], filepath.Join(tmp, currentDir, d.Name+imageExt)); err != nil {
				return err
			}
			if err := emptyBase(filepath.Join(tmp, baseDir, d.Name+imageExt), d.Size); err != nil {
				return err
			}
			return writeSeedMap(tmp, d, st.BaseGen)
		})
	})
}

// checkInPlaceImages checks the images of CreateInPlace and returns their
// absolute paths.
func checkInPlaceImages(disks []DiskInfo, images []string) ([]string, error) {
	paths := make([]string, len(images))
	infos := make([]fs.FileInfo, len(images))
	for i, d := range disks {
		path, err := filepath.Abs(images[i])
		if err != nil {
			return nil, fmt.Errorf("disk %s: image %s: %w", d.Name, images[i], err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("disk %s: image %s: %w", d.Name, path, err)
		}
		if !fi.Mode().IsRegular() && !isBlockDevice(fi.Mode()) {
			return nil, fmt.Errorf("disk %s: image %s: not a regular file or block device (%s)", d.Name, path, fi.Mode().Type())
		}
		for j := range i {
			if os.SameFile(fi, infos[j]) {
				return nil, fmt.Errorf("disk %s: image %s is the image of disk %s too", d.Name, path, disks[j].Name)
			}
		}
		if err := checkInPlaceImage(d, path); err != nil {
			return nil, fmt.Errorf("disk %s: image %s: %w", d.Name, path, err)
		}
		paths[i], infos[i] = path, fi
	}
	return paths, nil
}

// checkInPlaceImage checks that the image at path has d's size, opening
// it for writing (never creating it), and makes its content durable.
func checkInPlaceImage(d DiskInfo, path string) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	b, err := nbd.NewFileBackend(f)
	if err != nil {
		return err
	}
	if b.Size() != d.Size {
		return fmt.Errorf("%d bytes, the disk has %d", b.Size(), d.Size)
	}
	return f.Sync()
}

func isBlockDevice(m fs.FileMode) bool {
	return m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0
}

// emptyBase creates the base image at path: sparse, size bytes, all holes.
func emptyBase(path string, size int64) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// checkCurrentLinks checks, on Open, that the current images of an
// in-place replica are still symbolic links: a link replaced by a file
// would make the replica write somewhere the in-place promise does not
// hold. (A link whose file is gone fails when the image is opened.)
func checkCurrentLinks(dir string, st *state) error {
	if !st.InPlace {
		return nil
	}
	for _, d := range st.Disks {
		path := filepath.Join(dir, currentDir, d.Name+imageExt)
		fi, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrDamaged, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return fmt.Errorf("%w: %s of an in-place replica is not a symbolic link", ErrDamaged, path)
		}
	}
	return nil
}

// linkTarget adds where the image at path points to to err, if path is a
// symbolic link: an in-place replica's current image whose file is gone.
func linkTarget(path string, err error) error {
	if t, lerr := os.Readlink(path); lerr == nil {
		return fmt.Errorf("%s is a link to %s: %w", path, t, err)
	}
	return err
}
