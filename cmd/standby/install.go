package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/pushinstall"
)

// diskList collects repeated --disk NAME=PATH flags for a remote machine
// (paths on that machine, not checked here).
type diskList []pushinstall.Disk

func (d *diskList) String() string { return fmt.Sprint(*d) }
func (d *diskList) Set(v string) error {
	disk, err := pushinstall.ParseDisk(v)
	if err != nil {
		return err
	}
	*d = append(*d, disk)
	return nil
}

// newAgentInstallCommand is `standby agent install`: push the agent onto
// a Linux machine over SSH, joined to the configuration server with a
// token this command makes.
func newAgentInstallCommand() command {
	const name = "agent install"
	return command{
		name:  name,
		short: "install the agent on a Linux machine over SSH: copy, join, configure, start, wait until the server lists it",
		run: func(ctx context.Context, e *env, args []string) error {
			fs := newFlags(e, name, "--host HOST[:22] --machine NAME --disk NAME=PATH [--key FILE] [--known-hosts FILE | --host-key-fingerprint SHA256:...] [flags]")
			af := addAPIFlags(fs)
			var o pushinstall.Options
			var disks diskList
			fs.StringVar(&o.Host, "host", "", "the machine's sshd, HOST or HOST:PORT (port 22 by default)")
			fs.StringVar(&o.User, "user", "root", "the SSH user; not root means every remote command runs under sudo -n")
			fs.StringVar(&o.KeyFile, "key", "", "private key file, e.g. ~/.ssh/id_ed25519 (default: the ssh-agent at $SSH_AUTH_SOCK)")
			fs.StringVar(&o.AgentSocket, "ssh-agent", "", "ssh-agent socket (default $SSH_AUTH_SOCK when no --key)")
			passwordFile := fs.String("password-file", "", "a file holding the SSH password (only if you must: keys are better)")
			fs.StringVar(&o.KnownHosts, "known-hosts", "", "known_hosts file that lists the host's key (default ~/.ssh/known_hosts)")
			fs.StringVar(&o.HostKeyFingerprint, "host-key-fingerprint", "", "accept exactly this host key, SHA256:... as ssh-keygen -lf prints it on the host")
			fs.StringVar(&o.Binary, "binary", "", "the standby binary to copy, built for the host (default: this one)")
			fs.StringVar(&o.Machine, "machine", "", "the protected machine's name")
			fs.Var(&disks, "disk", "a disk on the host as NAME=PATH (repeatable)")
			fs.StringVar(&o.Name, "name", "", "the name the agent joins as, unique among agents (default the machine's name)")
			joinServer := fs.String("join-server", "", "the configuration server's URL as the host reaches it (default --server)")
			ttl := fs.Duration("token-ttl", 30*time.Minute, "how long the join token made for this install may be used (once)")
			fs.StringVar(&o.Prefix, "prefix", "/opt/standby", "install directory on the host")
			fs.StringVar(&o.StateDir, "state-dir", "", "the agent's state directory on the host (default /var/lib/standby/agent/MACHINE)")
			fs.StringVar(&o.Socket, "socket", "", "the agent's NBD unix socket on the host (default /run/standby/MACHINE.sock)")
			fs.StringVar(&o.Status, "status", "", "the agent's HTTP status listener on the host, host:port (default none)")
			fs.StringVar(&o.Heartbeat, "heartbeat", "10s", "the agent's heartbeat to the server (1s..5m)")
			fs.DurationVar(&o.WaitTimeout, "wait", 2*time.Minute, "how long to wait for the server to list the agent and its machine")
			fs.BoolVar(&o.NoSystemd, "no-systemd", false, "run the agent with setsid/nohup even where systemd is PID 1")
			if err := parseFlags(fs, args); err != nil {
				return err
			}
			if fs.NArg() > 0 {
				return usagef("%s takes no arguments, got %q", name, fs.Args())
			}
			if o.Host == "" || o.Machine == "" || len(disks) == 0 {
				return usagef("usage: standby %s --host HOST --machine NAME --disk NAME=PATH [...]", name)
			}
			o.Disks = disks
			o.KeyFile = expandHome(o.KeyFile)
			o.KnownHosts = expandHome(o.KnownHosts)
			if *passwordFile != "" {
				b, err := os.ReadFile(expandHome(*passwordFile))
				if err != nil {
					return fmt.Errorf("password file: %w", err)
				}
				o.Password = strings.TrimRight(string(b), "\r\n")
			}
			cl, err := af.client()
			if err != nil {
				return err
			}
			o.ServerURL = *af.server
			if *joinServer != "" {
				o.ServerURL = *joinServer
			}
			var tok struct {
				Token string `json:"token"`
			}
			if err := cl.Do(ctx, "POST", "/v1/tokens", map[string]string{"role": "agent", "ttl": ttl.String()}, &tok); err != nil {
				return fmt.Errorf("make a join token (an admin's API token is needed): %w", err)
			}
			o.JoinToken, o.API = tok.Token, cl
			o.Progress = func(ev pushinstall.Event) {
				switch ev.State {
				case "running":
					fmt.Fprintf(e.stderr, "%-8s ...\n", ev.Step)
				case "skipped":
					fmt.Fprintf(e.stderr, "%-8s skipped: %s\n", ev.Step, ev.Message)
				default:
					fmt.Fprintf(e.stderr, "%-8s done: %s\n", ev.Step, ev.Message)
				}
			}
			res, err := pushinstall.Install(ctx, o)
			if err != nil {
				return err
			}
			if *af.output == "json" {
				b, _ := json.MarshalIndent(res, "", "  ")
				_, err := fmt.Fprintf(e.stdout, "%s\n", b)
				return err
			}
			where := "pid file " + res.PIDFile + ", log " + res.Log
			if res.Systemd {
				where = "systemd unit " + res.Unit
			}
			_, err = fmt.Fprintf(e.stdout, "agent for %s installed on %s and joined as %s (%s); configuration %s\n", o.Machine, res.Host, res.ServerID, where, res.Config)
			return err
		},
	}
}

// expandHome reads a leading ~/ as the user's home directory (flags given
// as --key=~/.ssh/id_ed25519 are not expanded by the shell).
func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}
