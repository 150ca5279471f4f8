package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/standby-dr/standby/internal/agent"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/all"
	"github.com/standby-dr/standby/internal/process"
	"github.com/standby-dr/standby/internal/target"
)

func newProcessCommand() command {
	return roleCommand("process", "run a process server: cache agents' segments and forward them to a master target",
		"configs/process.sample.yaml",
		func(path string) (*process.Config, error) { c, err := process.LoadConfig(path); return &c, err },
		func(ctx context.Context, e *env, cfg *process.Config) error {
			o, err := cfg.Options()
			if err != nil {
				return err
			}
			o.Logger = e.logger(cfg.LogLevel).With("role", "process")
			if o.Control != nil {
				o.Control.Version = version
			}
			s, err := process.New(o)
			if err != nil {
				return err
			}
			defer s.Close()
			return serveRole(ctx, cfg.Listen, cfg.Status, s.Serve, s.Handler())
		})
}

func newTargetCommand() command {
	return roleCommand("target", "run a master target: apply machines' segments to replicas and keep recovery points",
		"configs/target.sample.yaml",
		func(path string) (*target.Config, error) { c, err := target.LoadConfig(path); return &c, err },
		func(ctx context.Context, e *env, cfg *target.Config) error {
			o, err := cfg.Options()
			if err != nil {
				return err
			}
			o.Logger = e.logger(cfg.LogLevel).With("role", "target")
			if o.Control != nil {
				o.Control.Version = version
			}
			if cfg.Driver != nil {
				// The one place the target's machine driver is chosen.
				if o.Driver, err = all.Registry().New(*cfg.Driver, driver.Deps{Logger: o.Logger}); err != nil {
					return fmt.Errorf("master target configuration: %w", err)
				}
			}
			o.ReverseAgent = reverseAgent
			t, err := target.New(ctx, o)
			if err != nil {
				return err
			}
			defer t.Close()
			return serveRole(ctx, cfg.Listen, cfg.Status, t.Serve, t.Handler())
		})
}

// roleCommand is the one shape of the server roles' commands: --config
// FILE, --check to validate it, else run.
func roleCommand[C interface{ Validate() error }](name, short, sample string, load func(string) (C, error), run func(context.Context, *env, C) error) command {
	return command{
		name:  name,
		short: short,
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "--config FILE")
			config := fs.String("config", "", "configuration file (YAML), see "+sample)
			check := fs.Bool("check", false, "validate the configuration and exit")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if *config == "" || fs.NArg() > 0 {
				return usagef("%s needs --config FILE and no arguments", name)
			}
			cfg, err := load(*config)
			if err != nil {
				return err
			}
			if *check {
				if err := cfg.Validate(); err != nil {
					return fmt.Errorf("configuration:\n%w", err)
				}
				fmt.Fprintln(e.stdout, "configuration is valid")
				return nil
			}
			return run(ctx, e, cfg)
		},
	}
}

// serveRole listens on addr for the role's peers and on status for HTTP,
// until ctx ends.
func serveRole(ctx context.Context, addr, status string, serve func(context.Context, net.Listener) error, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if status != "" {
		sl, err := net.Listen("tcp", status)
		if err != nil {
			l.Close()
			return fmt.Errorf("status listener %s: %w", status, err)
		}
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(sl)
		defer hs.Close()
	}
	if err := serve(ctx, l); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// reverseAgent opens a master target's reverse agent: an embedded
// internal/agent (the target package does not import it).
func reverseAgent(ctx context.Context, c target.ReverseAgentConfig, log *slog.Logger) (target.ReverseAgent, error) {
	ec := agent.EmbeddedConfig{Machine: c.Machine, MachineID: c.MachineID, Epoch: c.Epoch, StateDir: c.StateDir,
		Identity: c.Identity, Revoked: c.Revoked, BookmarkInterval: c.BookmarkInterval}
	for _, d := range c.Disks {
		ec.Disks = append(ec.Disks, agent.EmbeddedDisk{Name: d.Name, Backend: d.Backend})
	}
	return agent.NewEmbedded(ctx, ec, log)
}
