package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store/internal/codec"
)

const planCols = `id, name, description, groups, drill, version, created_at, updated_at`

func scanPlan(r pgx.Row) (control.Plan, error) {
	var x control.Plan
	err := r.Scan(&x.ID, &x.Name, &x.Description, js(&x.Groups), js(&x.Drill), &x.Version, tm(&x.CreatedAt), tm(&x.UpdatedAt))
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
	_, err = s.pool.Exec(ctx, `INSERT INTO plans (`+planCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		p.ID, p.Name, p.Description, groups, drill, p.Version, ts(p.CreatedAt), ts(p.UpdatedAt))
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
	x, err := scanPlan(s.pool.QueryRow(ctx, `SELECT `+planCols+` FROM plans WHERE name = $1`, name))
	return x, found(what, err)
}

// ListPlans implements store.Store.
func (s *Store) ListPlans(ctx context.Context) ([]control.Plan, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+planCols+` FROM plans ORDER BY name`)
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
	res, err := s.pool.Exec(ctx, `UPDATE plans SET name = $1, description = $2, groups = $3, drill = $4, version = version + 1,
		created_at = $5, updated_at = $6 WHERE id = $7 AND version = $8`,
		p.Name, p.Description, groups, drill, ts(p.CreatedAt), ts(p.UpdatedAt), p.ID, p.Version)
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
	res, err := s.pool.Exec(ctx, `DELETE FROM plans WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return one(what, res)
}

const planRunCols = `id, plan, operation, point, dry_run, retry_of, skip, state, steps, machines,
	started_at, ended_at, rto_seconds, error, signals, version`

func scanPlanRun(r pgx.Row) (control.PlanRun, error) {
	var x control.PlanRun
	err := r.Scan(&x.ID, &x.Plan, &x.Operation, &x.Point, &x.DryRun, &x.RetryOf, &x.Skip, &x.State, js(&x.Steps), js(&x.Machines),
		tm(&x.StartedAt), tm(&x.EndedAt), &x.RTOSeconds, &x.Error, js(&x.Signals), &x.Version)
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
	_, err = s.pool.Exec(ctx, `INSERT INTO plan_runs (`+planRunCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		r.ID, r.Plan, r.Operation, r.Point, r.DryRun, r.RetryOf, r.Skip, r.State, steps, machines,
		ts(r.StartedAt), ts(r.EndedAt), r.RTOSeconds, r.Error, signals, r.Version)
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
	x, err := scanPlanRun(s.pool.QueryRow(ctx, `SELECT `+planRunCols+` FROM plan_runs WHERE id = $1`, id))
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
	res, err := s.pool.Exec(ctx, `UPDATE plan_runs SET plan = $1, operation = $2, point = $3, dry_run = $4, retry_of = $5, skip = $6,
		state = $7, steps = $8, machines = $9, started_at = $10, ended_at = $11, rto_seconds = $12, error = $13, signals = $14,
		version = version + 1 WHERE id = $15 AND version = $16`,
		r.Plan, r.Operation, r.Point, r.DryRun, r.RetryOf, r.Skip, r.State, steps, machines,
		ts(r.StartedAt), ts(r.EndedAt), r.RTOSeconds, r.Error, signals, r.ID, r.Version)
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
	q, args := `SELECT `+planRunCols+` FROM plan_runs WHERE plan = $1 ORDER BY started_at DESC NULLS FIRST, seq DESC`, []any{plan}
	if limit > 0 {
		q, args = q+` LIMIT $2`, append(args, limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return collect(rows, what, scanPlanRun)
}
