//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package replica

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// lockDir opens the lock file; this system has no flock, so two processes
// are not kept from opening one replica.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoReplica, dir)
	}
	return f, err
}
