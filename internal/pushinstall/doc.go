// Package pushinstall installs a Standby agent on a Linux machine over SSH:
// the process server's "push install" duty of the seed product.
//
// One Install call runs these steps, each idempotent and reported through
// Options.Progress, so that running it again on the same host repairs or
// upgrades what is there instead of failing:
//
//	connect   SSH with a checked host key (known_hosts or a pinned
//	          fingerprint; an unknown key is refused, never ignored)
//	probe     uname -sm against the binary's ELF header; root or sudo -n;
//	          systemd as PID 1 or not
//	binary    cat > PREFIX/bin/.standby.new, sha256sum checked remotely,
//	          then mv over PREFIX/bin/standby (skipped when equal)
//	join      `standby agent join` with the one-time token read from
//	          stdin (skipped when the identity directory already holds a
//	          certificate)
//	config    PREFIX/MACHINE/agent.yaml, mode 0600, checked remotely with
//	          `standby agent --config ... --check`
//	start     systemd: /etc/systemd/system/standby-agent-MACHINE.service,
//	          enable and restart; else setsid nohup with a pid file
//	wait      the configuration server lists the agent with a fresh
//	          heartbeat and the machine it reports (GET /v1/servers,
//	          GET /v1/machines)
//
// Remote layout, for one machine M under PREFIX (default /opt/standby):
//
//	PREFIX/bin/standby          the binary, shared by every agent on the host
//	PREFIX/M/agent.yaml         the agent's configuration (0600)
//	PREFIX/M/identity/          key, certificate and CA from the join (0700)
//	PREFIX/M/agent.pid, .log    without systemd only
//	STATEDIR                    journal and capture state (default
//	                            /var/lib/standby/agent/M)
//
// Uninstall stops the agent and removes the unit and PREFIX/M; the binary
// and the state directory stay (other agents, and the journal, may need
// them). docs/push-install.md is the operator's account.
package pushinstall
