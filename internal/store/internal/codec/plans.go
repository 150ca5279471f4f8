package codec

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/standby-dr/standby/internal/control"
)

// Plan checks p and returns it in normal form: what GetPlan returns once
// it is stored. Its groups and drill go through JSON, as they are stored,
// so the result shares nothing with p and equals what is read back (an
// empty list that JSON leaves out comes back nil). The plan's own rules
// (control.Plan.Validate) are the API's business, not the store's.
func Plan(p control.Plan) (control.Plan, error) {
	what := fmt.Sprintf("plan %q", p.Name)
	if err := texts(what, []string{"id", "name"}, "id", p.ID, "name", p.Name, "description", p.Description); err != nil {
		return p, err
	}
	var err error
	if p.Groups, err = viaJSON(what, p.Groups); err != nil {
		return p, err
	}
	if p.Drill, err = viaJSON(what, p.Drill); err != nil {
		return p, err
	}
	p.CreatedAt = Time(p.CreatedAt)
	p.UpdatedAt = Time(p.UpdatedAt)
	return p, nil
}

// PlanRun checks r and returns it in normal form, its nested values
// through JSON as for Plan, and every time in them normalised.
func PlanRun(r control.PlanRun) (control.PlanRun, error) {
	what := fmt.Sprintf("plan run %s", r.ID)
	if err := texts(what, []string{"id", "plan", "operation"}, "id", r.ID, "plan", r.Plan,
		"operation", string(r.Operation), "point", r.Point, "retry of", r.RetryOf, "skip", r.Skip, "error", r.Error); err != nil {
		return r, err
	}
	if !slices.Contains(JobStates, r.State) {
		return r, invalid(what, "state %q is not one of %v", r.State, JobStates)
	}
	var err error
	if r.Steps, err = viaJSON(what, r.Steps); err != nil {
		return r, err
	}
	for i := range r.Steps {
		s := &r.Steps[i]
		s.StartedAt, s.EndedAt = Time(s.StartedAt), Time(s.EndedAt)
	}
	if r.Machines, err = viaJSON(what, r.Machines); err != nil {
		return r, err
	}
	for i := range r.Machines {
		m := &r.Machines[i]
		m.PointTime, m.ReadyAt = Time(m.PointTime), Time(m.ReadyAt)
	}
	if r.Signals, err = viaJSON(what, r.Signals); err != nil {
		return r, err
	}
	r.StartedAt = Time(r.StartedAt)
	r.EndedAt = Time(r.EndedAt)
	return r, nil
}

// viaJSON returns v encoded and decoded again: a deep copy in the form a
// JSON column gives back.
func viaJSON[T any](what string, v T) (T, error) {
	var out T
	b, err := JSON(what, v)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("%s: decode: %w", what, err)
	}
	return out, nil
}

// PlanJSON is p's JSON columns: its groups and its drill.
func PlanJSON(what string, p control.Plan) (groups, drill string, err error) {
	b, err := jsons(what, p.Groups, p.Drill)
	if err != nil {
		return "", "", err
	}
	return b[0], b[1], nil
}

// PlanRunJSON is r's JSON columns: its steps, machines and signals.
func PlanRunJSON(what string, r control.PlanRun) (steps, machines, signals string, err error) {
	b, err := jsons(what, r.Steps, r.Machines, r.Signals)
	if err != nil {
		return "", "", "", err
	}
	return b[0], b[1], b[2], nil
}

func jsons(what string, vs ...any) ([]string, error) {
	out := make([]string, len(vs))
	for i, v := range vs {
		b, err := JSON(what, v)
		if err != nil {
			return nil, err
		}
		out[i] = string(b)
	}
	return out, nil
}
