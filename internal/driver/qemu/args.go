package qemu

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/standby-dr/standby/internal/driver"
)

// Files of a machine's state directory.
const (
	pidFile    = "pid"
	qmpSocket  = "qmp.sock"
	serialLog  = "serial.log"
	serialPrev = "serial.log.prev"
)

// fwCfgIP is the firmware configuration file that carries the IP settings
// (in the guest: /sys/firmware/qemu_fw_cfg/by_name/opt/standby/ip/raw).
const fwCfgIP = "opt/standby/ip"

// commandLine is qemu's arguments for m, whose state directory is dir.
// blockDevs says which disk paths are block devices. m is valid.
func commandLine(o Options, m driver.Machine, dir string, blockDevs map[string]bool) ([]string, error) {
	a := []string{
		"-name", "guest=" + m.Name,
		"-accel", o.Accel,
		"-machine", o.MachineType,
		"-smp", strconv.Itoa(m.CPUs),
		"-m", strconv.Itoa(m.MemoryMiB),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-chardev", "socket,id=qmp,server=on,wait=off,path=" + escape(filepath.Join(dir, qmpSocket)),
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "file,id=serial0,path=" + escape(filepath.Join(dir, serialLog)),
		"-serial", "chardev:serial0",
		"-pidfile", filepath.Join(dir, pidFile),
		"-daemonize",
	}
	if o.NoReboot {
		a = append(a, "-no-reboot")
	}
	for i, d := range m.Disks {
		node := fmt.Sprintf("disk%d", i)
		bd, err := blockdev(node, d, blockDevs[d.Path])
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.Name, err)
		}
		dev := "virtio-blk-pci,drive=" + node
		if len(d.Name) <= 20 { // virtio-blk serials are at most 20 bytes
			dev += ",serial=" + d.Name
		}
		if m.Boot.Kernel == "" {
			dev += ",bootindex=" + strconv.Itoa(i)
		}
		a = append(a, "-blockdev", bd, "-device", dev)
	}
	a = append(a, nic(m.Network)...)
	if m.Boot.Kernel != "" {
		a = append(a, "-kernel", m.Boot.Kernel)
		if m.Boot.Initrd != "" {
			a = append(a, "-initrd", m.Boot.Initrd)
		}
		if app := strings.TrimSpace(m.Boot.Append + " " + m.IP.KernelArg()); app != "" {
			a = append(a, "-append", app)
		}
	}
	if env := m.IP.Env(); len(env) > 0 {
		a = append(a, "-fw_cfg", "name="+fwCfgIP+",string="+escape(strings.Join(env, "\n")+"\n"))
	}
	return append(a, o.ExtraArgs...), nil
}

// blockdev is the -blockdev JSON of one disk: raw format over a file, a
// host device or an NBD client. JSON, not key=value, so that no path or
// export name needs escaping.
func blockdev(node string, d driver.Disk, isBlockDev bool) (string, error) {
	var proto map[string]any
	if d.URI != "" {
		u, err := driver.ParseNBDURI(d.URI)
		if err != nil {
			return "", err
		}
		server := map[string]any{"type": "inet", "host": u.Host, "port": strconv.Itoa(u.Port)}
		if u.Unix {
			server = map[string]any{"type": "unix", "path": u.Socket}
		}
		proto = map[string]any{"driver": "nbd", "server": server, "export": u.Export}
	} else {
		drv := "file"
		if isBlockDev {
			drv = "host_device"
		}
		proto = map[string]any{"driver": drv, "filename": d.Path}
	}
	b, err := json.Marshal(map[string]any{"driver": "raw", "node-name": node, "discard": "unmap", "file": proto})
	return string(b), err
}

// nic is the network arguments (-nic) for n, which checkNetwork passed.
func nic(n driver.Network) []string {
	s := n.Settings
	mode := s["mode"]
	if mode == "" {
		mode = "none"
	}
	opts := ""
	model := s["model"]
	if model == "" {
		model = defaultModel
	}
	opts += ",model=" + model
	if s["mac"] != "" {
		opts += ",mac=" + s["mac"]
	}
	switch {
	case n.Isolated:
		// The guest keeps its interface and addresses but reaches nothing:
		// a test failover must never talk to production.
		return []string{"-nic", "user,restrict=on" + opts}
	case mode == "none":
		return []string{"-nic", "none"}
	case mode == "user":
		return []string{"-nic", "user" + opts}
	case mode == "tap":
		return []string{"-nic", "tap,ifname=" + s["tap"] + ",script=no,downscript=no" + opts}
	default: // bridge, through qemu-bridge-helper
		return []string{"-nic", "bridge,br=" + s["bridge"] + opts}
	}
}

// escape doubles commas, qemu's escape inside a key=value option.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
