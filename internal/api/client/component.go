package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// Component is a joined agent's, process server's or master target's
// connection to the configuration server: mutual TLS with the
// certificate `standby ROLE join` wrote, trusting only the deployment's
// CA.
type Component struct {
	c  *Client
	id trust.Identity
}

// NewComponent connects as the identity joined into dir (trust.Load).
func NewComponent(server, dir string) (*Component, error) {
	l, err := trust.Load(dir)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: l.Roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			// Read again at each handshake: a renewal replaces the files.
			if nl, err := trust.Load(dir); err == nil {
				return &nl.Cert, nil
			}
			return &l.Cert, nil
		}}
	c, err := New(Options{Server: server, TLS: tc, Timeout: api.MaxWait + 30*time.Second})
	if err != nil {
		return nil, err
	}
	return &Component{c: c, id: l.Identity}, nil
}

// Identity is who this component is.
func (c *Component) Identity() trust.Identity { return c.id }

// Heartbeat says the component is alive, with its version, address and
// capacity.
func (c *Component) Heartbeat(ctx context.Context, h api.HeartbeatRequest) error {
	return c.c.Do(ctx, http.MethodPost, "/v1/heartbeat", h, nil)
}

// Report sends an agent's machine report and returns the machine as the
// server holds it.
func (c *Component) Report(ctx context.Context, r api.AgentReport) (control.Machine, error) {
	var m control.Machine
	err := c.c.Do(ctx, http.MethodPost, "/v1/agent/report", r, &m)
	return m, err
}

// Points sends a master target's catalogue of one machine's points.
func (c *Component) Points(ctx context.Context, r api.PointsReport) error {
	return c.c.Do(ctx, http.MethodPost, "/v1/target/points", r, nil)
}

// Desired returns the component's desired state: at once when its version
// differs from have (or have is ""), else when it changes or wait
// passes (a long poll; wait at most api.MaxWait).
func (c *Component) Desired(ctx context.Context, have string, wait time.Duration) (api.Desired, error) {
	var d api.Desired
	q := url.Values{}
	if have != "" {
		q.Set("have", have)
		q.Set("wait", wait.String())
	}
	path := "/v1/desired"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	if err := c.c.Do(ctx, http.MethodGet, path, nil, &d); err != nil {
		return d, fmt.Errorf("desired state: %w", err)
	}
	return d, nil
}
