package target

import (
	"errors"
	"fmt"
	"github.com/standby-dr/standby/internal/manage"
	"net"
	"time"

	"github.com/standby-dr/standby/internal/config"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/retention"
	"github.com/standby-dr/standby/internal/wire"
)

// Config is the master target's configuration file
// (configs/target.sample.yaml).
type Config struct {
	// Listen is host:port for process servers.
	Listen string `yaml:"listen"`
	// DataDir holds the replicas.
	DataDir string `yaml:"data_dir"`
	// TLS files; not used (and optional) when Control is set: the joined
	// identity is used instead.
	TLS wire.TLSFiles `yaml:"tls"`
	// Control, when set, puts the target under a configuration server
	// (controlconfig.go).
	Control *manage.Section `yaml:"control,omitempty"`
	// Retention of recovery points, with thinning.
	Retention RetentionConfig `yaml:"retention"`
	// PruneInterval is how often retention runs (1s..1h).
	PruneInterval string `yaml:"prune_interval"`
	// Status is an optional HTTP listener for /status, points and /metrics.
	Status string `yaml:"status,omitempty"`
	// Exports, when set, serves recovery points over NBD (export_config.go).
	Exports *ExportsConfig `yaml:"exports,omitempty"`
	// Driver, when set, is the machine driver test failovers start their
	// replica machines with (docs/drivers.md); it needs control: and
	// exports:. cmd/ builds it from the registry of drivers.
	Driver   *driver.Config `yaml:"driver,omitempty"`
	LogLevel string         `yaml:"log_level"`
}

// RetentionConfig is retention.Policy with durations as text.
type RetentionConfig struct {
	KeepAll           string `yaml:"keep_all"` // every point newer than this
	Hourly            int    `yaml:"hourly"`   // newest point of each of the last N hours
	Daily             int    `yaml:"daily"`    // newest point of each of the last N days
	Max               string `yaml:"max"`      // nothing older than this (0: no limit)
	KeepAppConsistent int    `yaml:"keep_app_consistent"`
}

// Defaults returns the defaulted fields.
func Defaults() Config {
	p := retention.Defaults()
	return Config{
		Retention:     RetentionConfig{KeepAll: p.KeepAll.String(), Hourly: p.Hourly, Daily: p.Daily, Max: p.Max.String(), KeepAppConsistent: p.KeepAppConsistent},
		PruneInterval: "10s", LogLevel: "info",
	}
}

// LoadConfig reads a YAML file over the defaults; unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	c := Defaults()
	if err := config.Load(path, &c); err != nil {
		return c, err
	}
	return c, nil
}

// Policy is the retention policy the configuration describes.
func (r RetentionConfig) Policy() (retention.Policy, error) {
	var p retention.Policy
	var err error
	if p.KeepAll, err = time.ParseDuration(r.KeepAll); err != nil {
		return p, fmt.Errorf("retention.keep_all: %q is not a duration like 1h", r.KeepAll)
	}
	if p.Max, err = time.ParseDuration(r.Max); err != nil {
		return p, fmt.Errorf("retention.max: %q is not a duration like 168h", r.Max)
	}
	p.Hourly, p.Daily, p.KeepAppConsistent = r.Hourly, r.Daily, r.KeepAppConsistent
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("retention: %w", err)
	}
	return p, nil
}

// Validate lists every problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %q is not host:port", c.Listen)
	}
	if c.DataDir == "" {
		bad("data_dir: required (a directory for the replicas)")
	}
	if c.Control != nil {
		errs = append(errs, c.Control.Validate("target", "process servers", c.Listen)...)
	} else {
		errs = append(errs, c.TLS.Validate("tls")...)
	}
	if _, err := c.Retention.Policy(); err != nil {
		errs = append(errs, err)
	}
	if d, err := time.ParseDuration(c.PruneInterval); err != nil || d < time.Second || d > time.Hour {
		bad("prune_interval: %q is not a duration in 1s..1h", c.PruneInterval)
	}
	errs = append(errs, c.Exports.validate()...)
	if c.Driver != nil {
		if c.Driver.Name == "" {
			bad("driver.name: required (exec or qemu; docs/drivers.md)")
		}
		if c.Control == nil {
			bad("driver: test failovers come from the configuration server: set control: too, or leave driver: out")
		}
		if c.Exports == nil {
			bad("driver: replica machines run from exports: set exports: too, or leave driver: out")
		}
	}
	if err := config.CheckLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Options turns a valid configuration into Options.
func (c *Config) Options() (Options, error) {
	if err := c.Validate(); err != nil {
		return Options{}, fmt.Errorf("master target configuration:\n%w", err)
	}
	o := Options{DataDir: c.DataDir, Exports: c.Exports.options()}
	o.Retention, _ = c.Retention.Policy()
	o.PruneInterval, _ = time.ParseDuration(c.PruneInterval)
	if c.Control != nil {
		o.Control = c.Control.Control("process servers", c.Listen)
		return o, nil
	}
	var err error
	o.TLS, err = c.TLS.ServerConfig()
	return o, err
}
