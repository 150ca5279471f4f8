package target

import (
	"fmt"
	"net"
	"path/filepath"
)

// ExportsConfig is the exports: section of the configuration: where the
// NBD server of exports listens (docs/exports.md). Either address may be
// left out, not both.
//
//	exports:
//	  listen: 127.0.0.1:10809
//	  unix: /run/standby/exports.sock
type ExportsConfig struct {
	Listen string `yaml:"listen,omitempty"`
	Unix   string `yaml:"unix,omitempty"`
}

func (c *ExportsConfig) validate() []error {
	if c == nil {
		return nil
	}
	var errs []error
	if c.Listen == "" && c.Unix == "" {
		errs = append(errs, fmt.Errorf("exports: set listen (host:port) or unix (a socket path), or leave exports out"))
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("exports.listen: %q is not host:port", c.Listen))
		}
	}
	if c.Unix != "" && !filepath.IsAbs(c.Unix) {
		errs = append(errs, fmt.Errorf("exports.unix: %q is not an absolute path", c.Unix))
	}
	return errs
}

func (c *ExportsConfig) options() ExportsOptions {
	if c == nil {
		return ExportsOptions{}
	}
	return ExportsOptions{Listen: c.Listen, Unix: c.Unix}
}
