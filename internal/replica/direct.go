package replica

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"unsafe"
)

// directAlign is the alignment of offset, length and memory that a read or
// write needs to go around the page cache.
const directAlign = 4096

// directAligned reports whether an I/O of p at off can go through an
// O_DIRECT descriptor.
func directAligned(p []byte, off int64) bool {
	return len(p) > 0 && off%directAlign == 0 && len(p)%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// directFiles are O_DIRECT descriptors of the images, opened on first use:
// a copy writes each byte once, and seeding reads current and writes base
// once, none of which is read back soon, and filling the page cache costs
// more CPU than the I/O. Where the file system refuses O_DIRECT, file
// returns nil and I/O goes through the page cache. The kernel keeps both
// kinds of I/O coherent (a direct read writes dirty pages back first, a
// direct write drops the cached pages), and an fsync of an image's usual
// descriptor covers what its direct one wrote.
type directFiles struct {
	mu    sync.Mutex
	files map[directKey]*os.File // nil value: refused
}

type directKey struct {
	disk int
	base bool
}

// file returns the O_DIRECT descriptor of im, disk's current image or
// (base) base image, or nil.
func (d *directFiles) file(log *slog.Logger, im *os.File, disk int, base bool) *os.File {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := directKey{disk, base}
	if f, ok := d.files[k]; ok {
		return f
	}
	if d.files == nil {
		d.files = make(map[directKey]*os.File)
	}
	f, err := openDirect(im.Name())
	if err != nil {
		log.Debug("replica: no O_DIRECT", "path", im.Name(), "err", err)
		f = nil
	}
	d.files[k] = f
	return f
}

// forget closes and forgets the descriptors of the base images (BeginCopy
// replaces those files).
func (d *directFiles) forgetBase() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for k, f := range d.files {
		if k.base {
			if f != nil {
				errs = append(errs, f.Close())
			}
			delete(d.files, k)
		}
	}
	return errors.Join(errs...)
}

// close closes every descriptor.
func (d *directFiles) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, f := range d.files {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	d.files = nil
	return errors.Join(errs...)
}
