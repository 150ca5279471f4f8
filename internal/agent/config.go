package agent

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"time"

	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/config"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/units"
	"github.com/standby-dr/standby/internal/wire"
)

// Config is the agent's configuration file (configs/agent.sample.yaml is a
// commented example). Defaults live in Defaults; Validate lists what is
// wrong.
type Config struct {
	// Machine is the protected machine's name, as operators see it.
	Machine string `yaml:"machine"`
	// StateDir holds the journal, dirty bitmap, activity log and state.
	StateDir string       `yaml:"state_dir"`
	Listen   ListenConfig `yaml:"listen"`
	TLS      *TLSConfig   `yaml:"tls,omitempty"`
	Disks    []DiskConfig `yaml:"disks"`
	Journal  JournalConf  `yaml:"journal"`
	// BookmarkInterval is the crash-consistent recovery point interval
	// (1s..1h), or "off".
	BookmarkInterval string `yaml:"bookmark_interval"`
	// Status is an optional HTTP listener for /status, /bookmark and
	// /metrics (host:port or a unix socket path).
	Status string `yaml:"status,omitempty"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// AppConsistent schedules app-consistent bookmarks (quiesce.go).
	AppConsistent AppConsistentConfig `yaml:"app_consistent"`
	// Replication ships the journal to a process server; without it the
	// agent only captures. In managed mode the configuration server names
	// the process server, and this section only tunes shipping.
	Replication *ReplicationConfig `yaml:"replication,omitempty"`
	// Control makes the agent managed by a configuration server
	// (control.go); without it the agent runs from this file alone.
	Control *ControlConfig `yaml:"control,omitempty"`
	// Source is the protected machine as its machine driver knows it: a
	// planned failover stops it through the driver before draining
	// (drain.go). Without it the agent only refuses writes.
	Source *SourceConfig `yaml:"source,omitempty"`
}

// SourceConfig names the protected machine to its machine driver
// (docs/drivers.md): the same drivers that start replica machines at the
// master target.
type SourceConfig struct {
	Driver driver.Config `yaml:"driver"`
	// Handle is the machine's handle for the driver (exec: passed to the
	// stop and status commands; qemu: the machine's name).
	Handle string `yaml:"handle"`
}

// ReplicationConfig names the process server the journal is shipped to.
type ReplicationConfig struct {
	// ProcessServer is host:port of the process server.
	ProcessServer string `yaml:"process_server"`
	// ServerName is the name its certificate must carry; default the host
	// part of ProcessServer.
	ServerName string `yaml:"server_name,omitempty"`
	// TLS: this agent's certificate and key, and the CA of its peers.
	// Required: every connection between roles is mutual TLS.
	TLS wire.TLSFiles `yaml:"tls"`
	// ShipInterval seals the active segment at least this often, so that
	// the achieved RPO stays near it under light load (100ms..10s).
	ShipInterval string `yaml:"ship_interval"`
	// Window is how many segments may be in flight unacknowledged (1..64).
	Window int `yaml:"window"`
}

// AppConsistentConfig names the quiesce hooks run around an app-consistent
// bookmark: pre, then fsfreeze -f of each mount, the bookmark, fsfreeze -u
// of each frozen mount in reverse order, then post.
type AppConsistentConfig struct {
	// Interval between app-consistent bookmarks (1m..24h), or "off".
	Interval string `yaml:"interval"`
	// Timeout bounds each hook step (1s..5m).
	Timeout string `yaml:"timeout"`
	// FSFreeze lists mount points (absolute paths) to freeze, in order.
	FSFreeze []string `yaml:"fsfreeze,omitempty"`
	// Pre is an optional command (argv, absolute program path) run before
	// freezing; when it fails the bookmark is only crash-consistent.
	Pre []string `yaml:"pre,omitempty"`
	// Post is an optional command run after thawing, on every attempt,
	// whether or not pre and the freezes succeeded.
	Post []string `yaml:"post,omitempty"`
}

// ListenConfig names the NBD listeners; at least one is required.
type ListenConfig struct {
	Unix string `yaml:"unix,omitempty"` // socket path
	TCP  string `yaml:"tcp,omitempty"`  // host:port
}

// TLSConfig enables STARTTLS on the NBD listeners.
type TLSConfig struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca,omitempty"` // when set, clients must present a certificate it signed
	Required bool   `yaml:"required"`            // refuse clients that do not start TLS
}

// DiskConfig is one protected disk: a regular file or a block device.
type DiskConfig struct {
	Name     string `yaml:"name"`
	Path     string `yaml:"path"`
	ReadOnly bool   `yaml:"read_only,omitempty"`
}

// JournalConf bounds the journal. Sizes take a unit: 64MiB, 1GiB, 512KiB.
type JournalConf struct {
	SegmentSize string `yaml:"segment_size"`
	Limit       string `yaml:"limit"`
}

// Defaults returns a configuration with every defaulted field filled in.
// Machine, StateDir, Listen and Disks have no defaults.
func Defaults() Config {
	return Config{
		Journal: JournalConf{
			SegmentSize: FormatSize(capture.DefaultSegmentSize),
			Limit:       FormatSize(capture.DefaultJournalLimit),
		},
		BookmarkInterval: capture.DefaultBookmarkInterval.String(),
		LogLevel:         "info",
		AppConsistent:    AppConsistentConfig{Interval: "off", Timeout: "10s"},
	}
}

// LoadConfig reads a YAML configuration over the defaults. Unknown fields
// are errors.
func LoadConfig(path string) (Config, error) {
	c := Defaults()
	if err := config.Load(path, &c); err != nil {
		return c, err
	}
	if c.Replication != nil {
		c.Replication.fillDefaults()
	}
	if c.Control != nil {
		c.Control.fillDefaults()
	}
	return c, nil
}

var diskName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// Validate checks the configuration and returns every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Machine == "" {
		bad("machine: required (the protected machine's name)")
	}
	if c.StateDir == "" {
		bad("state_dir: required (a directory for the journal)")
	}
	if c.Listen.Unix == "" && c.Listen.TCP == "" {
		bad("listen: set unix (a socket path) or tcp (host:port), or both")
	}
	if len(c.Disks) == 0 {
		bad("disks: at least one disk is required")
	}
	seen := map[string]bool{}
	for i, d := range c.Disks {
		if !diskName.MatchString(d.Name) {
			bad("disks[%d].name: %q must be 1-63 letters, digits, '.', '_' or '-'", i, d.Name)
		}
		if seen[d.Name] {
			bad("disks[%d].name: %q is used twice", i, d.Name)
		}
		seen[d.Name] = true
		if d.Path == "" {
			bad("disks[%d].path: required (an image file or block device)", i)
		}
	}
	seg, err := ParseSize(c.Journal.SegmentSize)
	if err != nil {
		bad("journal.segment_size: %v", err)
	}
	limit, err2 := ParseSize(c.Journal.Limit)
	if err2 != nil {
		bad("journal.limit: %v", err2)
	}
	if err == nil && err2 == nil && (seg < 64<<10 || seg > 64<<20 || limit < 2*seg) {
		bad("journal: segment_size must be within 64KiB..64MiB and limit at least two segments (got %s and %s)", c.Journal.SegmentSize, c.Journal.Limit)
	}
	if _, err := c.bookmarkInterval(); err != nil {
		bad("bookmark_interval: %v", err)
	}
	if c.TLS != nil && (c.TLS.Cert == "" || c.TLS.Key == "") {
		bad("tls: cert and key are required when tls is set")
	}
	errs = append(errs, c.AppConsistent.validate()...)
	switch {
	case c.Control != nil:
		errs = append(errs, c.Control.validate()...)
		if c.Replication != nil {
			errs = append(errs, c.Replication.validateManaged()...)
		}
	case c.Replication != nil:
		errs = append(errs, c.Replication.validate()...)
	}
	if c.Source != nil {
		if c.Source.Driver.Name == "" {
			bad("source.driver.name: required (exec or qemu; docs/drivers.md)")
		}
		if c.Source.Handle == "" {
			bad("source.handle: required (the machine's handle for its driver)")
		}
		if c.Control == nil {
			bad("source: planned failovers come from the configuration server: set control: too, or leave source: out")
		}
	}
	if err := config.CheckLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) bookmarkInterval() (time.Duration, error) {
	return parseInterval(c.BookmarkInterval, "10s", time.Second, time.Hour, "1s..1h", true)
}

// parseInterval reads a duration within [lo, hi] (named span in errors);
// with offOK, "off" reads as -1.
func parseInterval(s, example string, lo, hi time.Duration, span string, offOK bool) (time.Duration, error) {
	if offOK && s == "off" {
		return -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if offOK {
			return 0, fmt.Errorf("%q is not a duration like %s, or off", s, example)
		}
		return 0, fmt.Errorf("%q is not a duration like %s", s, example)
	}
	if d < lo || d > hi {
		if offOK {
			return 0, fmt.Errorf("%s is outside %s (or off)", d, span)
		}
		return 0, fmt.Errorf("%s is outside %s", d, span)
	}
	return d, nil
}

// ReplicationDefaults are the defaults of a replication section.
func ReplicationDefaults() ReplicationConfig {
	return ReplicationConfig{ShipInterval: "500ms", Window: 8}
}

func (r *ReplicationConfig) fillDefaults() {
	d := ReplicationDefaults()
	if r.ShipInterval == "" {
		r.ShipInterval = d.ShipInterval
	}
	if r.Window == 0 {
		r.Window = d.Window
	}
}

func (r *ReplicationConfig) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(r.ProcessServer); err != nil {
		bad("replication.process_server: %q is not host:port", r.ProcessServer)
	}
	errs = append(errs, r.TLS.Validate("replication.tls")...)
	if _, err := r.shipInterval(); err != nil {
		bad("replication.ship_interval: %v", err)
	}
	if r.Window < 1 || r.Window > 64 {
		bad("replication.window: %d is outside 1..64", r.Window)
	}
	return errs
}

// validateManaged checks a replication section of a managed agent: the
// configuration server names the process server and the joined identity
// is the certificate, so only the tuning may be set.
func (r *ReplicationConfig) validateManaged() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if r.ProcessServer != "" || r.ServerName != "" {
		bad("replication.process_server: the configuration server names the process server in managed mode (control: is set); remove process_server and server_name")
	}
	if r.TLS != (wire.TLSFiles{}) {
		bad("replication.tls: a managed agent uses its joined identity (control.identity); remove replication.tls")
	}
	if _, err := r.shipInterval(); err != nil {
		bad("replication.ship_interval: %v", err)
	}
	if r.Window < 1 || r.Window > 64 {
		bad("replication.window: %d is outside 1..64", r.Window)
	}
	return errs
}

func (r *ReplicationConfig) shipInterval() (time.Duration, error) {
	return parseInterval(r.ShipInterval, "500ms", 100*time.Millisecond, 10*time.Second, "100ms..10s", false)
}

func (r *ReplicationConfig) serverName() string {
	if r.ServerName != "" {
		return r.ServerName
	}
	h, _, _ := net.SplitHostPort(r.ProcessServer)
	return h
}

func (q *AppConsistentConfig) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	interval, err := q.interval()
	if err != nil {
		bad("app_consistent.interval: %v", err)
	}
	if _, err := q.timeout(); err != nil {
		bad("app_consistent.timeout: %v", err)
	}
	seen := map[string]bool{}
	for i, m := range q.FSFreeze {
		if !filepath.IsAbs(m) {
			bad("app_consistent.fsfreeze[%d]: %q must be an absolute mount point path", i, m)
		}
		if seen[filepath.Clean(m)] {
			bad("app_consistent.fsfreeze[%d]: %q is listed twice", i, m)
		}
		seen[filepath.Clean(m)] = true
	}
	for _, h := range []struct {
		name string
		argv []string
	}{{"pre", q.Pre}, {"post", q.Post}} {
		if len(h.argv) > 0 && !filepath.IsAbs(h.argv[0]) {
			bad("app_consistent.%s: %q must be an absolute program path, then its arguments", h.name, h.argv[0])
		}
	}
	if err == nil && interval > 0 && len(q.FSFreeze) == 0 && len(q.Pre) == 0 {
		bad("app_consistent: interval is %s but nothing quiesces the applications (set fsfreeze, pre, or both)", q.Interval)
	}
	return errs
}

// interval is the app-consistent bookmark interval, or -1 for off.
func (q *AppConsistentConfig) interval() (time.Duration, error) {
	return parseInterval(q.Interval, "1h", time.Minute, 24*time.Hour, "1m..24h", true)
}

// timeout bounds one hook step.
func (q *AppConsistentConfig) timeout() (time.Duration, error) {
	return parseInterval(q.Timeout, "10s", time.Second, 5*time.Minute, "1s..5m", false)
}

// ParseSize reads a size like 512KiB, 64MiB, 1GiB or a plain byte count.
func ParseSize(s string) (int64, error) { return units.ParseSize(s) }

// FormatSize writes a size the way ParseSize reads it.
func FormatSize(n int64) string { return units.FormatSize(n) }
