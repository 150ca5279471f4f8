package driver

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func valid() Machine {
	return Machine{
		Name:  "web01",
		Disks: []Disk{{Name: "root", Path: "/srv/root.img"}, {Name: "data", URI: "nbd+unix:///web01-data?socket=/run/standby/nbd.sock"}},
		IP:    IPSettings{Address: "10.1.0.5/24", Gateway: "10.1.0.1", Hostname: "web01"},
	}.WithDefaults()
}

func TestMachineValidate(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid machine: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Machine)
		want string
	}{
		{"bad name", func(m *Machine) { m.Name = "web 01" }, `name "web 01": use 1 to 63`},
		{"no disks", func(m *Machine) { m.Disks = nil }, "at least one disk"},
		{"both", func(m *Machine) { m.Disks[0].URI = "nbd://h/x" }, "path or uri, not both"},
		{"neither", func(m *Machine) { m.Disks[0].Path = "" }, "set path (an image) or uri"},
		{"relative", func(m *Machine) { m.Disks[0].Path = "root.img" }, "is not absolute"},
		{"dup disk", func(m *Machine) { m.Disks[1].Name = "root" }, `name "root" is used twice`},
		{"cpus", func(m *Machine) { m.CPUs = 1000 }, "cpus: 1000 is not in 1..256"},
		{"memory", func(m *Machine) { m.MemoryMiB = 1 }, "memory_mib: 1 is not in 32.."},
		{"address", func(m *Machine) { m.IP.Address = "10.1.0.5" }, "with a prefix length"},
		{"gateway", func(m *Machine) { m.IP.Gateway = "gw" }, `ip.gateway "gw" is not an address`},
		{"dhcp and address", func(m *Machine) { m.IP.DHCP = true }, "address or dhcp, not both"},
		{"hostname", func(m *Machine) { m.IP.Hostname = "web_01" }, "is not a host name"},
		{"initrd alone", func(m *Machine) { m.Boot.Initrd = "/boot/initrd" }, "need a kernel"},
		{"net key", func(m *Machine) { m.Network.Settings = map[string]string{"a=b": "c"} }, "holds '='"},
		{"tls", func(m *Machine) { m.Disks[1].URI = "nbds://h/x" }, "TLS is not supported"},
	} {
		m := valid()
		m.Disks = append([]Disk(nil), m.Disks...)
		tc.mod(&m)
		err := m.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want ErrInvalid mentioning %q", tc.name, err, tc.want)
		}
	}
	// Every problem is listed, not only the first.
	m := valid()
	m.Name, m.CPUs = "", -1
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "name") || !strings.Contains(err.Error(), "cpus") {
		t.Errorf("two problems: %v, want both listed", err)
	}
}

func TestParseNBDURI(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want NBDURI
	}{
		{"nbd://127.0.0.1:10810/web01-root", NBDURI{Host: "127.0.0.1", Port: 10810, Export: "web01-root"}},
		{"nbd://target.dr", NBDURI{Host: "target.dr", Port: 10809}},
		{"nbd+tcp://[::1]:99/x", NBDURI{Host: "::1", Port: 99, Export: "x"}},
		{"nbd+unix:///e?socket=/run/s.sock", NBDURI{Unix: true, Socket: "/run/s.sock", Export: "e"}},
	} {
		got, err := ParseNBDURI(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseNBDURI(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"nbd:///x", "nbd://h:0/x", "nbd://h:99999/x", "nbd://h/x?socket=/s", "nbd+unix://h/x?socket=/s", "nbd+unix:///x", "nbd+unix:///x?socket=rel", "nbd+unix:///x?socket=/s&tls=1", "file:///x", "%zz"} {
		if _, err := ParseNBDURI(bad); err == nil {
			t.Errorf("ParseNBDURI(%q) succeeded, want an error", bad)
		}
	}
}

func TestKernelArg(t *testing.T) {
	for _, tc := range []struct {
		ip   IPSettings
		want string
	}{
		{IPSettings{}, ""},
		{IPSettings{Address: "10.1.0.5/24", Gateway: "10.1.0.1", Hostname: "web01", Interface: "eth0", DNS: []string{"1.1.1.1", "8.8.8.8", "9.9.9.9"}},
			"ip=10.1.0.5::10.1.0.1:255.255.255.0:web01:eth0:off:1.1.1.1:8.8.8.8"},
		{IPSettings{Address: "192.168.7.9/20"}, "ip=192.168.7.9:::255.255.240.0:::off"},
		{IPSettings{DHCP: true, Hostname: "db"}, "ip=::::db::dhcp"},
	} {
		if got := tc.ip.KernelArg(); got != tc.want {
			t.Errorf("KernelArg(%+v) = %q, want %q", tc.ip, got, tc.want)
		}
	}
}

type nopDriver struct{ opts struct{ A int } }

func (nopDriver) Start(context.Context, Machine) (Handle, error) { return "", nil }
func (nopDriver) Stop(context.Context, Handle, bool) error       { return nil }
func (nopDriver) Status(context.Context, Handle) (Status, error) { return Status{}, nil }

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	f := func(s map[string]any, _ Deps) (Driver, error) {
		var d nopDriver
		if err := DecodeSettings(s, &d.opts); err != nil {
			return nil, err
		}
		return d, nil
	}
	if err := r.Register("nop", f); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("nop", f); err == nil {
		t.Error("a second registration of nop succeeded")
	}
	if err := r.Register("bad name", f); err == nil {
		t.Error("a bad name was registered")
	}
	if _, err := r.New(Config{Name: "nop", Settings: map[string]any{"A": 3}}, Deps{}); err != nil {
		t.Errorf("New(nop): %v", err)
	}
	if _, err := r.New(Config{Name: "nop", Settings: map[string]any{"B": 3}}, Deps{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `unknown field "B"`) {
		t.Errorf("New(nop) with an unknown setting: %v", err)
	}
	if _, err := r.New(Config{Name: "vmware"}, Deps{}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"vmware" is not one of nop`) {
		t.Errorf("New(vmware): %v, want the list of drivers", err)
	}
}
