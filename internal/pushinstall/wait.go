package pushinstall

import (
	"context"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// wait proves the install: the configuration server lists the agent under
// its joined name with a heartbeat newer than any before the start, and
// the machine it reports, owned by that agent. Without an API client it
// can only check that the process still runs.
func (in *installer) wait(ctx context.Context) (string, bool, error) {
	if in.o.API == nil {
		if err := in.alive(ctx); err != nil {
			return "", false, stepErr(StepWait, err, "%s", in.logHint())
		}
		return "the agent runs; not checked with the configuration server (no API client)", false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, in.o.WaitTimeout)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var seen string // what was last seen, for the timeout's error
	for {
		s, ok, err := in.listed(ctx)
		switch {
		case err != nil:
			seen = fmt.Sprintf("listing servers: %v", err)
		case !ok:
			seen = fmt.Sprintf("no agent named %q is listed", in.o.Name)
		case s.Revoked:
			return "", false, stepErr(StepWait, fmt.Errorf("agent %s (%s) is revoked", s.Name, s.ID),
				"remove %s on the host and install again with a new token and another --name, or see standby servers list", in.l.identity)
		case !s.HeartbeatAt.After(in.before):
			seen = fmt.Sprintf("agent %s (%s) is listed but has not heartbeated since the start", s.Name, s.ID)
		default:
			in.res.ServerID = s.ID
			m, found, err := in.machine(ctx)
			switch {
			case err != nil:
				seen = fmt.Sprintf("listing machines: %v", err)
			case !found:
				seen = fmt.Sprintf("agent %s heartbeats, but machine %s is not reported yet", s.ID, in.o.Machine)
			case m.Agent != s.ID:
				seen = fmt.Sprintf("machine %s is listed under agent %s, not %s", m.Name, m.Agent, s.ID)
			default:
				return fmt.Sprintf("the configuration server lists agent %s (%s) and machine %s (%s)", s.Name, s.ID, m.Name, m.State), false, nil
			}
		}
		select {
		case <-ctx.Done():
			err := fmt.Errorf("%w after %s: %s", ErrNotJoined, in.o.WaitTimeout, seen)
			if aerr := in.alive(context.WithoutCancel(ctx)); aerr != nil {
				err = fmt.Errorf("%w; %v", err, aerr)
			}
			return "", false, stepErr(StepWait, err, "%s; the host must reach %s", in.logHint(), in.o.ServerURL)
		case <-tick.C:
		}
	}
}

func (in *installer) machine(ctx context.Context) (control.Machine, bool, error) {
	var ms []control.Machine
	if err := in.o.API.Do(ctx, "GET", "/v1/machines", nil, &ms); err != nil {
		return control.Machine{}, false, err
	}
	for _, m := range ms {
		if m.Name == in.o.Machine {
			return m, true, nil
		}
	}
	return control.Machine{}, false, nil
}

// alive checks that the agent process runs on the host; its error
// carries the end of the agent's log.
func (in *installer) alive(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var script string
	if in.res.Systemd {
		script = fmt.Sprintf(`systemctl is-active --quiet %[1]s || { echo "%[1]s is not active; its journal:"; journalctl -u %[1]s -n 20 --no-pager; exit 1; } >&2`, shq(in.l.unit))
	} else {
		script = fmt.Sprintf(`kill -0 "$(cat %[1]s 2>/dev/null)" 2>/dev/null || { echo "the agent does not run; the end of its log:"; tail -n 20 %[2]s; exit 1; } >&2`, shq(in.l.pid), shq(in.l.log))
	}
	_, err := in.c.run(ctx, script, nil)
	return err
}

func (in *installer) logHint() string {
	if in.res.Systemd {
		return "journalctl -u " + in.l.unit + " on the host says why"
	}
	return in.l.log + " on the host says why"
}
