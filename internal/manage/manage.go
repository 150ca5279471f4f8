// Package manage holds what the listening roles (process server, master
// target) share in managed mode: the `control:` configuration section and
// the options it turns into. With it a role takes its identity from a
// join directory, heartbeats to the configuration server and follows its
// desired state; the data path never waits for the server.
package manage

import (
	"fmt"
	"net"
	"net/url"
	"time"
)

// Control are a role's managed-mode options.
type Control struct {
	// Server is https://host:port of the configuration server.
	Server string
	// Identity is the join directory (`standby ROLE join --dir`).
	Identity string
	// Address is the host:port its peers dial, sent in heartbeats.
	Address string
	// Heartbeat is how often the role says it is alive; 0 means 10 s.
	Heartbeat time.Duration
	// Revocations is how often the revoked servers are fetched; 0 means
	// a minute.
	Revocations time.Duration
	// Version is this build's version, sent in heartbeats.
	Version string
}

// DefaultHeartbeat is the heartbeat interval when none is configured.
const DefaultHeartbeat = 10 * time.Second

// Section is the optional `control:` section of a listening role's
// configuration file.
type Section struct {
	// Server is https://HOST:PORT of the configuration server.
	Server string `yaml:"server"`
	// Identity is the join directory (`standby ROLE join --dir`).
	Identity string `yaml:"identity"`
	// Heartbeat is how often the role reports (1s..5m); default 10s.
	Heartbeat string `yaml:"heartbeat,omitempty"`
	// Address is the host:port its peers dial; default listen, which then
	// must name a host (not 0.0.0.0 or [::]).
	Address string `yaml:"address,omitempty"`
}

// Validate lists the problems of the section of role (process, target),
// whose peers (agents, process servers) dial its listen address.
func (c *Section) Validate(role, peers, listen string) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if u, err := url.Parse(c.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("control.server: %q is not https://HOST:PORT of the configuration server", c.Server)
	}
	if c.Identity == "" {
		bad("control.identity: required (the directory `standby %s join --dir` wrote)", role)
	}
	if c.Heartbeat != "" {
		if d, err := time.ParseDuration(c.Heartbeat); err != nil || d < time.Second || d > 5*time.Minute {
			bad("control.heartbeat: %q is not a duration in 1s..5m", c.Heartbeat)
		}
	}
	if _, err := c.address(peers, listen); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// address is where peers dial: Address, or listen when it names a host.
func (c *Section) address(peers, listen string) (string, error) {
	a := c.Address
	if a == "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return "", fmt.Errorf("control.address: listen %q is not host:port", listen)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return "", fmt.Errorf("control.address: required when listen (%q) is a wildcard: the host:port %s dial", listen, peers)
		}
		return listen, nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("control.address: %q is not host:port", a)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "", fmt.Errorf("control.address: %q is a wildcard; give the address %s dial", a, peers)
	}
	return a, nil
}

// Control turns a valid section into Control.
func (c *Section) Control(peers, listen string) *Control {
	hb := DefaultHeartbeat
	if c.Heartbeat != "" {
		hb, _ = time.ParseDuration(c.Heartbeat)
	}
	addr, _ := c.address(peers, listen)
	return &Control{Server: c.Server, Identity: c.Identity, Heartbeat: hb, Address: addr}
}
