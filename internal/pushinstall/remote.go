package pushinstall

import (
	"bytes"
	"debug/elf"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/standby-dr/standby/internal/agent"
)

// AgentConfig is the agent's configuration file for o: managed mode (the
// control section names the server and the join directory), the NBD unix
// socket and the disks. It is validated as the agent would.
func AgentConfig(o Options) ([]byte, error) {
	l := o.layout()
	c := agent.Defaults()
	c.Machine = o.Machine
	c.StateDir = o.StateDir
	c.Listen.Unix = o.Socket
	c.Status = o.Status
	for _, d := range o.Disks {
		c.Disks = append(c.Disks, agent.DiskConfig{Name: d.Name, Path: d.Path})
	}
	c.Control = &agent.ControlConfig{Server: o.ServerURL, Identity: l.identity, Heartbeat: o.Heartbeat}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("agent configuration:\n%w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by `standby agent install` for machine %s: a second install\n# rewrites it. configs/agent.sample.yaml explains every field.\n", o.Machine)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	enc.Close()
	return b.Bytes(), nil
}

// Unit is the systemd unit that runs o's agent.
func Unit(o Options) string {
	l := o.layout()
	return fmt.Sprintf(`# Written by `+"`standby agent install`"+`; a second install rewrites it.
[Unit]
Description=Standby agent for machine %[1]s
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=%[2]s agent --config %[3]s
Restart=on-failure
RestartSec=5s
# SIGTERM lets the agent seal its journal and close the disks cleanly.
KillSignal=SIGTERM
TimeoutStopSec=60s
# /run/standby holds the NBD sockets of every agent on this host: kept
# when one of them stops.
RuntimeDirectory=standby
RuntimeDirectoryPreserve=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`, o.Machine, l.bin, l.config)
}

// unameMachines are the `uname -m` values an ELF machine runs on.
var unameMachines = map[elf.Machine][]string{
	elf.EM_X86_64:    {"x86_64"},
	elf.EM_AARCH64:   {"aarch64", "arm64", "aarch64_be"},
	elf.EM_386:       {"i386", "i486", "i586", "i686"},
	elf.EM_ARM:       {"armv6l", "armv7l", "armv8l"},
	elf.EM_RISCV:     {"riscv64"},
	elf.EM_PPC64:     {"ppc64", "ppc64le"},
	elf.EM_S390:      {"s390x"},
	elf.EM_LOONGARCH: {"loongarch64"},
}

// binaryArch reads the binary's ELF header: the `uname -m` values it runs
// on, and a name for errors.
func binaryArch(path string) ([]string, string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("binary %s is not a Linux executable: %w", path, err)
	}
	defer f.Close()
	ms, ok := unameMachines[f.Machine]
	if !ok {
		return nil, "", fmt.Errorf("binary %s: machine %s is not one push install knows", path, f.Machine)
	}
	return ms, f.Machine.String(), nil
}

// archMatches says whether `uname -sm` output names a machine the binary
// runs on.
func archMatches(uname string, ms []string) bool {
	f := strings.Fields(uname)
	return len(f) == 2 && f[0] == "Linux" && slices.Contains(ms, f[1])
}
