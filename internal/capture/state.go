package capture

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/standby-dr/standby/internal/fsutil"
	"github.com/standby-dr/standby/internal/journal"
)

// state is what the machine keeps in state.json between runs.
type state struct {
	MachineID string `json:"machine_id"`
	Epoch     uint64 `json:"epoch"`
	// Clean is true only between a clean Close and the next Open.
	Clean  bool   `json:"clean"`
	BootID string `json:"boot_id"`
	// Disks pins the disk layout the journal and bitmap were written for.
	Disks []stateDisk `json:"disks"`
	// Released is the position after the newest released (shipped and
	// deleted) record: the next retained segment continues from it.
	Released journal.Pos `json:"released"`
}

type stateDisk struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

func (s *state) machineID() ([16]byte, error) {
	id, err := journal.ParseMachineID(s.MachineID)
	if err != nil {
		return id, fmt.Errorf("state: machine id %w", err)
	}
	return id, nil
}

func newMachineID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return journal.FormatMachineID(b)
}

// loadState reads state.json; ok is false when there is none yet.
func loadState(dir string) (s state, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, false, fmt.Errorf("parse %s: %w", filepath.Join(dir, "state.json"), err)
	}
	return s, true, nil
}

// saveState replaces state.json atomically and durably.
func saveState(dir string, s *state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "state.json"), append(b, '\n'))
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(path))
}

const unknownBoot = "unknown"

// bootID identifies the running kernel boot: a different one at Open means
// the machine restarted (power loss, kernel crash) since the last run.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return unknownBoot
	}
	return strings.TrimSpace(string(b))
}
