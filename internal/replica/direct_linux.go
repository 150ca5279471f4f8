package replica

import (
	"os"
	"syscall"
)

// openDirect opens an image for writes that bypass the page cache
// (O_DIRECT): a copy writes each byte once and reads none of them back
// soon, and filling the page cache costs more CPU than the write.
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
}
