package qemu

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/driver"
)

// Options are the qemu driver's settings.
type Options struct {
	// Binary is the emulator (default qemu-system-x86_64, from PATH).
	Binary string `json:"binary,omitempty"`
	// StateDir holds one directory per machine (pid, QMP socket, serial
	// log). Required: it must survive a restart of the master target.
	StateDir string `json:"state_dir"`
	// Accel is qemu's -accel: tcg (default, works everywhere) or kvm.
	Accel string `json:"accel,omitempty"`
	// MachineType is qemu's -machine (default q35).
	MachineType string `json:"machine_type,omitempty"`
	// StopTimeout is how long a clean stop waits for the guest to power
	// off before qemu is told to quit (default 60s).
	StopTimeout driver.Duration `json:"stop_timeout,omitempty"`
	// NoReboot makes a guest reboot end the machine (qemu -no-reboot):
	// for test guests that reboot on panic.
	NoReboot bool `json:"no_reboot,omitempty"`
	// ExtraArgs are appended to qemu's command line as they are.
	ExtraArgs []string `json:"extra_args,omitempty"`
}

// Defaults.
const (
	DefaultBinary      = "qemu-system-x86_64"
	DefaultAccel       = "tcg"
	DefaultMachineType = "q35"
	DefaultStopTimeout = 60 * time.Second
)

var (
	accels       = []string{"tcg", "kvm"}
	machineRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	netModes     = []string{"none", "user", "tap", "bridge"}
	netKeys      = []string{"mode", "bridge", "tap", "mac", "model"}
	macRE        = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
	netNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)
	nicModelRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	defaultModel = "virtio-net-pci"
)

// withDefaults fills the defaulted fields.
func (o Options) withDefaults() Options {
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.Accel == "" {
		o.Accel = DefaultAccel
	}
	if o.MachineType == "" {
		o.MachineType = DefaultMachineType
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = driver.Duration(DefaultStopTimeout)
	}
	return o
}

// Validate lists every problem of o (after defaults); the error wraps
// driver.ErrInvalid.
func (o Options) Validate() error {
	var p []string
	if o.StateDir == "" || !filepath.IsAbs(o.StateDir) {
		p = append(p, fmt.Sprintf("state_dir %q: an absolute directory is needed (no default: it must outlive restarts)", o.StateDir))
	}
	if !contains(accels, o.Accel) {
		p = append(p, fmt.Sprintf("accel %q is not one of %s", o.Accel, strings.Join(accels, ", ")))
	}
	if !machineRE.MatchString(o.MachineType) {
		p = append(p, fmt.Sprintf("machine_type %q is not a qemu machine type like q35 or pc", o.MachineType))
	}
	if o.StopTimeout < 0 {
		p = append(p, "stop_timeout: must not be negative")
	}
	if len(p) > 0 {
		return fmt.Errorf("qemu driver: %w: %s", driver.ErrInvalid, strings.Join(p, "; "))
	}
	return nil
}

// checkNetwork validates a machine's network settings for this driver.
func checkNetwork(n driver.Network) error {
	var p []string
	for k := range n.Settings {
		if !contains(netKeys, k) {
			p = append(p, fmt.Sprintf("network.settings: %q is not one of %s", k, strings.Join(netKeys, ", ")))
		}
	}
	s := n.Settings
	mode := s["mode"]
	if mode == "" {
		mode = "none"
	}
	if !contains(netModes, mode) {
		p = append(p, fmt.Sprintf("network.settings.mode %q is not one of %s", mode, strings.Join(netModes, ", ")))
	}
	if mode == "bridge" && !n.Isolated && !netNameRE.MatchString(s["bridge"]) {
		p = append(p, fmt.Sprintf("network.settings.bridge %q: mode bridge needs a bridge name like br0", s["bridge"]))
	}
	if mode == "tap" && !n.Isolated && !netNameRE.MatchString(s["tap"]) {
		p = append(p, fmt.Sprintf("network.settings.tap %q: mode tap needs a tap interface name like tap0", s["tap"]))
	}
	if m := s["mac"]; m != "" && !macRE.MatchString(m) {
		p = append(p, fmt.Sprintf("network.settings.mac %q is not a MAC address like 52:54:00:12:34:56", m))
	}
	if m := s["model"]; m != "" && !nicModelRE.MatchString(m) {
		p = append(p, fmt.Sprintf("network.settings.model %q is not a qemu NIC model like virtio-net-pci or e1000", m))
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %s", driver.ErrInvalid, strings.Join(p, "; "))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
