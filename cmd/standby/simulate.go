package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/controlsim"
)

// newSimulateAgentsCommand is `standby simulate agents`: many agents
// against a configuration server (make bench-control).
func newSimulateAgentsCommand() command {
	const name = "simulate agents"
	return command{name: name, short: "simulate many agents heartbeating and reporting to a configuration server, and time API calls meanwhile",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "--server URL --token ADMIN_TOKEN --ca FILE --dir DIR [--agents 1000] [--duration 60s]")
			af := addAPIFlags(fs)
			dir := fs.String("dir", "", "where the simulated agents' join directories go")
			agents := fs.Int("agents", 1000, "how many agents")
			interval := fs.Duration("interval", time.Second, "between two heartbeats (and reports) of one agent")
			duration := fs.Duration("duration", 60*time.Second, "of the measured phase, after every agent has reported once")
			readers := fs.Int("readers", 4, "concurrent API readers (list and get calls, timed)")
			pause := fs.Duration("reader-pause", 100*time.Millisecond, "each reader's pause between two calls")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if err := checkOutput(*af.output); err != nil {
				return err
			}
			if *af.server == "" || *af.token == "" || *dir == "" || fs.NArg() > 0 {
				return usagef("usage: standby %s --server URL --token ADMIN_TOKEN --ca FILE --dir DIR", name)
			}
			if err := os.MkdirAll(*dir, 0o700); err != nil {
				return err
			}
			abs, _ := filepath.Abs(*dir)
			res, err := controlsim.Run(ctx, controlsim.Options{Server: *af.server, AdminToken: strings.TrimSpace(*af.token), CAFile: *af.ca, Dir: abs,
				Agents: *agents, Interval: *interval, Duration: *duration, Readers: *readers, ReaderPause: *pause, Log: e.logger("info")})
			if err != nil {
				return err
			}
			if *af.output == "json" {
				b, _ := json.MarshalIndent(res, "", "  ")
				fmt.Fprintln(e.stdout, string(b))
				return nil
			}
			fmt.Fprintf(e.stdout, "%d agents joined in %.1f s; over %.0f s: %d heartbeats, %d reports, %d errors, %d late; %d API calls: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
				res.Agents, res.JoinSeconds, res.Seconds, res.Heartbeats, res.Reports, res.AgentErrors, res.Late, res.APICalls, res.APIP50ms, res.APIP99ms, res.APIMaxms)
			return nil
		}}
}
