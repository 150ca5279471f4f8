package pushinstall

import (
	"context"
	"fmt"
	"strings"
)

// Uninstall undoes Install for o.Machine on o.Host: it stops the agent
// (systemd unit or pid file), removes the unit and PREFIX/MACHINE (the
// configuration and the identity). It keeps the binary, which other
// agents on the host may run, and the state directory, which holds the
// journal; the caller revokes the agent's server entry (POST
// /v1/servers/ID/revoke). Only the connection fields, Machine and Prefix
// of o are used. Uninstalling what is not installed succeeds.
func Uninstall(ctx context.Context, o Options) error {
	o, err := o.withDefaults(false)
	if err != nil {
		return err
	}
	c, err := dial(ctx, o)
	if err != nil {
		return stepErr(StepConnect, err, "")
	}
	defer c.Close()
	if out, err := c.run(ctx, "id -u", nil); err == nil && strings.TrimSpace(out) != "0" {
		c.sudo = true
	}
	l := o.layout()
	script := fmt.Sprintf(`set -e
if [ -f %[1]s ]; then
  if [ -d /run/systemd/system ]; then systemctl disable --now --quiet %[2]s || true; fi
  rm -f %[1]s
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
%[3]s
rm -rf %[4]s`, shq(l.unitPath), shq(l.unit), stopScript(l.pid), shq(l.dir))
	if _, err := c.run(ctx, script, nil); err != nil {
		return stepErr("uninstall", err, "stop the agent by hand on the host and remove %s", l.dir)
	}
	return nil
}
