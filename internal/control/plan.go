package control

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// A recovery plan (docs/plans.md) orchestrates an operation over several
// machines: its groups act in order, the machines of a group in
// parallel, with actions (scripts and manual steps) before and after each
// group. Plans are declarative (`standby plan apply -f plan.yaml`); a run
// of a plan is a job (internal/server/planjobs.go).

// Plan is a recovery plan.
type Plan struct {
	ID          string      `json:"id" yaml:"-"`
	Name        string      `json:"name" yaml:"name"`
	Description string      `json:"description,omitempty" yaml:"description,omitempty"`
	Groups      []PlanGroup `json:"groups" yaml:"groups"`
	// Drill, when set, runs a test failover of the plan on a schedule
	// (drill.go).
	Drill *DrillPolicy `json:"drill,omitempty" yaml:"drill,omitempty"`
	// Version increases with every update (optimistic concurrency).
	Version   int64     `json:"version" yaml:"-"`
	CreatedAt time.Time `json:"created_at" yaml:"-"`
	UpdatedAt time.Time `json:"updated_at" yaml:"-"`
}

// PlanGroup is one group of a plan: its machines act in parallel, after
// the Before actions and before the After ones.
type PlanGroup struct {
	Name     string       `json:"name" yaml:"name"`
	Machines []string     `json:"machines" yaml:"machines"` // machine names
	Before   []PlanAction `json:"before,omitempty" yaml:"before,omitempty"`
	After    []PlanAction `json:"after,omitempty" yaml:"after,omitempty"`
}

// PlanAction is a script or a manual action; exactly one is set.
type PlanAction struct {
	Name   string        `json:"name" yaml:"name"`
	Script *ScriptAction `json:"script,omitempty" yaml:"script,omitempty"`
	Manual *ManualAction `json:"manual,omitempty" yaml:"manual,omitempty"`
	// Operations limits the action to some operations of the plan (empty:
	// every one); e.g. a script that repoints DNS runs on failovers only.
	Operations []PlanOperation `json:"operations,omitempty" yaml:"operations,omitempty"`
	// Timeout bounds one attempt (default 10 minutes for a script, 24
	// hours for a manual action); Retries are more attempts of a failed
	// script.
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	Retries int      `json:"retries,omitempty" yaml:"retries,omitempty"`
}

// ScriptAction runs a program at the site where the operation leaves the
// machines (the group's master target at the secondary site, its process
// server at the primary), with STANDBY_PLAN, STANDBY_RUN, STANDBY_GROUP,
// STANDBY_MACHINES (space separated), STANDBY_OPERATION, STANDBY_STAGE
// (before or after), STANDBY_SITE (primary or secondary), STANDBY_ACTION
// and STANDBY_RUN_ON (the component) in its environment.
type ScriptAction struct {
	// Command is the argv; the program is an absolute path.
	Command []string `json:"command" yaml:"command"`
}

// ManualAction waits until an operator continues or aborts the run.
type ManualAction struct {
	Instructions string `json:"instructions" yaml:"instructions"`
}

// PlanOperation is what a run of a plan does to its machines.
type PlanOperation string

// The operations of a plan, each the machine operation of the same name
// applied group by group.
const (
	PlanTestFailover    PlanOperation = "test-failover"
	PlanTestCleanup     PlanOperation = "test-cleanup"
	PlanPlannedFailover PlanOperation = "planned-failover"
	PlanFailover        PlanOperation = "failover"
	PlanCommit          PlanOperation = "commit"
	PlanReprotect       PlanOperation = "reprotect"
	PlanFailback        PlanOperation = "failback"
	// PlanDrill is a test failover of the whole plan, a health probe of
	// every replica machine (the plan's drill.probes), and the cleanup:
	// what scheduled drills run (drill.go).
	PlanDrill PlanOperation = "drill"
)

// PlanOperations lists them, for validation messages.
var PlanOperations = []PlanOperation{PlanTestFailover, PlanTestCleanup, PlanPlannedFailover, PlanFailover, PlanCommit, PlanReprotect, PlanFailback, PlanDrill}

// Valid says whether o is one of PlanOperations.
func (o PlanOperation) Valid() bool { return slices.Contains(PlanOperations, o) }

// Reverse says whether the operation runs the groups in reverse order:
// the cleanup of a test failover and the failback undo what the forward
// order built (the application tier goes first, the database last).
func (o PlanOperation) Reverse() bool { return o == PlanTestCleanup || o == PlanFailback }

// Site is where the operation leaves the machines running.
func (o PlanOperation) Site() string {
	if o == PlanFailback || o == PlanTestCleanup {
		return "primary"
	}
	return "secondary"
}

// DrillPolicy schedules drills of a plan: a test failover, a health
// probe per machine, the cleanup.
type DrillPolicy struct {
	// Every is the interval between drills (at least 1 minute).
	Every Duration `json:"every" yaml:"every"`
	// Window raises an alert when no drill succeeded for that long
	// (default 2 × Every).
	Window Duration `json:"window,omitempty" yaml:"window,omitempty"`
	// Probes check each started replica machine, by machine name.
	Probes map[string]Probe `json:"probes,omitempty" yaml:"probes,omitempty"`
}

// Probe is a health check of a replica machine; exactly one is set.
type Probe struct {
	TCP     string   `json:"tcp,omitempty" yaml:"tcp,omitempty"`         // host:port to connect to
	HTTP    string   `json:"http,omitempty" yaml:"http,omitempty"`       // URL answering 2xx
	Command []string `json:"command,omitempty" yaml:"command,omitempty"` // exit 0
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"` // default 30s
}

// ErrInvalidPlan is wrapped by every plan validation error.
var ErrInvalidPlan = errors.New("invalid plan")

var planNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Plan limits.
const (
	MaxPlanGroups   = 32
	MaxPlanMachines = 256
	MaxPlanActions  = 16
)

// Validate checks a plan and returns every problem at once, each naming
// the field (groups[1].before[0].script.command) and what is allowed.
func (p Plan) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidPlan, field, fmt.Sprintf(format, a...)))
	}
	if !planNameRE.MatchString(p.Name) {
		bad("name", "%q: 1-63 of a-z 0-9 . _ -, starting with a letter or digit", p.Name)
	}
	if len(p.Description) > 1024 {
		bad("description", "%d bytes: at most 1024", len(p.Description))
	}
	if len(p.Groups) == 0 || len(p.Groups) > MaxPlanGroups {
		bad("groups", "%d groups: 1 to %d", len(p.Groups), MaxPlanGroups)
	}
	groups, machines := map[string]bool{}, map[string]string{}
	total := 0
	for i, g := range p.Groups {
		f := fmt.Sprintf("groups[%d]", i)
		if !planNameRE.MatchString(g.Name) {
			bad(f+".name", "%q: 1-63 of a-z 0-9 . _ -, starting with a letter or digit", g.Name)
		} else if groups[g.Name] {
			bad(f+".name", "%q is used by another group", g.Name)
		}
		groups[g.Name] = true
		if len(g.Machines) == 0 {
			bad(f+".machines", "a group needs at least one machine")
		}
		for j, m := range g.Machines {
			total++
			switch other, dup := machines[m]; {
			case m == "":
				bad(fmt.Sprintf("%s.machines[%d]", f, j), "empty machine name")
			case dup:
				bad(fmt.Sprintf("%s.machines[%d]", f, j), "%q is already in group %q: a machine is in one group", m, other)
			}
			machines[m] = g.Name
		}
		for _, st := range []struct {
			stage string
			acts  []PlanAction
		}{{"before", g.Before}, {"after", g.After}} {
			stage, acts := st.stage, st.acts
			if len(acts) > MaxPlanActions {
				bad(f+"."+stage, "%d actions: at most %d", len(acts), MaxPlanActions)
			}
			names := map[string]bool{}
			for k, a := range acts {
				af := fmt.Sprintf("%s.%s[%d]", f, stage, k)
				if !planNameRE.MatchString(a.Name) {
					bad(af+".name", "%q: 1-63 of a-z 0-9 . _ -, starting with a letter or digit", a.Name)
				} else if names[a.Name] {
					bad(af+".name", "%q is used by another action of %s.%s", a.Name, f, stage)
				}
				names[a.Name] = true
				errs = append(errs, a.validate(af)...)
			}
		}
	}
	if total > MaxPlanMachines {
		bad("groups", "%d machines: at most %d", total, MaxPlanMachines)
	}
	if d := p.Drill; d != nil {
		if d.Every.D() < time.Minute {
			bad("drill.every", "%s: at least 1m", d.Every)
		}
		if d.Window != 0 && d.Window < d.Every {
			bad("drill.window", "%s: at least drill.every (%s)", d.Window, d.Every)
		}
		for name, pr := range d.Probes {
			pf := fmt.Sprintf("drill.probes[%s]", name)
			if _, ok := machines[name]; !ok {
				bad(pf, "%q is not a machine of the plan", name)
			}
			n := 0
			for _, set := range []bool{pr.TCP != "", pr.HTTP != "", len(pr.Command) > 0} {
				if set {
					n++
				}
			}
			if n != 1 {
				bad(pf, "set exactly one of tcp, http, command")
			}
			if len(pr.Command) > 0 && !isAbs(pr.Command[0]) {
				bad(pf+".command", "%q: the program must be an absolute path", pr.Command[0])
			}
			if pr.Timeout < 0 || pr.Timeout.D() > time.Hour {
				bad(pf+".timeout", "%s: 0 (30s) to 1h", pr.Timeout)
			}
		}
	}
	return errors.Join(errs...)
}

func (a PlanAction) validate(f string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidPlan, field, fmt.Sprintf(format, args...)))
	}
	switch {
	case (a.Script == nil) == (a.Manual == nil):
		bad(f, "set exactly one of script, manual")
	case a.Script != nil:
		if len(a.Script.Command) == 0 || !isAbs(a.Script.Command[0]) {
			bad(f+".script.command", "want an argv whose program is an absolute path")
		}
	case a.Manual != nil:
		if a.Manual.Instructions == "" || len(a.Manual.Instructions) > 4096 {
			bad(f+".manual.instructions", "1 to 4096 bytes telling the operator what to do")
		}
		if a.Retries != 0 {
			bad(f+".retries", "a manual action has no retries (the operator continues or aborts)")
		}
	}
	if a.Timeout < 0 || a.Timeout.D() > 7*24*time.Hour {
		bad(f+".timeout", "%s: 0 (the default) to 168h", a.Timeout)
	}
	if a.Retries < 0 || a.Retries > 10 {
		bad(f+".retries", "%d: 0 to 10", a.Retries)
	}
	for i, o := range a.Operations {
		if !o.Valid() {
			bad(fmt.Sprintf("%s.operations[%d]", f, i), "%q: allowed: %s", o, joinOps(PlanOperations))
		}
	}
	return errs
}

// Applies says whether the action runs for operation op.
func (a PlanAction) Applies(op PlanOperation) bool {
	return len(a.Operations) == 0 || slices.Contains(a.Operations, op)
}

// ActionTimeout is the action's timeout, or its default.
func (a PlanAction) ActionTimeout() time.Duration {
	switch {
	case a.Timeout > 0:
		return a.Timeout.D()
	case a.Manual != nil:
		return 24 * time.Hour
	}
	return 10 * time.Minute
}

// Machines lists the plan's machines, group by group.
func (p Plan) Machines() []string {
	var out []string
	for _, g := range p.Groups {
		out = append(out, g.Machines...)
	}
	return out
}

func isAbs(p string) bool { return len(p) > 0 && p[0] == '/' }

func joinOps(ops []PlanOperation) string {
	s := ""
	for i, o := range ops {
		if i > 0 {
			s += ", "
		}
		s += string(o)
	}
	return s
}

// MarshalYAML writes d as text, as in JSON.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalYAML reads text such as "10s" (yaml.v3's obsolete unmarshaler
// form, which needs no import of the yaml package here).
func (d *Duration) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return fmt.Errorf("duration: want text such as \"10s\" or \"1h30m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want text such as \"10s\" or \"1h30m\"", s)
	}
	*d = Duration(v)
	return nil
}

// PlanRun is one run of a plan: its job's report, kept after the job.
// The run's ID is its job's.
type PlanRun struct {
	ID        string        `json:"id"`
	Plan      string        `json:"plan"` // the plan's name
	Operation PlanOperation `json:"operation"`
	// Point selects the recovery point of a failover or a test failover:
	// latest, latest-app, latest-consistent (the newest multi-machine
	// consistent point of the plan), a point id or an RFC 3339 time.
	Point string `json:"point,omitempty"`
	// DryRun lists the steps without doing them.
	DryRun bool `json:"dry_run,omitempty"`
	// RetryOf is the run this one retries (its finished steps are not
	// done again); Skip names the failed step of that run to skip.
	RetryOf string   `json:"retry_of,omitempty"`
	Skip    string   `json:"skip,omitempty"`
	State   JobState `json:"state"`
	// Steps are the run's steps in order, as they went.
	Steps []PlanStepReport `json:"steps"`
	// Machines say, per machine, what the operation gave it.
	Machines  []PlanMachineReport `json:"machines"`
	StartedAt time.Time           `json:"started_at"`
	EndedAt   time.Time           `json:"ended_at,omitzero"`
	// RTO is the achieved recovery time: from the start of the run to the
	// last machine running (failovers and failback), in seconds.
	RTOSeconds float64 `json:"rto_seconds,omitempty"`
	Error      string  `json:"error,omitempty"`
	// Signals are an operator's answers to manual actions, by step name:
	// "continue" or "abort".
	Signals map[string]string `json:"signals,omitempty"`
	Version int64             `json:"version"`
}

// PlanStepReport is one step of a run.
type PlanStepReport struct {
	Name     string   `json:"name"`
	Group    string   `json:"group,omitempty"`
	Kind     string   `json:"kind"` // script, manual, machines, probes
	Machines []string `json:"machines,omitempty"`
	// Operation is a machines step's machine operation.
	Operation PlanOperation `json:"operation,omitempty"`
	// Estimate is how long the step took in earlier runs (dry run).
	EstimateSeconds float64   `json:"estimate_seconds,omitempty"`
	State           JobState  `json:"state,omitempty"` // queued, running, succeeded, failed, or skipped
	StartedAt       time.Time `json:"started_at,omitzero"`
	EndedAt         time.Time `json:"ended_at,omitzero"`
	Result          string    `json:"result,omitempty"`
	Error           string    `json:"error,omitempty"`
}

// PlanMachineReport is what a run did to one machine.
type PlanMachineReport struct {
	Machine string `json:"machine"`
	Group   string `json:"group"`
	// PointID and PointTime are the recovery point used (failovers, test
	// failovers); DataLossSeconds the window of writes not in it (from
	// the point to when the machine was stopped or lost; 0 for a planned
	// failover or a failback, which drain).
	PointID         uint64    `json:"point_id,omitempty"`
	PointTime       time.Time `json:"point_time,omitzero"`
	DataLossSeconds float64   `json:"data_loss_seconds"`
	// ReadyAt is when the machine ran after the operation.
	ReadyAt time.Time `json:"ready_at,omitzero"`
	// Job is the machine operation's job; CleanupJob a drill's cleanup's.
	Job        string `json:"job,omitempty"`
	CleanupJob string `json:"cleanup_job,omitempty"`
	Result     string `json:"result,omitempty"`
	// Probe is what a drill's health probe of the replica machine found
	// ("" when it has none); ProbeOK whether it passed.
	Probe   string `json:"probe,omitempty"`
	ProbeOK bool   `json:"probe_ok,omitempty"`
}

// BarrierReport is an agent's part of a multi-machine consistency
// barrier (internal/api/consistency.go): it holds writes, then bookmarks.
type BarrierReport struct {
	ID    string `json:"id"`
	Held  bool   `json:"held,omitempty"`
	Done  bool   `json:"done,omitempty"` // bookmarked (Seq) and released
	Seq   uint64 `json:"seq,omitempty"`
	Error string `json:"error,omitempty"`
}

// PlanStepSkipped is the state of a step an operator skipped.
const PlanStepSkipped JobState = "skipped"
