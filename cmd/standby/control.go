package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// The commands that manage the control plane through the configuration
// server's API (internal/api). Each prints the API's JSON with -o json.

func controlCommands() []command {
	cmds := apiCommands()
	out := make([]command, len(cmds))
	for i, c := range cmds {
		out[i] = c.command()
	}
	return out
}

// apiCommands are the commands that make one API call each.
func apiCommands() []apiCommand {
	return []apiCommand{
		{name: "machines list", short: "list machines the agents reported, protected or not", usage: "[--group NAME] [-o json]",
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				g := fs.String("group", "", "only the machines of this protection group")
				return func(args []string) (url.Values, any, error) {
					q := url.Values{}
					if *g != "" {
						q.Set("group", *g)
					}
					return q, nil, nil
				}
			},
			method: "GET", path: fixed("/v1/machines"), text: printMachines},
		{name: "machines show", short: "one machine: state, health and why, replication", usage: "NAME [-o json]", nargs: 1,
			method: "GET", path: func(a []string) string { return "/v1/machines/" + esc(a[0]) }, text: printMachine},
		{name: "machines points", short: "a machine's recovery points (catalogue of its master target)", usage: "NAME [--at TIME] [-o json]", nargs: 1,
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				at := fs.String("at", "", "also pick the newest point at or before this RFC 3339 time")
				return func(args []string) (url.Values, any, error) {
					q := url.Values{}
					if *at != "" {
						q.Set("at", *at)
					}
					return q, nil, nil
				}
			},
			method: "GET", path: func(a []string) string { return "/v1/machines/" + esc(a[0]) + "/points" }, text: printPoints},
		{name: "groups list", short: "list protection groups and their policies", usage: "[-o json]",
			method: "GET", path: fixed("/v1/groups"), text: printGroups},
		{name: "groups create", short: "create a protection group (policy fields not given take their defaults)", usage: "NAME [--policy JSON] [-o json]", nargs: 1,
			flags: groupFlags, method: "POST", path: fixed("/v1/groups"), text: printGroup},
		{name: "groups set", short: "change a protection group's policy", usage: "NAME --policy JSON [-o json]", nargs: 1,
			flags: groupFlags, method: "PUT", path: func(a []string) string { return "/v1/groups/" + esc(a[0]) }, text: printGroup},
		{name: "servers list", short: "list registered agents, process servers and master targets", usage: "[--role agent|process|target] [-o json]",
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				role := fs.String("role", "", "only servers of this role")
				return func(args []string) (url.Values, any, error) {
					q := url.Values{}
					if *role != "" {
						q.Set("role", *role)
					}
					return q, nil, nil
				}
			},
			method: "GET", path: fixed("/v1/servers"), text: printServers},
		{name: "servers revoke", short: "revoke a server: its certificate is refused from now on", usage: "ID [-o json]", nargs: 1,
			method: "POST", path: func(a []string) string { return "/v1/servers/" + esc(a[0]) + "/revoke" }},
		{name: "token create", short: "make a one-time join token for an agent, process server or master target", usage: "--role ROLE [--ttl 1h] [-o json]",
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				role := fs.String("role", "", "agent, process or target")
				ttl := fs.Duration("ttl", time.Hour, "how long the token may be used (once)")
				return func(args []string) (url.Values, any, error) {
					if *role == "" {
						return nil, nil, usagef("token create needs --role agent|process|target")
					}
					return nil, map[string]string{"role": *role, "ttl": ttl.String()}, nil
				}
			},
			method: "POST", path: fixed("/v1/tokens"), text: func(w io.Writer, raw json.RawMessage) error {
				var r struct {
					Token string            `json:"token"`
					Info  control.JoinToken `json:"info"`
				}
				if err := json.Unmarshal(raw, &r); err != nil {
					return err
				}
				_, err := fmt.Fprintf(w, "%s\n(one use, as a %s, until %s)\n", r.Token, r.Info.Role, r.Info.ExpiresAt.Local().Format(time.RFC3339))
				return err
			}},
		{name: "users create", short: "create an API user (admin, operator or viewer); prints its token once", usage: "NAME --role ROLE [-o json]", nargs: 1,
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				role := fs.String("role", "", "admin, operator or viewer")
				return func(args []string) (url.Values, any, error) {
					return nil, map[string]string{"name": args[0], "role": *role}, nil
				}
			},
			method: "POST", path: fixed("/v1/users"), text: func(w io.Writer, raw json.RawMessage) error {
				var r struct {
					Token string `json:"token"`
				}
				if err := json.Unmarshal(raw, &r); err != nil {
					return err
				}
				_, err := fmt.Fprintln(w, r.Token)
				return err
			}},
		{name: "users list", short: "list API users", usage: "[-o json]", method: "GET", path: fixed("/v1/users"), text: printUsers},
		{name: "sites list", short: "list sites", usage: "[-o json]", method: "GET", path: fixed("/v1/sites"), text: printSites},
		{name: "sites create", short: "create a site", usage: "NAME [-o json]", nargs: 1,
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				return func(args []string) (url.Values, any, error) { return nil, map[string]string{"name": args[0]}, nil }
			},
			method: "POST", path: fixed("/v1/sites"), text: printSites},
		{name: "servers show", short: "one registered server", usage: "ID [-o json]", nargs: 1,
			method: "GET", path: func(a []string) string { return "/v1/servers/" + esc(a[0]) }, text: printServers},
		{name: "groups show", short: "one protection group and its policy", usage: "NAME [-o json]", nargs: 1,
			method: "GET", path: func(a []string) string { return "/v1/groups/" + esc(a[0]) }, text: printGroup},
		{name: "token list", short: "list join tokens (not their secrets): role, expiry, used by", usage: "[-o json]",
			method: "GET", path: fixed("/v1/tokens"), text: printTokens},
		{name: "info", short: "the configuration server's version, your user and role", usage: "[-o json]",
			method: "GET", path: fixed("/v1/info"), text: func(w io.Writer, raw json.RawMessage) error {
				var i struct {
					Version, User, Role string
					Schema              int
				}
				if err := json.Unmarshal(raw, &i); err != nil {
					return err
				}
				_, err := fmt.Fprintf(w, "server %s (schema %d); you are %s, %s\n", i.Version, i.Schema, i.User, i.Role)
				return err
			}},
		{name: "jobs list", short: "list jobs, newest first", usage: "[--unfinished] [-o json]",
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				u := fs.Bool("unfinished", false, "only jobs still queued or running")
				return func(args []string) (url.Values, any, error) {
					q := url.Values{}
					if *u {
						q.Set("unfinished", "true")
					}
					return q, nil, nil
				}
			},
			method: "GET", path: fixed("/v1/jobs"), text: printJobs},
		{name: "alerts list", short: "list active alerts", usage: "[--all] [-o json]",
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				all := fs.Bool("all", false, "cleared alerts too")
				return func(args []string) (url.Values, any, error) {
					q := url.Values{}
					if *all {
						q.Set("all", "true")
					}
					return q, nil, nil
				}
			},
			method: "GET", path: fixed("/v1/alerts"), text: printAlerts},
		{name: "audit", short: "the audit log: who changed what, when, with what result", usage: "[--limit N] [-o json]",
			flags: func(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
				n := fs.Int("limit", 50, "at most this many entries, newest first")
				return func(args []string) (url.Values, any, error) {
					return url.Values{"limit": {strconv.Itoa(*n)}}, nil, nil
				}
			},
			method: "GET", path: fixed("/v1/audit"), text: printAudit},
		unprotectCommand, jobsCancelCommand, planListCommand, planDeleteCommand,
	}
}

func groupFlags(fs *flag.FlagSet) func(args []string) (url.Values, any, error) {
	policy := fs.String("policy", "", `policy fields as JSON, e.g. '{"point_interval": "5s", "rpo_threshold": "1m"}'`)
	return func(args []string) (url.Values, any, error) {
		body := map[string]any{"name": args[0]}
		if *policy != "" {
			var p json.RawMessage
			if err := json.Unmarshal([]byte(*policy), &p); err != nil {
				return nil, nil, usagef("--policy: not JSON: %v", err)
			}
			body["policy"] = p
		}
		return nil, body, nil
	}
}

func printMachines(w io.Writer, raw json.RawMessage) error {
	var ms []control.Machine
	if err := json.Unmarshal(raw, &ms); err != nil {
		return err
	}
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		rpo := "-"
		if m.Replication.RPOSeconds >= 0 && !m.Replication.ReportedAt.IsZero() {
			rpo = fmt.Sprintf("%.1fs", m.Replication.RPOSeconds)
		}
		rows = append(rows, []string{m.Name, string(m.State), string(m.Health), rpo, strconv.Itoa(len(m.Disks)), orDash(m.Group)})
	}
	return table(w, "NAME STATE HEALTH RPO DISKS GROUP", rows)
}

func printMachine(w io.Writer, raw json.RawMessage) error {
	var m control.Machine
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	fmt.Fprintf(w, "machine   %s (%s)\nstate     %s\nhealth    %s\n", m.Name, m.ID, m.State, m.Health)
	for _, r := range m.HealthReasons {
		fmt.Fprintf(w, "          - %s\n", r)
	}
	fmt.Fprintf(w, "group     %s\nprocess   %s\ntarget    %s\nepoch     %d\n", orDash(m.Group), orDash(m.Process), orDash(m.Target), m.Epoch)
	_, _, _, r := m.Replicating()
	fmt.Fprintf(w, "replication %s, RPO %.1fs, backlog %d bytes, resync left %d bytes, reported %s\n", orDash(r.State), r.RPOSeconds, r.BacklogBytes, r.ResyncLeft, ago(r.ReportedAt))
	for _, d := range m.Disks {
		fmt.Fprintf(w, "disk      %s %d bytes %s\n", d.Name, d.Size, d.Path)
	}
	if f := m.Failover; f != nil {
		rep := f.Report
		fmt.Fprintf(w, "failover  point %s -> %d, epoch %d, replica %s, %s, export %s, machine %s %s\n", f.Point, rep.PointID, f.Epoch,
			f.Replica.Name, orDash(string(rep.Phase)), orDash(rep.Export), orDash(rep.Machine), orDash(rep.MachineState))
		h := rep.Hydration
		state := "in progress"
		switch {
		case h.Error != "":
			state = "failed: " + h.Error
		case h.Complete:
			state = "complete"
		}
		fmt.Fprintf(w, "hydration %d of %d bytes, %s\n", h.Done, h.Total, state)
		if rep.Error != "" {
			fmt.Fprintf(w, "          error: %s\n", rep.Error)
		}
		if d := f.Drain; f.Planned && d != nil {
			fmt.Fprintf(w, "drain     source %s, writes refused %v, final bookmark %d (%s), done %v %s\n", orDash(d.SourceState), d.WritesRefused, d.BookmarkSeq, orDash(d.Label), d.Done, d.Error)
		}
	}
	if rv := m.Reverse; rv != nil {
		rep := rv.Report
		fmt.Fprintf(w, "reverse   agent (master target) %s -> process %s -> master target %s, in place over %s; ready %v; %d bytes differed, %d sent\n",
			rv.Agent, rv.Process, rv.Target, strings.Join(rv.Seed, " "), rep.Ready, rep.ResyncBytes, rep.SentBytes)
		if rv.Force {
			fmt.Fprintf(w, "          forced: %d bytes of the old primary's unreplicated writes discarded\n", rv.Unreplicated)
		}
		if fb := rv.Failback; fb != nil {
			fmt.Fprintf(w, "failback  %s, epoch %d, released %v\n", fb.ID, fb.Epoch, rep.Released)
		}
		if rep.Error != "" {
			fmt.Fprintf(w, "          error: %s\n", rep.Error)
		}
	}
	return nil
}

func printPoints(w io.Writer, raw json.RawMessage) error {
	var b struct {
		Points []control.RecoveryPoint `json:"points"`
		At     *control.RecoveryPoint  `json:"at"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return err
	}
	rows := make([][]string, 0, len(b.Points))
	for _, p := range b.Points {
		kind := "crash"
		if p.AppConsistent {
			kind = "app"
		}
		mark := ""
		if b.At != nil && b.At.ID == p.ID {
			mark = "<- at"
		}
		rows = append(rows, []string{strconv.FormatUint(p.ID, 10), p.Time.Local().Format(time.RFC3339), kind, orDash(p.Label), mark})
	}
	return table(w, "ID TIME KIND LABEL ", rows)
}

func printGroups(w io.Writer, raw json.RawMessage) error {
	var gs []control.Group
	if err := json.Unmarshal(raw, &gs); err != nil {
		return err
	}
	rows := make([][]string, 0, len(gs))
	for _, g := range gs {
		rows = append(rows, []string{g.Name, g.Policy.PointInterval.String(), g.Policy.RPOThreshold.String(), g.Policy.Compression})
	}
	return table(w, "NAME POINTS RPO-ALERT COMPRESSION", rows)
}

func printGroup(w io.Writer, raw json.RawMessage) error {
	var g control.Group
	if err := json.Unmarshal(raw, &g); err != nil {
		return err
	}
	p, _ := json.MarshalIndent(g.Policy, "", "  ")
	_, err := fmt.Fprintf(w, "group %s (%s)\npolicy %s\n", g.Name, g.ID, p)
	return err
}

func printServers(w io.Writer, raw json.RawMessage) error {
	var ss []control.Server
	if err := json.Unmarshal(raw, &ss); err != nil {
		var one control.Server
		if err := json.Unmarshal(raw, &one); err != nil {
			return err
		}
		ss = []control.Server{one}
	}
	rows := make([][]string, 0, len(ss))
	for _, s := range ss {
		state := "ok"
		if s.Revoked {
			state = "revoked"
		}
		rows = append(rows, []string{s.ID, string(s.Role), s.Name, orDash(s.Address), orDash(s.Version), ago(s.HeartbeatAt), state})
	}
	return table(w, "ID ROLE NAME ADDRESS VERSION HEARTBEAT STATE", rows)
}

func printUsers(w io.Writer, raw json.RawMessage) error {
	var us []control.User
	if err := json.Unmarshal(raw, &us); err != nil {
		return err
	}
	rows := make([][]string, 0, len(us))
	for _, u := range us {
		rows = append(rows, []string{u.Name, string(u.Role), u.CreatedAt.Local().Format(time.RFC3339), strconv.FormatBool(u.Disabled)})
	}
	return table(w, "NAME ROLE CREATED DISABLED", rows)
}

func printJobs(w io.Writer, raw json.RawMessage) error {
	var js []control.Job
	if err := json.Unmarshal(raw, &js); err != nil {
		return err
	}
	rows := make([][]string, 0, len(js))
	for _, j := range js {
		rows = append(rows, []string{j.ID, j.Kind, orDash(j.Object), string(j.State), fmt.Sprintf("%.0f%%", 100*j.Progress), ago(j.CreatedAt), orDash(j.Error)})
	}
	return table(w, "ID KIND OBJECT STATE PROGRESS CREATED ERROR", rows)
}

func printAlerts(w io.Writer, raw json.RawMessage) error {
	var as []control.Alert
	if err := json.Unmarshal(raw, &as); err != nil {
		return err
	}
	rows := make([][]string, 0, len(as))
	for _, a := range as {
		rows = append(rows, []string{string(a.Severity), a.Message, strconv.Itoa(a.Count), ago(a.RaisedAt), ago(a.ClearedAt)})
	}
	return table(w, "SEVERITY MESSAGE COUNT RAISED CLEARED", rows)
}

func printAudit(w io.Writer, raw json.RawMessage) error {
	var es []control.AuditEntry
	if err := json.Unmarshal(raw, &es); err != nil {
		return err
	}
	rows := make([][]string, 0, len(es))
	for _, e := range es {
		rows = append(rows, []string{e.At.Local().Format(time.RFC3339), e.Actor, e.Action, e.Object, e.Result})
	}
	return table(w, "WHEN WHO ACTION OBJECT RESULT", rows)
}

// printSites prints a list of sites, or one.
func printSites(w io.Writer, raw json.RawMessage) error {
	var ss []control.Site
	if err := json.Unmarshal(raw, &ss); err != nil {
		var one control.Site
		if err := json.Unmarshal(raw, &one); err != nil {
			return err
		}
		ss = []control.Site{one}
	}
	rows := make([][]string, 0, len(ss))
	for _, s := range ss {
		rows = append(rows, []string{s.Name, s.ID, s.CreatedAt.Local().Format(time.RFC3339)})
	}
	return table(w, "NAME ID CREATED", rows)
}

func printTokens(w io.Writer, raw json.RawMessage) error {
	var ts []control.JoinToken
	if err := json.Unmarshal(raw, &ts); err != nil {
		return err
	}
	rows := make([][]string, 0, len(ts))
	for _, t := range ts {
		used := "-"
		if !t.UsedAt.IsZero() {
			used = t.UsedBy + " " + ago(t.UsedAt)
		}
		rows = append(rows, []string{t.ID, string(t.Role), t.ExpiresAt.Local().Format(time.RFC3339), used, t.CreatedBy})
	}
	return table(w, "ID ROLE EXPIRES USED CREATED-BY", rows)
}
