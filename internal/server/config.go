package server

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"time"

	"github.com/standby-dr/standby/internal/config"
)

// Config is the configuration server's configuration file
// (configs/server.sample.yaml).
type Config struct {
	// Listen is host:port of the API (HTTPS; users with API tokens,
	// components with client certificates).
	Listen string `yaml:"listen"`
	// DataDir holds the CA, the server's certificate, the first admin's
	// token and (by default) the SQLite database.
	DataDir string `yaml:"data_dir"`
	// Store selects the database: sqlite:PATH (default: sqlite in
	// data_dir) or postgres://USER@HOST/DB.
	Store string `yaml:"store"`
	// Hosts are the names and addresses in the server's certificate: what
	// clients dial. Default: localhost and 127.0.0.1.
	Hosts []string `yaml:"hosts"`
	// CertValidity of the certificates issued to components at join.
	CertValidity string `yaml:"cert_validity"`
	// AlertWebhook, when set, receives every alert raised or cleared as
	// a JSON POST: {"event": "raised"|"cleared", "alert": {...}}.
	AlertWebhook string `yaml:"alert_webhook"`
	// Status is an optional plain-HTTP listener for Prometheus /metrics.
	Status   string `yaml:"status,omitempty"`
	LogLevel string `yaml:"log_level"`
	// ConsistencyInterval is how often the machines of each recovery plan
	// bookmark together at a barrier (multi-machine consistent points;
	// 1s..1h), or "off".
	ConsistencyInterval string `yaml:"consistency_interval"`
}

// Defaults returns the defaulted fields.
func Defaults() Config {
	return Config{Hosts: []string{"localhost", "127.0.0.1"}, CertValidity: "720h", LogLevel: "info", ConsistencyInterval: "30s"}
}

// LoadConfig reads a YAML file over the defaults; unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	c := Defaults()
	if err := config.Load(path, &c); err != nil {
		return c, err
	}
	return c, nil
}

// StoreURL is the store to open: Store, or the SQLite file in DataDir.
func (c *Config) StoreURL() string {
	if c.Store != "" {
		return c.Store
	}
	return "sqlite:" + filepath.Join(c.DataDir, "standby.db")
}

// Validate lists every problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen: %q is not host:port", c.Listen)
	}
	if c.DataDir == "" {
		bad("data_dir: required (a directory for the CA, the server certificate and the database)")
	}
	if c.Status != "" {
		if _, _, err := net.SplitHostPort(c.Status); err != nil {
			bad("status: %q is not host:port", c.Status)
		}
	}
	if len(c.Hosts) == 0 {
		bad("hosts: at least one name or address clients dial")
	}
	if _, err := parseValidity(c.CertValidity); err != nil {
		bad("cert_validity: %v", err)
	}
	if c.AlertWebhook != "" {
		if u, err := url.Parse(c.AlertWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("alert_webhook: %q is not an http(s) URL", c.AlertWebhook)
		}
	}
	if _, err := c.consistencyInterval(); err != nil {
		bad("consistency_interval: %v", err)
	}
	if err := config.CheckLogLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// consistencyInterval is ConsistencyInterval; 0 for off.
func (c *Config) consistencyInterval() (time.Duration, error) {
	switch c.ConsistencyInterval {
	case "off":
		return 0, nil
	case "":
		return 30 * time.Second, nil
	}
	d, err := time.ParseDuration(c.ConsistencyInterval)
	if err != nil || d < time.Second || d > time.Hour {
		return 0, fmt.Errorf("%q: a duration of 1s..1h, or off", c.ConsistencyInterval)
	}
	return d, nil
}
