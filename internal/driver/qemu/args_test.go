package qemu

import (
	"errors"
	"strings"
	"testing"

	"github.com/standby-dr/standby/internal/driver"
)

func TestCommandLine(t *testing.T) {
	o := Options{StateDir: "/var/lib/standby/vm"}.withDefaults()
	m := driver.Machine{
		Name: "web01",
		Disks: []driver.Disk{
			{Name: "root", Path: "/srv/a,b.img"},
			{Name: "data", URI: "nbd://10.0.0.2:10810/web01-data"},
			{Name: "logs", URI: "nbd+unix:///web01-logs?socket=/run/standby/nbd.sock"},
		},
		CPUs: 2, MemoryMiB: 1024,
		Network: driver.Network{Settings: map[string]string{"mode": "bridge", "bridge": "br-dr", "mac": "52:54:00:00:00:01"}},
		IP:      driver.IPSettings{Address: "10.1.0.5/24", Gateway: "10.1.0.1"},
		Boot:    driver.Boot{Kernel: "/boot/vmlinuz", Initrd: "/boot/initrd", Append: "console=ttyS0"},
	}
	args, err := commandLine(o, m, "/var/lib/standby/vm/web01", map[string]bool{})
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{
		"-accel tcg", "-machine q35", "-smp 2", "-m 1024", "-nodefaults", "-daemonize",
		"-pidfile /var/lib/standby/vm/web01/pid",
		"path=/var/lib/standby/vm/web01/qmp.sock", "-mon chardev=qmp,mode=control",
		`{"discard":"unmap","driver":"raw","file":{"driver":"file","filename":"/srv/a,b.img"},"node-name":"disk0"}`,
		`{"discard":"unmap","driver":"raw","file":{"driver":"nbd","export":"web01-data","server":{"host":"10.0.0.2","port":"10810","type":"inet"}},"node-name":"disk1"}`,
		`"server":{"path":"/run/standby/nbd.sock","type":"unix"}`,
		"-device virtio-blk-pci,drive=disk0,serial=root",
		"-nic bridge,br=br-dr,model=virtio-net-pci,mac=52:54:00:00:00:01",
		"-kernel /boot/vmlinuz -initrd /boot/initrd",
		"-append console=ttyS0 ip=10.1.0.5::10.1.0.1:255.255.255.0:::off",
		"name=opt/standby/ip,string=STANDBY_IP_ADDRESS=10.1.0.5/24\nSTANDBY_IP_GATEWAY=10.1.0.1\n",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "bootindex") {
		t.Error("a direct kernel boot has no bootindex on disks")
	}

	// Disk boot, isolated, a block device, a comma in the state directory.
	m.Boot, m.IP = driver.Boot{}, driver.IPSettings{}
	m.Network.Isolated = true
	args, err = commandLine(o, m, "/x,y/web01", map[string]bool{"/srv/a,b.img": true})
	if err != nil {
		t.Fatal(err)
	}
	line = strings.Join(args, " ")
	for _, want := range []string{"bootindex=0", `"driver":"host_device"`, "-nic user,restrict=on,model=virtio-net-pci,mac=52:54:00:00:00:01", "path=/x,,y/web01/qmp.sock"} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	for _, not := range []string{"-kernel", "-fw_cfg", "br-dr"} {
		if strings.Contains(line, not) {
			t.Errorf("command line has %q:\n%s", not, line)
		}
	}
}

func TestNIC(t *testing.T) {
	for _, tc := range []struct {
		n    driver.Network
		want string
	}{
		{driver.Network{}, "none"},
		{driver.Network{Isolated: true}, "user,restrict=on,model=virtio-net-pci"},
		{driver.Network{Settings: map[string]string{"mode": "user", "model": "e1000"}}, "user,model=e1000"},
		{driver.Network{Settings: map[string]string{"mode": "tap", "tap": "tap7"}}, "tap,ifname=tap7,script=no,downscript=no,model=virtio-net-pci"},
	} {
		if err := checkNetwork(tc.n); err != nil {
			t.Errorf("checkNetwork(%+v): %v", tc.n, err)
		}
		if got := nic(tc.n); got[1] != tc.want {
			t.Errorf("nic(%+v) = %q, want %q", tc.n, got[1], tc.want)
		}
	}
	for _, tc := range []struct {
		s    map[string]string
		want string
	}{
		{map[string]string{"mode": "vde"}, `mode "vde" is not one of none, user, tap, bridge`},
		{map[string]string{"mode": "bridge"}, "mode bridge needs a bridge name"},
		{map[string]string{"mode": "tap", "tap": "a,b"}, "needs a tap interface name"},
		{map[string]string{"mac": "52:54:00"}, "is not a MAC address"},
		{map[string]string{"model": "e1000,x=y"}, "is not a qemu NIC model"},
		{map[string]string{"vlan": "7"}, `"vlan" is not one of mode, bridge, tap, mac, model`},
	} {
		err := checkNetwork(driver.Network{Settings: tc.s})
		if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkNetwork(%v): %v, want ErrInvalid mentioning %q", tc.s, err, tc.want)
		}
	}
}

func TestOptions(t *testing.T) {
	if _, err := Factory(map[string]any{"state_dir": t.TempDir(), "stop_timeout": "30s", "accel": "kvm"}, driver.Deps{}); err != nil {
		t.Fatalf("valid settings: %v", err)
	}
	for name, tc := range map[string]struct {
		s    map[string]any
		want string
	}{
		"no state dir": {map[string]any{}, "state_dir \"\": an absolute directory is needed"},
		"relative":     {map[string]any{"state_dir": "vm"}, "an absolute directory"},
		"accel":        {map[string]any{"state_dir": "/tmp/x", "accel": "hvf"}, `accel "hvf" is not one of tcg, kvm`},
		"machine":      {map[string]any{"state_dir": "/tmp/x", "machine_type": "q35,x=1"}, "is not a qemu machine type"},
		"misspelt":     {map[string]any{"state_dir": "/tmp/x", "stop_timout": "1s"}, `unknown field "stop_timout"`},
		"timeout":      {map[string]any{"state_dir": "/tmp/x", "stop_timeout": "later"}, "is not a duration"},
	} {
		_, err := Factory(tc.s, driver.Deps{})
		if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid mentioning %q", name, err, tc.want)
		}
	}
}
