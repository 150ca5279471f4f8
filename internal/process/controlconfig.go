package process

import (
	"fmt"
	"net"
	"net/url"
	"time"
)

// ControlConfig is the optional `control:` section: with it the process
// server is managed by a configuration server (Control).
type ControlConfig struct {
	// Server is https://HOST:PORT of the configuration server.
	Server string `yaml:"server"`
	// Identity is the join directory (`standby process join --dir`).
	Identity string `yaml:"identity"`
	// Heartbeat is how often the process server reports (1s..5m); default 10s.
	Heartbeat string `yaml:"heartbeat,omitempty"`
	// Address is the host:port agents dial; default listen,
	// which then must name a host (not 0.0.0.0 or [::]).
	Address string `yaml:"address,omitempty"`
}

// defaultHeartbeat is the heartbeat interval when none is configured.
const defaultHeartbeat = 10 * time.Second

// validate lists the problems of the section; listen is the role's
// listen address, the default of address.
func (c *ControlConfig) validate(listen string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if u, err := url.Parse(c.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("control.server: %q is not https://HOST:PORT of the configuration server", c.Server)
	}
	if c.Identity == "" {
		bad("control.identity: required (the directory `standby process join --dir` wrote)")
	}
	if c.Heartbeat != "" {
		if d, err := time.ParseDuration(c.Heartbeat); err != nil || d < time.Second || d > 5*time.Minute {
			bad("control.heartbeat: %q is not a duration in 1s..5m", c.Heartbeat)
		}
	}
	if _, err := c.address(listen); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// address is where peers dial: Address, or listen when it names a host.
func (c *ControlConfig) address(listen string) (string, error) {
	a := c.Address
	if a == "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return "", fmt.Errorf("control.address: listen %q is not host:port", listen)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return "", fmt.Errorf("control.address: required when listen (%q) is a wildcard: the host:port agents dial", listen)
		}
		return listen, nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("control.address: %q is not host:port", a)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "", fmt.Errorf("control.address: %q is a wildcard; give the address agents dial", a)
	}
	return a, nil
}

// control turns a valid section into Control.
func (c *ControlConfig) control(listen string) *Control {
	hb := defaultHeartbeat
	if c.Heartbeat != "" {
		hb, _ = time.ParseDuration(c.Heartbeat)
	}
	addr, _ := c.address(listen)
	return &Control{Server: c.Server, Identity: c.Identity, Heartbeat: hb, Address: addr}
}
