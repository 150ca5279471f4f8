package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/capture"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// ControlConfig makes the agent managed: it heartbeats to the
// configuration server, reports its machine, and ships where the server's
// desired state says, with the identity `standby agent join` wrote.
type ControlConfig struct {
	// Server is https://HOST:PORT of the configuration server.
	Server string `yaml:"server"`
	// Identity is the join directory (tls.crt, tls.key, ca.crt).
	Identity string `yaml:"identity"`
	// Heartbeat is how often the agent heartbeats and reports (1s..5m).
	Heartbeat string `yaml:"heartbeat"`
}

// ControlDefaults are the defaults of a control section.
func ControlDefaults() ControlConfig { return ControlConfig{Heartbeat: "10s"} }

func (c *ControlConfig) fillDefaults() {
	if c.Heartbeat == "" {
		c.Heartbeat = ControlDefaults().Heartbeat
	}
}

func (c *ControlConfig) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if u, err := url.Parse(c.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("control.server: %q is not https://HOST:PORT of the configuration server", c.Server)
	}
	if c.Identity == "" {
		bad("control.identity: required (the directory `standby agent join --dir` wrote)")
	}
	if _, err := c.heartbeat(); err != nil {
		bad("control.heartbeat: %v", err)
	}
	return errs
}

func (c *ControlConfig) heartbeat() (time.Duration, error) {
	return parseInterval(c.Heartbeat, "10s", time.Second, 5*time.Minute, "1s..5m", false)
}

// ControlStatus is the control connection's part of GET /status.
type ControlStatus struct {
	Server   string `json:"server"`
	Identity string `json:"identity"` // role/id of the joined certificate
	// LastHeartbeat and LastReport are when the server last accepted one
	// (RFC 3339); LastError is the last call's failure, "" once one works.
	LastHeartbeat string `json:"last_heartbeat,omitempty"`
	LastReport    string `json:"last_report,omitempty"`
	LastError     string `json:"last_error,omitempty"`
	// MachineState is the machine's protection state as the server last
	// answered a report.
	MachineState string `json:"machine_state,omitempty"`
	// DesiredVersion is the version of the desired state acted on.
	DesiredVersion string `json:"desired_version,omitempty"`
	// Protected says the desired state lists this machine; ProcessServer
	// is the endpoint it names and PointInterval the policy's interval.
	Protected     bool          `json:"protected"`
	ProcessServer *api.Endpoint `json:"process_server,omitempty"`
	PointInterval string        `json:"point_interval,omitempty"`
	// Drain is a planned failover's drain (drain.go), while one is wanted.
	Drain *control.DrainReport `json:"drain,omitempty"`
}

// controller is a managed agent's side of the control plane: heartbeats
// and reports, the desired-state long poll, and the policy's bookmarks.
// The data path never waits on it: when the server is unreachable the
// agent goes on with the last desired state it had (kept in the state
// directory, so that a restart does not forget it either).
type controller struct {
	a     *Agent
	cfg   ControlConfig
	every time.Duration
	comp  *client.Component
	log   *slog.Logger
	path  string // the last desired state, for restarts

	// revoked is the deployment's revocation list, fetched every minute;
	// empty until the first fetch, so shipping never waits for the server.
	revoked trust.RevocationSet

	mu       sync.Mutex
	st       ControlStatus
	desired  *api.DesiredMachine // this machine's entry; nil: not protected
	reported string              // the replication state last reported

	drain   drainer       // planned failovers (drain.go)
	barrier barrier       // consistency barriers (barrier.go)
	running bool          // run started: apply may start drains (guarded by mu)
	kick    chan struct{} // reportSoon: report now
	// caughtUp is when a report last found every record applied and the
	// last one a bookmark (guarded by mu).
	caughtUp time.Time
}

// desiredFile keeps the last desired state of a managed agent.
const desiredFile = "desired.json"

func newController(a *Agent, cfg ControlConfig) (*controller, error) {
	l, err := trust.Load(cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("control.identity: %w", err)
	}
	if l.Identity.Role != control.RoleAgent {
		return nil, fmt.Errorf("control.identity: %s holds the identity of %s, not an agent's; join with an agent token (`standby token create --role agent`)", cfg.Identity, l.Identity)
	}
	comp, err := client.NewComponent(cfg.Server, cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("control.server: %w", err)
	}
	every, _ := cfg.heartbeat()
	c := &controller{a: a, cfg: cfg, every: every, comp: comp, log: a.log.With("server", cfg.Server),
		path: filepath.Join(a.cfg.StateDir, desiredFile), kick: make(chan struct{}, 1)}
	c.drain.c, c.barrier.c = c, c
	c.st = ControlStatus{Server: cfg.Server, Identity: l.Identity.String()}
	d, err := c.load()
	if err != nil {
		return nil, err
	}
	c.apply(d, false)
	return c, nil
}

// run heartbeats, reports, polls the desired state and takes the
// policy's bookmarks until ctx ends.
func (c *controller) run(ctx context.Context) {
	c.mu.Lock()
	c.running = true
	d := c.desired
	c.mu.Unlock()
	if d != nil {
		c.drain.set(d.Drain)
	}
	defer c.drain.stop()
	var wg sync.WaitGroup
	// Renewal rewrites the identity files before the certificate expires;
	// every dial and every call to the server loads them afresh.
	renew := func(ctx context.Context) {
		(&trust.Renewer{Dir: c.cfg.Identity, ServerURL: c.cfg.Server, Log: c.log}).Run(ctx)
	}
	for _, loop := range []func(context.Context){c.reportLoop, c.desiredLoop, c.bookmarkLoop, renew, c.revocationLoop} {
		wg.Add(1)
		go func() { defer wg.Done(); loop(ctx) }()
	}
	wg.Wait()
}

// Status reports the control connection.
func (c *controller) Status() ControlStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.st
	st.Drain = c.drain.report()
	if st.ProcessServer != nil {
		ep := *st.ProcessServer
		st.ProcessServer = &ep
	}
	return st
}

func (c *controller) set(fn func(*ControlStatus)) {
	c.mu.Lock()
	fn(&c.st)
	c.mu.Unlock()
}

// outage logs a failing call once when it starts failing and once when it
// works again (not at every retry).
type outage struct {
	what  string
	since time.Time
}

func (o *outage) fail(log *slog.Logger, err error) {
	if o.since.IsZero() {
		o.since = time.Now()
		log.Warn("configuration server unreachable; going on with the last desired state", "call", o.what, "err", err)
	}
}

func (o *outage) ok(log *slog.Logger) {
	if !o.since.IsZero() {
		log.Info("configuration server reachable again", "call", o.what, "after", time.Since(o.since).Round(time.Second))
		o.since = time.Time{}
	}
}

// callTimeout bounds a heartbeat or a report.
const callTimeout = 10 * time.Second

// reportLoop heartbeats and reports every c.every, and reports at once
// when the replication state changes.
func (c *controller) reportLoop(ctx context.Context) {
	out := outage{what: "heartbeat"}
	beat := time.NewTicker(c.every)
	defer beat.Stop()
	watch := time.NewTicker(250 * time.Millisecond)
	defer watch.Stop()
	full := true
	for {
		// While the server is unreachable only the heartbeat period
		// retries: a state change does not make the agent call faster.
		if full || (out.since.IsZero() && c.stateChanged()) {
			err := c.heartbeatAndReport(ctx, full)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				out.fail(c.log, err)
				c.set(func(st *ControlStatus) { st.LastError = err.Error() })
			} else {
				out.ok(c.log)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			full = true
		case <-watch.C:
			full = false
		case <-c.kick:
			full = false
			c.mu.Lock()
			c.reported = "" // report now, whatever the state
			c.mu.Unlock()
		}
	}
}

// reportSoon makes the report loop report now (a drain's progress).
func (c *controller) reportSoon() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *controller) stateChanged() bool {
	s := c.a.ship.Status().State
	c.mu.Lock()
	defer c.mu.Unlock()
	return s != c.reported
}

// heartbeatAndReport sends a heartbeat (when beat) and the machine report.
func (c *controller) heartbeatAndReport(ctx context.Context, beat bool) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if beat {
		if err := c.comp.Heartbeat(ctx, api.HeartbeatRequest{Version: version(), Capacity: control.Capacity{Machines: 1}}); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		now := time.Now().UTC().Format(time.RFC3339Nano)
		c.set(func(st *ControlStatus) { st.LastHeartbeat = now })
	}
	r := c.report()
	m, err := c.comp.Report(ctx, r)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	c.mu.Lock()
	c.reported = r.Replication.State
	c.st.LastReport, c.st.MachineState, c.st.LastError = now, string(m.State), ""
	c.mu.Unlock()
	return nil
}

// report is the machine as the agent sees it now.
func (c *controller) report() api.AgentReport {
	r := api.AgentReport{ID: c.a.machine.ID(), Name: c.a.cfg.Machine}
	for i, d := range c.a.machine.Disks() {
		path := c.a.cfg.Disks[i].Path
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
		r.Disks = append(r.Disks, control.Disk{Name: d.Name(), Size: d.Size(), Path: path})
	}
	cs := c.a.machine.Stats()
	rs := c.a.ship.Status()
	r.Replication = control.ReplicationReport{
		State:        rs.State,
		RPOSeconds:   rs.RPOSeconds,
		BacklogBytes: cs.JournalBytes + cs.DirtyBytes,
		ResyncBytes:  rs.ResyncBytes,
		ResyncLeft:   rs.ResyncLeft,
		LastError:    rs.LastError,
		LastPointAt:  c.a.ship.appliedAt(),
		Epoch:        cs.Epoch,
	}
	// Caught up: the journal's last record is a bookmark the master
	// target applied, so the newest point is the machine's state now. An
	// idle machine's points are not late: its newest point is as recent
	// as the last time it was caught up (a bookmark on its way, such as
	// a consistency barrier's, does not make it look older).
	c.mu.Lock()
	if cs.LastBookmark > 0 && cs.Pos.Seq == cs.LastBookmark && rs.Applied.Seq >= cs.LastBookmark && rs.Consistent {
		c.caughtUp = time.Now().UTC()
	}
	if c.caughtUp.After(r.Replication.LastPointAt) {
		r.Replication.LastPointAt = c.caughtUp
	}
	c.mu.Unlock()
	r.Drain, r.Barrier = c.drain.report(), c.barrier.report()
	return r
}

// desiredLoop long-polls the desired state and acts on every new version.
func (c *controller) desiredLoop(ctx context.Context) {
	out := outage{what: "desired state"}
	backoff := time.Second
	have := ""
	for ctx.Err() == nil {
		d, err := c.comp.Desired(ctx, have, 30*time.Second)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			out.fail(c.log, err)
			c.set(func(st *ControlStatus) { st.LastError = err.Error() })
			// Jitter: agents that lost the server together do not all
			// come back in the same instant.
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		out.ok(c.log)
		backoff = time.Second
		if d.Version != have {
			have = d.Version
			var mine *api.DesiredMachine
			for i := range d.Machines {
				if d.Machines[i].ID == c.a.machine.ID() {
					mine = &d.Machines[i]
				}
			}
			c.set(func(st *ControlStatus) { st.DesiredVersion = d.Version })
			c.apply(mine, true)
		}
	}
}

// apply acts on this machine's desired entry (nil: not protected): it
// ships to the process server named, or stops shipping. With save, the
// entry is kept for a restart while the server is unreachable.
func (c *controller) apply(d *api.DesiredMachine, save bool) {
	resumed := false
	if d != nil && d.Resume != nil && d.Resume.Epoch > c.a.machine.Stats().Epoch {
		c.mu.Lock()
		running := c.running
		c.mu.Unlock()
		if running {
			if err := c.drain.resume(d.Resume.Epoch); err != nil {
				c.log.Error("failback: cannot continue at the new epoch; still fenced", "err", err)
			} else {
				resumed = true
			}
		}
	}
	if d != nil && d.Epoch > c.a.machine.Stats().Epoch {
		// Failed over: the master target holds the newer epoch and
		// refuses this journal's segments; do not even try.
		why := fmt.Sprintf("fenced: the machine was failed over (epoch %d, this journal's %d); shipping stopped", d.Epoch, c.a.machine.Stats().Epoch)
		if c.a.ship.Status().State != ReplFenced {
			c.log.Warn(why)
		}
		c.a.ship.fence(why)
		d = &api.DesiredMachine{ID: d.ID, Name: d.Name, Epoch: d.Epoch, Policy: d.Policy, Drain: d.Drain} // no process server
	}
	var p *peer
	if d != nil && d.Process != nil && d.Process.Address != "" {
		p = managedPeer(d.Process.Address, d.Process.ID, c.cfg.Identity, &c.revoked)
	}
	c.mu.Lock()
	was := c.desired
	c.desired = d
	running := c.running
	c.st.Protected, c.st.ProcessServer, c.st.PointInterval = d != nil, nil, ""
	if d != nil {
		if d.Process != nil {
			ep := *d.Process
			c.st.ProcessServer = &ep
		}
		if d.Policy.PointInterval > 0 {
			c.st.PointInterval = d.Policy.PointInterval.String()
		}
	}
	c.mu.Unlock()
	if save {
		if err := c.save(d); err != nil {
			c.log.Warn("keep the desired state for a restart", "path", c.path, "err", err)
		}
	}
	switch {
	case p != nil && (was == nil || was.Process == nil || *was.Process != *d.Process):
		c.log.Info("protected: shipping to the process server the configuration server names", "process", d.Process.ID, "address", d.Process.Address)
	case p == nil && d != nil && (d.Drain != nil || d.Resume != nil || d.Epoch > c.a.machine.Stats().Epoch):
		c.log.Info("the machine runs at the other site (failed over, or protected in reverse): not shipping")
	case p == nil && d != nil:
		c.log.Warn("protected, but the configuration server names no reachable process server; not shipping", "process", d.Process)
	case p == nil && was != nil:
		c.log.Info("not protected any more: shipping stopped; capture and the journal go on")
	}
	c.a.ship.setPeer(p)
	if running {
		var want *api.DesiredDrain
		if d != nil {
			want = d.Drain
		}
		c.drain.set(want)
		var bar *api.DesiredBarrier
		if d != nil && d.Process != nil {
			bar = d.Barrier
		}
		c.barrier.set(bar)
		if resumed {
			go c.drain.startSource(context.Background())
			c.reportSoon()
		}
	}
}

// load reads the desired entry kept by save; nil when there is none.
func (c *controller) load() (*api.DesiredMachine, error) {
	b, err := os.ReadFile(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("desired state: %w", err)
	}
	var d struct{ Machine *api.DesiredMachine }
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("desired state %s: %w (remove it: the configuration server sends it again)", c.path, err)
	}
	if d.Machine != nil && d.Machine.ID != c.a.machine.ID() {
		return nil, nil // another journal's machine: the server will say
	}
	return d.Machine, nil
}

// save keeps d (nil too) atomically: write, fsync, rename.
func (c *controller) save(d *api.DesiredMachine) error {
	b, err := json.Marshal(struct{ Machine *api.DesiredMachine }{d})
	if err != nil {
		return err
	}
	tmp := c.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, c.path)
}

// pointInterval is the crash-consistent bookmark interval now: the
// desired policy's while the machine is protected, else the
// configuration's bookmark_interval; -1 for none.
func (c *controller) pointInterval() time.Duration {
	c.mu.Lock()
	d := c.desired
	c.mu.Unlock()
	if d != nil && d.Policy.PointInterval > 0 {
		return max(time.Second, d.Policy.PointInterval.D())
	}
	iv, _ := c.a.cfg.bookmarkInterval()
	return iv
}

// bookmarkLoop takes the crash-consistent bookmarks of a managed agent
// (capture's own timer cannot change its interval while it runs): one
// per interval, when something was written since the last one.
func (c *controller) bookmarkLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		iv := c.pointInterval()
		if iv <= 0 || time.Since(last) < iv {
			continue
		}
		last = time.Now()
		st := c.a.machine.Stats()
		if st.Pos.Seq == st.LastBookmark {
			continue // nothing written since the last bookmark
		}
		if _, err := c.a.machine.Bookmark("interval", false); err != nil && !errors.Is(err, capture.ErrNotConsistent) {
			c.log.Warn("interval bookmark", "err", err)
		}
	}
}

// version is this binary's module version, for heartbeats.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// revocationLoop fetches the revoked servers every minute (every 5 s
// while the fetch fails), so that the agent refuses a revoked process
// server's certificate.
func (c *controller) revocationLoop(ctx context.Context) {
	for {
		wait := time.Minute
		l, err := trust.Load(c.cfg.Identity)
		if err == nil {
			var rv *trust.Revocations
			if rv, err = trust.FetchRevocations(ctx, l, c.cfg.Server); err == nil {
				c.revoked.Set(rv)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
