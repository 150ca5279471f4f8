package sqlite

import (
	"context"
	"fmt"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store/internal/codec"
)

const planCols = `id, name, description, groups, drill, version, created_at, updated_at`

func scanPlan(r scanner) (control.Plan, error) {
	var x control.Plan
	err := r.Scan(&x.ID, &x.Name, &x.Description, jsonCol{&x.Groups}, jsonCol{&x.Drill}, &x.Version, timeCol{&x.CreatedAt}, timeCol{&x.UpdatedAt})
	return x, err
}

// CreatePlan implements store.Store.
func (s *Store) CreatePlan(ctx context.Context, p control.Plan) (control.Plan, error) {
	p, err := codec.Plan(p)
	if err != nil {
		return control.Plan{}, err
	}
	p.Version = 1
	what := fmt.Sprintf("create plan %q", p.Name)
	groups, drill, err := codec.PlanJSON(what, p)
	if err != nil {
		return control.Plan{}, err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO plans (`+planCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		p.ID, p.Name, p.Description, groups, drill, p.Version, micro(p.CreatedAt), micro(p.UpdatedAt))
	if err != nil {
		return control.Plan{}, exists(what, err)
	}
	return p, nil
}

// GetPlan implements store.Store.
func (s *Store) GetPlan(ctx context.Context, name string) (control.Plan, error) {
	what := fmt.Sprintf("get plan %q", name)
	if err := codec.Key(what, name); err != nil {
		return control.Plan{}, err
	}
	x, err := scanPlan(s.r.QueryRowContext(ctx, `SELECT `+planCols+` FROM plans WHERE name = ?`, name))
	return x, found(what, err)
}

// ListPlans implements store.Store.
func (s *Store) ListPlans(ctx context.Context) ([]control.Plan, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+planCols+` FROM plans ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	return collect(rows, "list plans", scanPlan)
}

// UpdatePlan implements store.Store, as UpdateMachine.
func (s *Store) UpdatePlan(ctx context.Context, p control.Plan) (control.Plan, error) {
	p, err := codec.Plan(p)
	if err != nil {
		return control.Plan{}, err
	}
	what := fmt.Sprintf("update plan %q", p.Name)
	groups, drill, err := codec.PlanJSON(what, p)
	if err != nil {
		return control.Plan{}, err
	}
	res, err := s.w.ExecContext(ctx, `UPDATE plans SET name = ?, description = ?, groups = ?, drill = ?, version = version + 1,
		created_at = ?, updated_at = ? WHERE id = ? AND version = ?`,
		p.Name, p.Description, groups, drill, micro(p.CreatedAt), micro(p.UpdatedAt), p.ID, p.Version)
	if err != nil {
		return control.Plan{}, exists(what, err)
	}
	if err := s.versioned(ctx, what, "plans", p.ID, p.Version, res); err != nil {
		return control.Plan{}, err
	}
	p.Version++
	return p, nil
}

// DeletePlan implements store.Store.
func (s *Store) DeletePlan(ctx context.Context, name string) error {
	what := fmt.Sprintf("delete plan %q", name)
	if err := codec.Key(what, name); err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM plans WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return one(what, res)
}

const planRunCols = `id, plan, operation, point, dry_run, retry_of, skip, state, steps, machines,
	started_at, ended_at, rto_seconds, error, signals, version`

func scanPlanRun(r scanner) (control.PlanRun, error) {
	var x control.PlanRun
	err := r.Scan(&x.ID, &x.Plan, &x.Operation, &x.Point, &x.DryRun, &x.RetryOf, &x.Skip, &x.State, jsonCol{&x.Steps}, jsonCol{&x.Machines},
		timeCol{&x.StartedAt}, timeCol{&x.EndedAt}, &x.RTOSeconds, &x.Error, jsonCol{&x.Signals}, &x.Version)
	return x, err
}

// CreatePlanRun implements store.Store.
func (s *Store) CreatePlanRun(ctx context.Context, r control.PlanRun) (control.PlanRun, error) {
	r, err := codec.PlanRun(r)
	if err != nil {
		return control.PlanRun{}, err
	}
	r.Version = 1
	what := fmt.Sprintf("create plan run %s", r.ID)
	steps, machines, signals, err := codec.PlanRunJSON(what, r)
	if err != nil {
		return control.PlanRun{}, err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO plan_runs (`+planRunCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Plan, r.Operation, r.Point, r.DryRun, r.RetryOf, r.Skip, r.State, steps, machines,
		micro(r.StartedAt), micro(r.EndedAt), r.RTOSeconds, r.Error, signals, r.Version)
	if err != nil {
		return control.PlanRun{}, exists(what, err)
	}
	return r, nil
}

// GetPlanRun implements store.Store.
func (s *Store) GetPlanRun(ctx context.Context, id string) (control.PlanRun, error) {
	what := fmt.Sprintf("get plan run %s", id)
	if err := codec.Key(what, id); err != nil {
		return control.PlanRun{}, err
	}
	x, err := scanPlanRun(s.r.QueryRowContext(ctx, `SELECT `+planRunCols+` FROM plan_runs WHERE id = ?`, id))
	return x, found(what, err)
}

// UpdatePlanRun implements store.Store, as UpdateMachine.
func (s *Store) UpdatePlanRun(ctx context.Context, r control.PlanRun) (control.PlanRun, error) {
	r, err := codec.PlanRun(r)
	if err != nil {
		return control.PlanRun{}, err
	}
	what := fmt.Sprintf("update plan run %s", r.ID)
	steps, machines, signals, err := codec.PlanRunJSON(what, r)
	if err != nil {
		return control.PlanRun{}, err
	}
	res, err := s.w.ExecContext(ctx, `UPDATE plan_runs SET plan = ?, operation = ?, point = ?, dry_run = ?, retry_of = ?, skip = ?,
		state = ?, steps = ?, machines = ?, started_at = ?, ended_at = ?, rto_seconds = ?, error = ?, signals = ?,
		version = version + 1 WHERE id = ? AND version = ?`,
		r.Plan, r.Operation, r.Point, r.DryRun, r.RetryOf, r.Skip, r.State, steps, machines,
		micro(r.StartedAt), micro(r.EndedAt), r.RTOSeconds, r.Error, signals, r.ID, r.Version)
	if err != nil {
		return control.PlanRun{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.versioned(ctx, what, "plan_runs", r.ID, r.Version, res); err != nil {
		return control.PlanRun{}, err
	}
	r.Version++
	return r, nil
}

// ListPlanRuns implements store.Store: a run not started yet (NULL)
// first, then by start, newest first.
func (s *Store) ListPlanRuns(ctx context.Context, plan string, limit int) ([]control.PlanRun, error) {
	what := fmt.Sprintf("list runs of plan %q", plan)
	if err := codec.Key(what, plan); err != nil {
		return nil, err
	}
	if err := codec.Limit(what, limit); err != nil {
		return nil, err
	}
	q, args := `SELECT `+planRunCols+` FROM plan_runs WHERE plan = ? ORDER BY started_at DESC NULLS FIRST, seq DESC`, []any{plan}
	if limit > 0 {
		q, args = q+` LIMIT ?`, append(args, limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return collect(rows, what, scanPlanRun)
}
