package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/server"
	"github.com/standby-dr/standby/internal/trust"
)

func newServerCommand() command {
	return roleCommand("server", "run the configuration server: API, CA, inventory, protection, jobs, alerts",
		"configs/server.sample.yaml",
		func(path string) (*server.Config, error) { c, err := server.LoadConfig(path); return &c, err },
		func(ctx context.Context, e *env, cfg *server.Config) error {
			s, err := server.New(ctx, server.Options{Config: *cfg, Log: e.logger(cfg.LogLevel).With("role", "server"), Version: version})
			if err != nil {
				return err
			}
			defer s.Close()
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return err
			}
			return s.Serve(ctx, ln)
		})
}

// newJoinCommand is `standby ROLE join`: register this machine's agent,
// process server or master target with the configuration server.
func newJoinCommand(role control.Role) command {
	name := string(role) + " join"
	return command{
		name:  name,
		short: "join the configuration server with a one-time token: get a certificate naming this " + string(role),
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "--server URL --token TOKEN --dir DIR [--name NAME] [--address HOST:PORT]")
			srv := fs.String("server", os.Getenv("STANDBY_SERVER"), "the configuration server's URL, https://HOST:PORT")
			token := fs.String("token", "", "the join token from `standby token create --role "+string(role)+"`; - reads it from standard input (it then does not show in the process list)")
			dir := fs.String("dir", "", "where to write the key, certificate and CA (tls.key, tls.crt, ca.crt)")
			host, _ := os.Hostname()
			nm := fs.String("name", host, "the name to register as (unique per role)")
			addr := fs.String("address", "", "host:port where peers reach this server (process servers and master targets)")
			hosts := fs.String("hosts", "", "comma-separated DNS names and IP addresses for the certificate (default: the address's host)")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if *srv == "" || *token == "" || *dir == "" || fs.NArg() > 0 {
				return usagef("usage: standby %s --server URL --token TOKEN --dir DIR", name)
			}
			if *token == "-" {
				line, err := bufio.NewReader(e.stdin).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("--token -: no token on standard input: %w", err)
				}
				*token = strings.TrimSpace(line)
			}
			var hs []string
			if *hosts != "" {
				hs = strings.Split(*hosts, ",")
			} else if h, _, err := net.SplitHostPort(*addr); err == nil && h != "" {
				hs = []string{h}
			}
			id, err := trust.Join(ctx, trust.JoinOptions{ServerURL: *srv, Token: *token, Role: role, Name: *nm, Address: *addr, Version: version, Dir: *dir, Hosts: hs})
			if err != nil {
				return err
			}
			abs, _ := filepath.Abs(*dir)
			fmt.Fprintf(e.stdout, "joined as %s; key, certificate and CA in %s\n", id, abs)
			return nil
		},
	}
}
