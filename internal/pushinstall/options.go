package pushinstall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"
)

// API is the part of the configuration server's API client that Install
// uses (client.Client has it): the caller's user token, which may list
// servers and machines.
type API interface {
	Do(ctx context.Context, method, path string, body, out any) error
}

// Disk is one protected disk on the remote machine.
type Disk struct {
	Name string // the NBD export name, e.g. vda
	Path string // an image file or block device on the remote machine
}

// ParseDisk reads NAME=PATH.
func ParseDisk(s string) (Disk, error) {
	name, p, ok := strings.Cut(s, "=")
	if !ok || name == "" || p == "" {
		return Disk{}, fmt.Errorf("disk %q: want NAME=PATH, e.g. vda=/var/lib/images/web01.img", s)
	}
	return Disk{Name: name, Path: p}, nil
}

// Options say where to install, as whom, and what.
type Options struct {
	// Host is host:port of the machine's sshd; a bare host means port 22.
	Host string
	// User logs in; not root means every remote command runs under
	// `sudo -n` (password-less sudo is then required).
	User string

	// Authentication: KeyFile (an unencrypted private key), AgentSocket
	// (an ssh-agent; default $SSH_AUTH_SOCK when no key is given), and
	// Password only when set explicitly.
	KeyFile     string
	AgentSocket string
	Password    string

	// Host key checking: HostKeyFingerprint pins the key
	// ("SHA256:..." as ssh-keygen -lf prints it); else KnownHosts is a
	// known_hosts file (default ~/.ssh/known_hosts). A key that neither
	// names is refused with a *HostKeyError.
	KnownHosts         string
	HostKeyFingerprint string

	// Binary is the standby binary copied to the host; default the
	// running executable.
	Binary string

	// ServerURL is https://HOST:PORT of the configuration server as the
	// remote machine reaches it.
	ServerURL string
	// JoinToken is a one-time agent join token the caller made (POST
	// /v1/tokens). It is sent through the SSH session's stdin, never on
	// a command line, and never logged.
	JoinToken string
	// Name is the name the agent joins as (unique among agents); default
	// Machine.
	Name string

	// Machine is the protected machine's name; Disks its disks.
	Machine string
	Disks   []Disk

	// Prefix is the remote install directory (default /opt/standby);
	// StateDir the agent's state directory (default
	// /var/lib/standby/agent/MACHINE); Socket its NBD unix socket
	// (default /run/standby/MACHINE.sock); Status an optional HTTP status
	// listener (host:port) on the remote machine.
	Prefix   string
	StateDir string
	Socket   string
	Status   string
	// Heartbeat is the agent's control heartbeat (default 10s).
	Heartbeat string

	// API, when set, is used to wait until the configuration server lists
	// the joined agent and its machine: the proof that the install
	// worked. Without it Install only checks that the process runs.
	API API
	// WaitTimeout bounds the wait step (default 2m).
	WaitTimeout time.Duration
	// NoSystemd starts the agent with setsid/nohup even where systemd is
	// PID 1.
	NoSystemd bool

	// Progress, when set, is told of every step as it starts and ends.
	Progress func(Event)
	// Logger, when set, logs the steps (never the token).
	Logger *slog.Logger
}

// Event is one step's progress.
type Event struct {
	Step    string `json:"step"`
	State   string `json:"state"` // running, done, skipped
	Message string `json:"message,omitempty"`
}

// Step names, in order.
const (
	StepConnect = "connect"
	StepProbe   = "probe"
	StepBinary  = "binary"
	StepJoin    = "join"
	StepConfig  = "config"
	StepStart   = "start"
	StepWait    = "wait"
)

// Result is what Install did and where things are on the remote machine.
type Result struct {
	Host        string  `json:"host"`
	Arch        string  `json:"arch"` // uname -sm
	Systemd     bool    `json:"systemd"`
	Binary      string  `json:"binary"`
	Config      string  `json:"config"`
	IdentityDir string  `json:"identity_dir"`
	StateDir    string  `json:"state_dir"`
	Unit        string  `json:"unit,omitempty"`     // with systemd
	PIDFile     string  `json:"pid_file,omitempty"` // without
	Log         string  `json:"log,omitempty"`      // without systemd
	ServerID    string  `json:"server_id,omitempty"`
	Steps       []Event `json:"steps"`
}

var (
	machineName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)
	fingerprint = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}=?$`)
)

// withDefaults fills the defaulted fields and checks the rest; every
// problem is listed at once. Without full only what a connection and the
// remote layout need is checked (Uninstall).
func (o Options) withDefaults(full bool) (Options, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if o.Host == "" {
		bad("host: required (HOST or HOST:PORT of the machine's sshd)")
	} else if _, _, err := net.SplitHostPort(o.Host); err != nil {
		o.Host = net.JoinHostPort(strings.Trim(o.Host, "[]"), "22")
	}
	if o.User == "" {
		o.User = "root"
	}
	if o.KeyFile == "" && o.AgentSocket == "" && o.Password == "" {
		o.AgentSocket = os.Getenv("SSH_AUTH_SOCK")
		if o.AgentSocket == "" {
			bad("auth: give a private key file (--key), an ssh-agent ($SSH_AUTH_SOCK) or, explicitly, a password")
		}
	}
	if o.HostKeyFingerprint != "" && !fingerprint.MatchString(o.HostKeyFingerprint) {
		bad("host key fingerprint %q: want SHA256:<43 base64 characters>, as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on the host", o.HostKeyFingerprint)
	}
	if o.HostKeyFingerprint == "" && o.KnownHosts == "" {
		if home, err := os.UserHomeDir(); err == nil {
			o.KnownHosts = path.Join(home, ".ssh", "known_hosts")
		}
	}
	if !machineName.MatchString(o.Machine) {
		bad("machine: %q must be 1-63 letters, digits, '.', '_' or '-'", o.Machine)
	}
	if full {
		o, errs = o.installDefaults(errs)
	}
	abs := func(field string, p *string, def string) {
		if *p == "" {
			*p = def
		}
		if !path.IsAbs(*p) || strings.ContainsAny(*p, " \t\n\"'\\") {
			bad("%s: %q must be an absolute path on the remote machine, without spaces or quotes", field, *p)
		}
		*p = path.Clean(*p)
	}
	abs("prefix", &o.Prefix, "/opt/standby")
	abs("state dir", &o.StateDir, "/var/lib/standby/agent/"+o.Machine)
	abs("socket", &o.Socket, "/run/standby/"+o.Machine+".sock")
	if o.WaitTimeout == 0 {
		o.WaitTimeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("push install options:\n%w", err)
	}
	return o, nil
}

// installDefaults checks and fills what only Install needs.
func (o Options) installDefaults(errs []error) (Options, []error) {
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			bad("binary: %v (give the path of the standby binary to copy)", err)
		}
		o.Binary = exe
	}
	if u, err := url.Parse(o.ServerURL); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("server: %q is not https://HOST:PORT of the configuration server", o.ServerURL)
	}
	if o.JoinToken == "" {
		bad("join token: required (POST /v1/tokens with role agent, or `standby token create --role agent`)")
	}
	if o.Name == "" {
		o.Name = o.Machine
	}
	if len(o.Disks) == 0 {
		bad("disks: at least one NAME=PATH is required")
	}
	for i, d := range o.Disks {
		if !path.IsAbs(d.Path) {
			bad("disks[%d] %s: path %q must be absolute", i, d.Name, d.Path)
		}
	}
	if o.Status != "" {
		if _, _, err := net.SplitHostPort(o.Status); err != nil {
			bad("status: %q is not host:port", o.Status)
		}
	}
	if o.Heartbeat == "" {
		o.Heartbeat = "10s"
	}
	return o, errs
}

// layout is where things go on the remote machine.
type layout struct {
	bin, dir, config, identity, pid, log, unit, unitPath string
}

func (o Options) layout() layout {
	dir := path.Join(o.Prefix, o.Machine)
	unit := UnitName(o.Machine)
	return layout{
		bin:      path.Join(o.Prefix, "bin", "standby"),
		dir:      dir,
		config:   path.Join(dir, "agent.yaml"),
		identity: path.Join(dir, "identity"),
		pid:      path.Join(dir, "agent.pid"),
		log:      path.Join(dir, "agent.log"),
		unit:     unit,
		unitPath: path.Join("/etc/systemd/system", unit),
	}
}

// UnitName is the systemd unit of machine's agent.
func UnitName(machine string) string { return "standby-agent-" + machine + ".service" }
