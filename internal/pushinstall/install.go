package pushinstall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// Install installs, configures, joins and starts the agent of o.Machine
// on o.Host, and waits until it runs (and, with o.API, until the
// configuration server lists it and its machine). Every step is
// idempotent: installing again upgrades the binary, rewrites the
// configuration, keeps the identity and restarts the agent. A failure is a
// *StepError that names the step and what to check.
func Install(ctx context.Context, o Options) (Result, error) {
	o, err := o.withDefaults(true)
	if err != nil {
		return Result{}, err
	}
	in := &installer{o: o, l: o.layout(), res: Result{Host: o.Host, StateDir: o.StateDir}}
	defer in.close()
	for _, s := range []struct {
		name string
		run  func(context.Context) (string, bool, error)
	}{
		{StepConnect, in.connect},
		{StepProbe, in.probe},
		{StepBinary, in.binary},
		{StepJoin, in.join},
		{StepConfig, in.config},
		{StepStart, in.start},
		{StepWait, in.wait},
	} {
		if err := ctx.Err(); err != nil {
			return in.res, stepErr(s.name, err, "cancelled before this step; nothing of it was done")
		}
		in.report(Event{Step: s.name, State: "running"})
		msg, skipped, err := s.run(ctx)
		if err != nil {
			o.Logger.Error("push install step failed", "host", o.Host, "machine", o.Machine, "step", s.name, "err", err)
			return in.res, err
		}
		ev := Event{Step: s.name, State: "done", Message: msg}
		if skipped {
			ev.State = "skipped"
		}
		in.res.Steps = append(in.res.Steps, ev)
		in.report(ev)
	}
	return in.res, nil
}

// installer carries one Install's state from step to step.
type installer struct {
	o   Options
	l   layout
	res Result
	c   *conn
	// arches are the uname -m values the binary runs on.
	arches []string
	// sum is the binary's SHA-256, hex.
	sum string
	// before is the agent's last heartbeat as the server listed it before
	// the start step: the wait step wants a newer one.
	before time.Time
}

func (in *installer) report(ev Event) {
	in.o.Logger.Info("push install", "host", in.o.Host, "machine", in.o.Machine, "step", ev.Step, "state", ev.State, "message", ev.Message)
	if in.o.Progress != nil {
		in.o.Progress(ev)
	}
}

func (in *installer) close() {
	if in.c != nil {
		in.c.Close()
	}
}

func (in *installer) connect(ctx context.Context) (string, bool, error) {
	c, err := dial(ctx, in.o)
	if err != nil {
		var he *HostKeyError
		switch {
		case errors.As(err, &he):
			return "", false, stepErr(StepConnect, err, "")
		case strings.Contains(err.Error(), "unable to authenticate"):
			return "", false, stepErr(StepConnect, err, "the host refused %s's credentials: put the key's public half in ~%s/.ssh/authorized_keys on the host (ssh-copy-id), or use another key", in.o.User, in.o.User)
		}
		return "", false, stepErr(StepConnect, err, "check that sshd listens on %s and that this machine reaches it", in.o.Host)
	}
	in.c = c
	return fmt.Sprintf("logged in to %s as %s", in.o.Host, in.o.User), false, nil
}

// probe checks the host's OS and architecture against the binary, whether
// commands run as root, whether systemd is PID 1, and the tools the later
// steps use.
func (in *installer) probe(ctx context.Context) (string, bool, error) {
	arches, name, err := binaryArch(in.o.Binary)
	if err != nil {
		return "", false, stepErr(StepProbe, err, "give --binary the standby built for the host")
	}
	in.arches = arches
	out, err := in.c.run(ctx, `id -u; uname -sm; if [ -d /run/systemd/system ]; then echo systemd; else echo none; fi
for t in sha256sum setsid nohup mv chmod; do command -v $t >/dev/null 2>&1 || echo "missing:$t"; done`, nil)
	if err != nil {
		return "", false, stepErr(StepProbe, err, "the login shell must run sh commands")
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 {
		return "", false, stepErr(StepProbe, fmt.Errorf("unexpected answer %q", out), "the host must be Linux with a POSIX sh")
	}
	in.res.Arch = lines[1]
	if !archMatches(lines[1], arches) {
		return "", false, stepErr(StepProbe, fmt.Errorf("%w: the host is %q, the binary %s (%s)", ErrArchMismatch, lines[1], in.o.Binary, name), "build standby for the host (GOOS=linux GOARCH=...) and give it with --binary")
	}
	for _, l := range lines[3:] {
		if t, ok := strings.CutPrefix(l, "missing:"); ok {
			return "", false, stepErr(StepProbe, fmt.Errorf("the host has no %s", t), "install coreutils and util-linux on the host")
		}
	}
	in.res.Systemd = lines[2] == "systemd" && !in.o.NoSystemd
	if strings.TrimSpace(lines[0]) != "0" {
		in.c.sudo = true
		if _, err := in.c.run(ctx, "true", nil); err != nil {
			return "", false, stepErr(StepProbe, err, "%s is not root and `sudo -n` fails: log in as root, or allow %s password-less sudo", in.o.User, in.o.User)
		}
	}
	sum, err := fileSHA256(in.o.Binary)
	if err != nil {
		return "", false, stepErr(StepProbe, err, "give --binary a readable standby binary")
	}
	in.sum = sum
	how := "setsid/nohup (no systemd as PID 1)"
	if in.res.Systemd {
		how = "systemd"
	}
	return fmt.Sprintf("%s; the agent will run under %s", in.res.Arch, how), false, nil
}

// binary copies the binary through the session's stdin, checks its
// SHA-256 on the host, and only then moves it into place, so that a
// broken copy never replaces a working binary.
func (in *installer) binary(ctx context.Context) (string, bool, error) {
	in.res.Binary = in.l.bin
	have, _ := in.c.run(ctx, "sha256sum "+shq(in.l.bin)+" 2>/dev/null || true", nil)
	if f := strings.Fields(have); len(f) > 0 && f[0] == in.sum {
		return fmt.Sprintf("%s is already this binary (sha256 %s)", in.l.bin, in.sum[:12]), true, nil
	}
	f, err := os.Open(in.o.Binary)
	if err != nil {
		return "", false, stepErr(StepBinary, err, "give --binary a readable standby binary")
	}
	defer f.Close()
	tmp := path.Join(path.Dir(in.l.bin), ".standby.new")
	out, err := in.c.run(ctx, fmt.Sprintf(`set -e; umask 022; mkdir -p %[1]s; cat > %[2]s; chmod 0755 %[2]s; sha256sum %[2]s`, shq(path.Dir(in.l.bin)), shq(tmp)), f)
	if err != nil {
		return "", false, stepErr(StepBinary, err, "check the space and permissions of %s on the host", path.Dir(in.l.bin))
	}
	if got := strings.Fields(out); len(got) == 0 || got[0] != in.sum {
		in.c.run(ctx, "rm -f "+shq(tmp), nil)
		return "", false, stepErr(StepBinary, fmt.Errorf("the copy's sha256 is %q, want %s", out, in.sum), "the transfer was damaged; try again, and check the disk of the host")
	}
	if _, err := in.c.run(ctx, "mv -f "+shq(tmp)+" "+shq(in.l.bin), nil); err != nil {
		return "", false, stepErr(StepBinary, err, "check the permissions of %s on the host", in.l.bin)
	}
	return fmt.Sprintf("copied to %s, sha256 %s verified on the host", in.l.bin, in.sum[:12]), false, nil
}

// join runs `standby agent join` on the host. The token goes through
// stdin (`--token -`), so it is on no command line and in no file, and it
// is used once.
func (in *installer) join(ctx context.Context) (string, bool, error) {
	in.res.IdentityDir = in.l.identity
	have, _ := in.c.run(ctx, fmt.Sprintf("test -s %[1]s/tls.crt && test -s %[1]s/tls.key && echo joined || true", shq(in.l.identity)), nil)
	if strings.TrimSpace(have) == "joined" {
		return fmt.Sprintf("already joined (identity in %s); the new token was not used and expires unused", in.l.identity), true, nil
	}
	script := fmt.Sprintf(`set -e; umask 077; mkdir -p %[1]s; exec %[2]s agent join --server %[3]s --token - --dir %[4]s --name %[5]s`,
		shq(in.l.dir), shq(in.l.bin), shq(in.o.ServerURL), shq(in.l.identity), shq(in.o.Name))
	out, err := in.c.run(ctx, script, strings.NewReader(in.o.JoinToken+"\n"))
	if err != nil {
		// Whatever the join printed, the token is not repeated.
		err = errors.New(strings.ReplaceAll(err.Error(), in.o.JoinToken, "[token]"))
		return "", false, stepErr(StepJoin, err, "the host must reach %s; the token must be an unused, unexpired agent token; the name %q must be free among agents (standby servers list)", in.o.ServerURL, in.o.Name)
	}
	return strings.TrimSpace(strings.ReplaceAll(out, in.o.JoinToken, "[token]")), false, nil
}

// config writes the agent's configuration (0600: it names the identity)
// and has the remote binary check it.
func (in *installer) config(ctx context.Context) (string, bool, error) {
	in.res.Config = in.l.config
	cfg, err := AgentConfig(in.o)
	if err != nil {
		return "", false, stepErr(StepConfig, err, "fix the machine, disks or paths given")
	}
	var check strings.Builder
	for _, d := range in.o.Disks {
		fmt.Fprintf(&check, "test -e %[1]s || { echo 'disk %[2]s: %[1]s does not exist on the host' >&2; exit 1; }\n", shq(d.Path), strings.ReplaceAll(d.Name, "'", ""))
	}
	script := fmt.Sprintf(`set -e
%[1]sumask 077; mkdir -p %[2]s
cat > %[3]s.new; mv -f %[3]s.new %[3]s
%[4]s agent --config %[3]s --check`, check.String(), shq(in.l.dir), shq(in.l.config), shq(in.l.bin))
	if _, err := in.c.run(ctx, script, strings.NewReader(string(cfg))); err != nil {
		return "", false, stepErr(StepConfig, err, "create the disks on the host first, or fix the paths given")
	}
	return fmt.Sprintf("%s written (0600) and checked by the agent", in.l.config), false, nil
}

// start (re)starts the agent: a systemd unit where systemd is PID 1, else
// setsid/nohup with a pid file. A running agent is stopped first, so that
// a second install runs the new binary and configuration.
func (in *installer) start(ctx context.Context) (string, bool, error) {
	if in.o.API != nil {
		if s, ok, err := in.listed(ctx); err == nil && ok {
			in.before = s.HeartbeatAt
		}
	}
	if in.res.Systemd {
		in.res.Unit = in.l.unit
		script := fmt.Sprintf(`set -e
cat > %[1]s.new; mv -f %[1]s.new %[1]s
systemctl daemon-reload
systemctl enable --quiet %[2]s
systemctl restart %[2]s
sleep 1
systemctl is-active --quiet %[2]s || { systemctl status --no-pager %[2]s; journalctl -u %[2]s -n 20 --no-pager; exit 1; } >&2`, shq(in.l.unitPath), shq(in.l.unit))
		if _, err := in.c.run(ctx, script, strings.NewReader(Unit(in.o))); err != nil {
			return "", false, stepErr(StepStart, err, "journalctl -u %s on the host says why", in.l.unit)
		}
		return fmt.Sprintf("%s enabled and started", in.l.unit), false, nil
	}
	in.res.PIDFile, in.res.Log = in.l.pid, in.l.log
	out, err := in.c.run(ctx, stopScript(in.l.pid)+fmt.Sprintf(`
cd /; umask 077
setsid nohup %[1]s agent --config %[2]s >>%[3]s 2>&1 </dev/null &
echo $! > %[4]s
sleep 1
kill -0 "$(cat %[4]s)" 2>/dev/null || { echo "the agent exited at once; the end of its log:" >&2; tail -n 20 %[3]s >&2; exit 1; }`,
		shq(in.l.bin), shq(in.l.config), shq(in.l.log), shq(in.l.pid)), nil)
	if err != nil {
		return "", false, stepErr(StepStart, err, "%s on the host says why", in.l.log)
	}
	what := "started"
	if strings.Contains(out, "stopped") {
		what = "restarted (the running agent was stopped first)"
	}
	return fmt.Sprintf("%s with setsid/nohup; pid file %s, log %s", what, in.l.pid, in.l.log), false, nil
}

// stopScript stops the agent named by pidFile, if it runs, and waits up
// to 30 s for it to exit; it prints "stopped" when it stopped one.
func stopScript(pidFile string) string {
	return fmt.Sprintf(`set -e
if [ -s %[1]s ]; then
  pid=$(cat %[1]s)
  if kill -0 "$pid" 2>/dev/null && grep -q standby /proc/"$pid"/cmdline 2>/dev/null; then
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null; do
      i=$((i+1)); [ $i -le 300 ] || { echo "the agent (pid $pid) did not stop within 30s" >&2; exit 1; }
      sleep 0.1
    done
    echo stopped
  fi
  rm -f %[1]s
fi`, shq(pidFile))
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// listed finds the agent in the server's list by its joined name.
func (in *installer) listed(ctx context.Context) (control.Server, bool, error) {
	var ss []control.Server
	if err := in.o.API.Do(ctx, "GET", "/v1/servers?role=agent", nil, &ss); err != nil {
		return control.Server{}, false, err
	}
	for _, s := range ss {
		if s.Name == in.o.Name {
			return s, true, nil
		}
	}
	return control.Server{}, false, nil
}
