package driver

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Machine is what a driver starts: the replica of a protected machine.
type Machine struct {
	// Name is the machine's name, also the default handle; letters,
	// digits, '.', '_' and '-', starting with a letter or digit.
	Name string `json:"name"`
	// Disks in boot order: the first one is the boot disk.
	Disks []Disk `json:"disks"`
	// CPUs and MemoryMiB; zero means the default (DefaultCPUs,
	// DefaultMemoryMiB).
	CPUs      int `json:"cpus,omitempty"`
	MemoryMiB int `json:"memory_mib,omitempty"`
	// Network is the network mapping.
	Network Network `json:"network"`
	// IP is what the guest is told about its address.
	IP IPSettings `json:"ip"`
	// Boot, when Kernel is set, boots that kernel directly instead of the
	// first disk (tests, and machines whose boot loader is not on the
	// replicated disks).
	Boot Boot `json:"boot"`
}

// Disk is one disk of a machine: an image file or an NBD export (what a
// master target serves for a recovery point). Exactly one of Path and URI
// is set.
type Disk struct {
	Name string `json:"name"`
	// Path is an absolute path to a raw image (or a block device).
	Path string `json:"path,omitempty"`
	// URI is an NBD URI: nbd://host[:port]/export or
	// nbd+unix:///export?socket=/path.
	URI string `json:"uri,omitempty"`
}

// Source is the disk's path or URI, whichever is set.
func (d Disk) Source() string {
	if d.URI != "" {
		return d.URI
	}
	return d.Path
}

// Network is a machine's network mapping.
type Network struct {
	// Isolated cuts the machine off from every network but its own: what
	// a test failover needs, so that the copy never talks to production.
	// A driver honours it whatever Settings say.
	Isolated bool `json:"isolated,omitempty"`
	// Settings are the driver's own (qemu: mode, bridge, tap, mac, model;
	// exec: passed to the commands as STANDBY_NET_<KEY>).
	Settings map[string]string `json:"settings,omitempty"`
}

// IPSettings are the addresses the guest should use after failover. They
// are passed to the guest, not applied by the host: on the kernel command
// line (ip=), in the environment of exec commands, and in qemu's firmware
// configuration (opt/standby/ip), where a guest-side hook reads them.
type IPSettings struct {
	// Address with prefix length, e.g. 10.1.0.5/24. Empty: DHCP is false
	// and the guest keeps its own configuration.
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// DNS servers, at most two on the kernel command line.
	DNS      []string `json:"dns,omitempty"`
	Hostname string   `json:"hostname,omitempty"`
	// Interface in the guest, e.g. eth0; empty: the kernel picks.
	Interface string `json:"interface,omitempty"`
	// DHCP asks for DHCP instead of Address.
	DHCP bool `json:"dhcp,omitempty"`
}

// Boot is a direct kernel boot.
type Boot struct {
	Kernel string `json:"kernel,omitempty"` // absolute path
	Initrd string `json:"initrd,omitempty"` // absolute path, needs Kernel
	Append string `json:"append,omitempty"` // kernel command line, needs Kernel
}

// Defaults of a machine's sizes.
const (
	DefaultCPUs      = 1
	DefaultMemoryMiB = 512
	MaxCPUs          = 256
	MinMemoryMiB     = 32
	MaxMemoryMiB     = 4 << 20 // 4 TiB
)

// WithDefaults returns m with zero sizes set to their defaults.
func (m Machine) WithDefaults() Machine {
	if m.CPUs == 0 {
		m.CPUs = DefaultCPUs
	}
	if m.MemoryMiB == 0 {
		m.MemoryMiB = DefaultMemoryMiB
	}
	return m
}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	ifaceRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$`)
)

// CheckName checks a machine or disk name.
func CheckName(what, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%s %q: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", what, s)
	}
	return nil
}

// Validate lists every problem of m (after WithDefaults); the error wraps
// ErrInvalid.
func (m Machine) Validate() error {
	var p []string
	add := func(err error) {
		if err != nil {
			p = append(p, err.Error())
		}
	}
	add(CheckName("name", m.Name))
	if len(m.Disks) == 0 {
		p = append(p, "disks: at least one disk is needed (the first one boots)")
	}
	seen := map[string]bool{}
	for i, d := range m.Disks {
		if err := d.Validate(); err != nil {
			p = append(p, fmt.Sprintf("disks[%d]: %v", i, err))
		}
		if seen[d.Name] {
			p = append(p, fmt.Sprintf("disks[%d]: name %q is used twice", i, d.Name))
		}
		seen[d.Name] = true
	}
	if m.CPUs < 1 || m.CPUs > MaxCPUs {
		p = append(p, fmt.Sprintf("cpus: %d is not in 1..%d", m.CPUs, MaxCPUs))
	}
	if m.MemoryMiB < MinMemoryMiB || m.MemoryMiB > MaxMemoryMiB {
		p = append(p, fmt.Sprintf("memory_mib: %d is not in %d..%d", m.MemoryMiB, MinMemoryMiB, MaxMemoryMiB))
	}
	for k := range m.Network.Settings {
		if k == "" || strings.ContainsAny(k, "= \t\n") {
			p = append(p, fmt.Sprintf("network.settings: key %q is empty or holds '=' or blanks", k))
		}
	}
	add(m.IP.Validate())
	add(m.Boot.Validate())
	if len(p) > 0 {
		return fmt.Errorf("machine %q: %w: %s", m.Name, ErrInvalid, strings.Join(p, "; "))
	}
	return nil
}

// Validate checks one disk.
func (d Disk) Validate() error {
	if err := CheckName("name", d.Name); err != nil {
		return err
	}
	switch {
	case d.Path == "" && d.URI == "":
		return fmt.Errorf("disk %q: set path (an image) or uri (an NBD export)", d.Name)
	case d.Path != "" && d.URI != "":
		return fmt.Errorf("disk %q: set path or uri, not both", d.Name)
	case d.Path != "":
		if !filepath.IsAbs(d.Path) {
			return fmt.Errorf("disk %q: path %q is not absolute", d.Name, d.Path)
		}
	default:
		if _, err := ParseNBDURI(d.URI); err != nil {
			return fmt.Errorf("disk %q: %w", d.Name, err)
		}
	}
	return nil
}

// NBDURI is a parsed NBD URI (the NBD URI specification's nbd and
// nbd+unix schemes; TLS schemes are not supported by the drivers yet).
type NBDURI struct {
	Unix   bool   // nbd+unix
	Host   string // tcp
	Port   int    // tcp; 10809 by default
	Socket string // unix: the socket path
	Export string // may be empty: the server's default export
}

// DefaultNBDPort is the NBD port IANA assigned.
const DefaultNBDPort = 10809

// ParseNBDURI parses nbd://host[:port]/export or
// nbd+unix:///export?socket=/path.
func ParseNBDURI(s string) (NBDURI, error) {
	var n NBDURI
	u, err := url.Parse(s)
	if err != nil {
		return n, fmt.Errorf("uri %q: %w", s, err)
	}
	n.Export = strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "nbd", "nbd+tcp":
		if u.Hostname() == "" {
			return n, fmt.Errorf("uri %q: no host (want nbd://host[:port]/export)", s)
		}
		n.Host, n.Port = u.Hostname(), DefaultNBDPort
		if p := u.Port(); p != "" {
			if n.Port, err = strconv.Atoi(p); err != nil || n.Port < 1 || n.Port > 65535 {
				return n, fmt.Errorf("uri %q: port %q is not in 1..65535", s, p)
			}
		}
		if len(u.Query()) > 0 {
			return n, fmt.Errorf("uri %q: nbd:// takes no query parameters", s)
		}
	case "nbd+unix":
		if u.Host != "" {
			return n, fmt.Errorf("uri %q: nbd+unix has no host (want nbd+unix:///export?socket=/path)", s)
		}
		q := u.Query()
		n.Unix, n.Socket = true, q.Get("socket")
		if n.Socket == "" || !filepath.IsAbs(n.Socket) {
			return n, fmt.Errorf("uri %q: socket=%q must be an absolute path", s, n.Socket)
		}
		if len(q) != 1 {
			return n, fmt.Errorf("uri %q: only the socket query parameter is allowed", s)
		}
	case "nbds", "nbds+tcp", "nbds+unix":
		return n, fmt.Errorf("uri %q: NBD over TLS is not supported by the machine drivers yet (use a local or nbd+unix export)", s)
	default:
		return n, fmt.Errorf("uri %q: scheme %q is not one of nbd, nbd+tcp, nbd+unix", s, u.Scheme)
	}
	return n, nil
}

// Validate checks the IP settings.
func (ip IPSettings) Validate() error {
	var p []string
	if ip.Address != "" {
		pf, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			p = append(p, fmt.Sprintf("ip.address %q is not an address with a prefix length like 10.1.0.5/24", ip.Address))
		} else if pf.Addr().Is6() && !pf.Addr().Is4In6() {
			p = append(p, fmt.Sprintf("ip.address %q: only IPv4 is passed to the guest for now", ip.Address))
		}
		if ip.DHCP {
			p = append(p, "ip: set address or dhcp, not both")
		}
	}
	if ip.Gateway != "" {
		if _, err := netip.ParseAddr(ip.Gateway); err != nil {
			p = append(p, fmt.Sprintf("ip.gateway %q is not an address", ip.Gateway))
		}
	}
	for i, d := range ip.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			p = append(p, fmt.Sprintf("ip.dns[%d] %q is not an address", i, d))
		}
	}
	if ip.Hostname != "" && !hostnameRE.MatchString(ip.Hostname) {
		p = append(p, fmt.Sprintf("ip.hostname %q is not a host name", ip.Hostname))
	}
	if ip.Interface != "" && !ifaceRE.MatchString(ip.Interface) {
		p = append(p, fmt.Sprintf("ip.interface %q is not an interface name (up to 15 letters, digits, '.', '_', '-')", ip.Interface))
	}
	if len(p) > 0 {
		return fmt.Errorf("%s", strings.Join(p, "; "))
	}
	return nil
}

// IsZero reports whether nothing is to be passed to the guest.
func (ip IPSettings) IsZero() bool {
	return ip.Address == "" && !ip.DHCP && ip.Gateway == "" && len(ip.DNS) == 0 && ip.Hostname == ""
}

// KernelArg is the kernel's ip= parameter for the settings
// (Documentation/admin-guide/nfs/nfsroot.rst:
// ip=client:server:gw:netmask:hostname:device:autoconf:dns0:dns1), or ""
// when there is nothing to pass. Validate first.
func (ip IPSettings) KernelArg() string {
	if ip.IsZero() {
		return ""
	}
	var client, mask string
	if pf, err := netip.ParsePrefix(ip.Address); err == nil {
		client = pf.Addr().String()
		mask = netmask(pf.Bits())
	}
	auto := "off"
	if ip.DHCP {
		auto = "dhcp"
	}
	f := []string{client, "", ip.Gateway, mask, ip.Hostname, ip.Interface, auto}
	for i := 0; i < len(ip.DNS) && i < 2; i++ {
		f = append(f, ip.DNS[i])
	}
	return "ip=" + strings.Join(f, ":")
}

// netmask is the dotted IPv4 mask of a prefix length.
func netmask(bits int) string {
	m := ^uint32(0) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// Env is the settings as KEY=VALUE pairs (STANDBY_IP_ADDRESS, ...), only
// those set.
func (ip IPSettings) Env() []string {
	var e []string
	add := func(k, v string) {
		if v != "" {
			e = append(e, "STANDBY_IP_"+k+"="+v)
		}
	}
	add("ADDRESS", ip.Address)
	add("GATEWAY", ip.Gateway)
	add("DNS", strings.Join(ip.DNS, " "))
	add("HOSTNAME", ip.Hostname)
	add("INTERFACE", ip.Interface)
	if ip.DHCP {
		add("DHCP", "1")
	}
	return e
}

// Validate checks a direct kernel boot.
func (b Boot) Validate() error {
	if b.Kernel == "" {
		if b.Initrd != "" || b.Append != "" {
			return fmt.Errorf("boot: initrd and append need a kernel")
		}
		return nil
	}
	if !filepath.IsAbs(b.Kernel) {
		return fmt.Errorf("boot.kernel %q is not absolute", b.Kernel)
	}
	if b.Initrd != "" && !filepath.IsAbs(b.Initrd) {
		return fmt.Errorf("boot.initrd %q is not absolute", b.Initrd)
	}
	return nil
}
