package main

import (
	"context"
	"fmt"
	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/all"
	"strings"

	"github.com/standby-dr/standby/internal/agent"
)

type agentOptions struct {
	config    string
	machine   string
	stateDir  string
	unix      string
	tcp       string
	status    string
	disks     diskFlags
	limit     string
	segment   string
	interval  string
	logLevel  string
	checkOnly bool
}

// diskFlags collects repeated --disk name=path flags.
type diskFlags []agent.DiskConfig

func (d *diskFlags) String() string { return fmt.Sprint(*d) }
func (d *diskFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("%q is not NAME=PATH", v)
	}
	*d = append(*d, agent.DiskConfig{Name: name, Path: path})
	return nil
}

func newAgentCommand() command {
	return command{
		name:  "agent",
		short: "serve a protected machine's disks over NBD, journaling every write",
		run: func(ctx context.Context, e *env, args []string) error {
			var o agentOptions
			fs := newFlags(e, "agent", "[--config FILE] [flags]")
			fs.StringVar(&o.config, "config", "", "configuration file (YAML); flags override it")
			fs.StringVar(&o.machine, "machine", "", "machine name")
			fs.StringVar(&o.stateDir, "state-dir", "", "directory for the journal and capture state")
			fs.StringVar(&o.unix, "listen-unix", "", "NBD unix socket path")
			fs.StringVar(&o.tcp, "listen-tcp", "", "NBD TCP address (host:port)")
			fs.StringVar(&o.status, "status", "", "HTTP status/metrics address (host:port or socket path)")
			fs.Var(&o.disks, "disk", "a disk as NAME=PATH (repeatable; replaces the config's disks)")
			fs.StringVar(&o.limit, "journal-limit", "", "journal size limit, e.g. 1GiB")
			fs.StringVar(&o.segment, "segment-size", "", "journal segment size, e.g. 16MiB")
			fs.StringVar(&o.interval, "bookmark-interval", "", "crash-consistent bookmark interval (1s..1h, or off)")
			fs.StringVar(&o.logLevel, "log-level", "", "debug, info, warn or error")
			fs.BoolVar(&o.checkOnly, "check", false, "validate the configuration and exit")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if fs.NArg() > 0 {
				return usagef("agent takes no arguments, got %q", fs.Args())
			}
			return runAgent(ctx, e, o)
		},
	}
}

func runAgent(ctx context.Context, e *env, o agentOptions) error {
	cfg := agent.Defaults()
	if o.config != "" {
		var err error
		if cfg, err = agent.LoadConfig(o.config); err != nil {
			return err
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Machine, o.machine)
	set(&cfg.StateDir, o.stateDir)
	set(&cfg.Listen.Unix, o.unix)
	set(&cfg.Listen.TCP, o.tcp)
	set(&cfg.Status, o.status)
	set(&cfg.Journal.Limit, o.limit)
	set(&cfg.Journal.SegmentSize, o.segment)
	set(&cfg.BookmarkInterval, o.interval)
	set(&cfg.LogLevel, o.logLevel)
	if len(o.disks) > 0 {
		cfg.Disks = o.disks
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("agent configuration:\n%w", err)
	}
	if o.checkOnly {
		fmt.Fprintln(e.stdout, "configuration is valid")
		return nil
	}
	log := e.logger(cfg.LogLevel)
	var src driver.Driver
	if cfg.Source != nil {
		// The one place the agent's source machine driver is chosen.
		var err error
		if src, err = all.Registry().New(cfg.Source.Driver, driver.Deps{Logger: log}); err != nil {
			return fmt.Errorf("agent configuration: source: %w", err)
		}
	}
	a, err := agent.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	a.SetSourceDriver(src)
	return a.Run(ctx)
}
