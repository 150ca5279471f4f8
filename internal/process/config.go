package process

import (
	"errors"
	"fmt"
	"github.com/standby-dr/standby/internal/manage"
	"net"

	"github.com/standby-dr/standby/internal/config"
	"github.com/standby-dr/standby/internal/segpack"
	"github.com/standby-dr/standby/internal/units"
	"github.com/standby-dr/standby/internal/wire"
)

// Config is the process server's configuration file
// (configs/process.sample.yaml).
type Config struct {
	// Listen is host:port for agents.
	Listen string `yaml:"listen"`
	// CacheDir holds the spool.
	CacheDir string `yaml:"cache_dir"`
	// CacheQuota bounds the cache. Required, no default: it decides how
	// long a WAN outage is ridden out before agents fall back to dirty
	// bitmaps.
	CacheQuota string `yaml:"cache_quota"`
	// MasterTarget is host:port of the master target.
	MasterTarget string `yaml:"master_target"`
	// MasterTargetName is the name its certificate must carry; default the
	// host part of MasterTarget.
	MasterTargetName string `yaml:"master_target_name,omitempty"`
	// TLS: this server's certificate, key and the CA of its peers. Not
	// used (and optional) when Control is set: the joined identity is.
	TLS wire.TLSFiles `yaml:"tls"`
	// Control, when set, puts the process server under a configuration
	// server (controlconfig.go): master_target then comes from the
	// desired state of each machine.
	Control *manage.Section `yaml:"control,omitempty"`
	// BandwidthLimit bounds the link to the master target, like 50MiB/s,
	// or off.
	BandwidthLimit string `yaml:"bandwidth_limit"`
	// Compression is the zstd level: none, fastest, standard, better,
	// best; or auto (fastest, skipped while the compressor is the
	// bottleneck).
	Compression string `yaml:"compression"`
	// Copies is how initial copies cross this server: tunnel (the agent's
	// TLS session with the master target, relayed encrypted; the agent
	// compresses) or relay (Copy frames this server decrypts, compresses
	// and sends on). Default tunnel.
	Copies string `yaml:"copies"`
	// Status is an optional HTTP listener for /status and /metrics.
	Status   string `yaml:"status,omitempty"`
	LogLevel string `yaml:"log_level"`
}

// Defaults returns the defaulted fields.
func Defaults() Config {
	return Config{BandwidthLimit: "off", Compression: "auto", Copies: "tunnel", LogLevel: "info"}
}

// LoadConfig reads a YAML file over the defaults; unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	c := Defaults()
	if err := config.Load(path, &c); err != nil {
		return c, err
	}
	return c, nil
}

// Validate lists every problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %q is not host:port", c.Listen)
	}
	if c.CacheDir == "" {
		bad("cache_dir: required (a directory for the cache)")
	}
	if q, err := units.ParseSize(c.CacheQuota); err != nil || q < 64<<20 {
		bad("cache_quota: required, a size of at least 64MiB like 20GiB (got %q)", c.CacheQuota)
	}
	if c.Control != nil {
		errs = append(errs, c.Control.Validate("process", "agents", c.Listen)...)
		if c.MasterTarget != "" {
			bad("master_target: not used in managed mode (the desired state names each machine's master target); remove it")
		}
	} else {
		if _, _, err := net.SplitHostPort(c.MasterTarget); err != nil {
			bad("master_target: %q is not host:port", c.MasterTarget)
		}
		errs = append(errs, c.TLS.Validate("tls")...)
	}
	if _, err := units.ParseRate(c.BandwidthLimit); err != nil {
		bad("bandwidth_limit: %v", err)
	}
	if _, err := segpack.ParseLevel(c.Compression); err != nil && c.Compression != "auto" {
		bad("compression: %v, or auto", err)
	}
	if c.Copies != "tunnel" && c.Copies != "relay" {
		bad("copies: %q: want tunnel or relay", c.Copies)
	}
	if err := config.CheckLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Options turns a valid configuration into Options.
func (c *Config) Options() (Options, error) {
	if err := c.Validate(); err != nil {
		return Options{}, fmt.Errorf("process server configuration:\n%w", err)
	}
	o := Options{CacheDir: c.CacheDir, Target: c.MasterTarget, NoTunnel: c.Copies == "relay"}
	o.Quota, _ = units.ParseSize(c.CacheQuota)
	o.Bandwidth, _ = units.ParseRate(c.BandwidthLimit)
	if c.Compression == "auto" {
		o.Pack.Level, o.Adaptive = segpack.LevelFastest, true
	} else {
		o.Pack.Level, _ = segpack.ParseLevel(c.Compression)
	}
	if c.Control != nil {
		o.Control = c.Control.Control("agents", c.Listen)
		return o, nil
	}
	var err error
	if o.TLS, err = c.TLS.ServerConfig(); err != nil {
		return o, err
	}
	name := c.MasterTargetName
	if name == "" {
		name, _, _ = net.SplitHostPort(c.MasterTarget)
	}
	if o.TargetTLS, err = c.TLS.ClientConfig(name); err != nil {
		return o, err
	}
	return o, nil
}
