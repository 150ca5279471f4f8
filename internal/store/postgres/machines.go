package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"strings"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/internal/codec"
)

const machineCols = `id, name, agent_id, group_id, process_id, target_id, epoch, state, health,
	health_reasons, disks, replication, version, updated_at, test_failover, test, failover, reverse`

func scanMachine(r pgx.Row) (control.Machine, error) {
	var x control.Machine
	err := r.Scan(&x.ID, &x.Name, &x.Agent, &x.Group, &x.Process, &x.Target, u64(&x.Epoch), &x.State, &x.Health,
		js(&x.HealthReasons), js(&x.Disks), js(&x.Replication), &x.Version, tm(&x.UpdatedAt), &x.TestFailover, js(&x.Test), js(&x.Failover), js(&x.Reverse))
	return x, err
}

// machineArgs are m's nested values, encoded, in machineCols order after
// the scalar columns.
func machineJSON(what string, m control.Machine) (reasons, disks, repl, test, failover, reverse string, err error) {
	var b [6][]byte
	for i, v := range []any{m.HealthReasons, m.Disks, m.Replication, m.Test, m.Failover, m.Reverse} {
		if b[i], err = codec.JSON(what, v); err != nil {
			return "", "", "", "", "", "", err
		}
	}
	return string(b[0]), string(b[1]), string(b[2]), string(b[3]), string(b[4]), string(b[5]), nil
}

// CreateMachine implements store.Store.
func (s *Store) CreateMachine(ctx context.Context, m control.Machine) (control.Machine, error) {
	m, err := codec.Machine(m)
	if err != nil {
		return control.Machine{}, err
	}
	m.Version = 1
	what := fmt.Sprintf("create machine %q", m.Name)
	reasons, disks, repl, test, failover, reverse, err := machineJSON(what, m)
	if err != nil {
		return control.Machine{}, err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO machines (`+machineCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
		m.ID, m.Name, m.Agent, m.Group, m.Process, m.Target, int64(m.Epoch), m.State, m.Health,
		reasons, disks, repl, m.Version, ts(m.UpdatedAt), m.TestFailover, test, failover, reverse)
	if err != nil {
		return control.Machine{}, exists(what, err)
	}
	return m, nil
}

// GetMachine implements store.Store.
func (s *Store) GetMachine(ctx context.Context, id string) (control.Machine, error) {
	x, err := scanMachine(s.pool.QueryRow(ctx, `SELECT `+machineCols+` FROM machines WHERE id = $1`, id))
	return x, found(fmt.Sprintf("get machine %s", id), err)
}

// MachineByName implements store.Store.
func (s *Store) MachineByName(ctx context.Context, name string) (control.Machine, error) {
	x, err := scanMachine(s.pool.QueryRow(ctx, `SELECT `+machineCols+` FROM machines WHERE name = $1`, name))
	return x, found(fmt.Sprintf("get machine %q", name), err)
}

// ListMachines implements store.Store.
func (s *Store) ListMachines(ctx context.Context, f store.MachineFilter) ([]control.Machine, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, val string }{
		{"group_id", f.Group}, {"agent_id", f.Agent}, {"process_id", f.Process}, {"target_id", f.Target},
	} {
		if c.val != "" {
			args = append(args, c.val)
			where = append(where, fmt.Sprintf("%s = $%d", c.col, len(args)))
		}
	}
	if f.Protected {
		where = append(where, "group_id <> ''")
	}
	q := `SELECT ` + machineCols + ` FROM machines`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	return collect(rows, "list machines", scanMachine)
}

// UpdateMachine implements store.Store: one conditional UPDATE, so that of
// two updates of the same version exactly one succeeds.
func (s *Store) UpdateMachine(ctx context.Context, m control.Machine) (control.Machine, error) {
	m, err := codec.Machine(m)
	if err != nil {
		return control.Machine{}, err
	}
	what := fmt.Sprintf("update machine %s", m.ID)
	reasons, disks, repl, test, failover, reverse, err := machineJSON(what, m)
	if err != nil {
		return control.Machine{}, err
	}
	res, err := s.pool.Exec(ctx, `UPDATE machines SET name = $1, agent_id = $2, group_id = $3, process_id = $4, target_id = $5,
		epoch = $6, state = $7, health = $8, health_reasons = $9, disks = $10, replication = $11, version = version + 1, updated_at = $12,
		test_failover = $13, test = $14, failover = $15, reverse = $16
		WHERE id = $17 AND version = $18`,
		m.Name, m.Agent, m.Group, m.Process, m.Target, int64(m.Epoch), m.State, m.Health,
		reasons, disks, repl, ts(m.UpdatedAt), m.TestFailover, test, failover, reverse, m.ID, m.Version)
	if err != nil {
		return control.Machine{}, exists(what, err)
	}
	if err := s.versioned(ctx, what, "machines", m.ID, m.Version, res); err != nil {
		return control.Machine{}, err
	}
	m.Version++
	return m, nil
}

// versioned checks the result of a conditional UPDATE ... WHERE id AND
// version: no row changed means the row is missing or was changed meanwhile.
func (s *Store) versioned(ctx context.Context, what, table, id string, version int64, tag pgconn.CommandTag) error {
	if tag.RowsAffected() == 1 {
		return nil
	}
	var stored int64
	if err := s.pool.QueryRow(ctx, `SELECT version FROM `+table+` WHERE id = $1`, id).Scan(&stored); err != nil {
		return found(what, err)
	}
	return fmt.Errorf("%s: version %d, stored %d: %w", what, version, stored, store.ErrConflict)
}

const pointCols = `machine_id, id, seq, point_time, app_consistent, label, tags`

func scanPoint(r pgx.Row) (control.RecoveryPoint, error) {
	var x control.RecoveryPoint
	err := r.Scan(&x.Machine, u64(&x.ID), u64(&x.Seq), tm(&x.Time), &x.AppConsistent, &x.Label, js(&x.Tags))
	return x, err
}

// ReplacePoints implements store.Store. The machine's row is locked, so
// that two reports for one machine replace its points one after the other.
func (s *Store) ReplacePoints(ctx context.Context, machine string, pts []control.RecoveryPoint) error {
	pts, err := codec.Points(machine, pts)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("replace recovery points of machine %s", machine)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var one int
	if err := tx.QueryRow(ctx, `SELECT 1 FROM machines WHERE id = $1 FOR UPDATE`, machine).Scan(&one); err != nil {
		return found(what, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM recovery_points WHERE machine_id = $1`, machine); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	rows := make([][]any, len(pts))
	for i, p := range pts {
		tags, err := codec.JSON(what, p.Tags)
		if err != nil {
			return err
		}
		rows[i] = []any{p.Machine, int64(p.ID), int64(p.Seq), ts(p.Time), p.AppConsistent, p.Label, text(tags)}
	}
	// COPY: a master target reports every point it keeps, thousands at times.
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"recovery_points"},
		[]string{"machine_id", "id", "seq", "point_time", "app_consistent", "label", "tags"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ListPoints implements store.Store. An unknown machine is ErrNotFound, so
// that a typo is not mistaken for a machine without points.
func (s *Store) ListPoints(ctx context.Context, machine string) ([]control.RecoveryPoint, error) {
	what := fmt.Sprintf("list recovery points of machine %s", machine)
	var one int
	if err := s.pool.QueryRow(ctx, `SELECT 1 FROM machines WHERE id = $1`, machine).Scan(&one); err != nil {
		return nil, found(what, err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+pointCols+` FROM recovery_points WHERE machine_id = $1
		ORDER BY point_time DESC NULLS LAST, id DESC`, machine)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return collect(rows, what, scanPoint)
}

const jobCols = `id, kind, object, params, state, steps, current_step, progress, result, error, log,
	created_by, created_at, updated_at, ended_at, attempts, version`

func scanJob(r pgx.Row) (control.Job, error) {
	var x control.Job
	var params []byte
	err := r.Scan(&x.ID, &x.Kind, &x.Object, &params, &x.State, js(&x.Steps), &x.Current, &x.Progress,
		&x.Result, &x.Error, js(&x.Log), &x.CreatedBy, tm(&x.CreatedAt), tm(&x.UpdatedAt),
		tm(&x.EndedAt), &x.Attempts, &x.Version)
	if params != nil {
		x.Params = params
	}
	return x, err
}

func jobArgs(what string, j control.Job) (params any, steps, log string, err error) {
	sb, err := codec.JSON(what, j.Steps)
	if err != nil {
		return nil, "", "", err
	}
	lb, err := codec.JSON(what, j.Log)
	if err != nil {
		return nil, "", "", err
	}
	if j.Params != nil {
		params = string(j.Params)
	}
	return params, string(sb), string(lb), nil
}

// CreateJob implements store.Store.
func (s *Store) CreateJob(ctx context.Context, j control.Job) (control.Job, error) {
	j, err := codec.Job(j)
	if err != nil {
		return control.Job{}, err
	}
	j.Version = 1
	what := fmt.Sprintf("create job %s", j.ID)
	params, steps, log, err := jobArgs(what, j)
	if err != nil {
		return control.Job{}, err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO jobs (`+jobCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		j.ID, j.Kind, j.Object, params, j.State, steps, j.Current, j.Progress, j.Result, j.Error, log,
		j.CreatedBy, ts(j.CreatedAt), ts(j.UpdatedAt), ts(j.EndedAt), j.Attempts, j.Version)
	if err != nil {
		return control.Job{}, exists(what, err)
	}
	return j, nil
}

// GetJob implements store.Store.
func (s *Store) GetJob(ctx context.Context, id string) (control.Job, error) {
	x, err := scanJob(s.pool.QueryRow(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = $1`, id))
	return x, found(fmt.Sprintf("get job %s", id), err)
}

// UpdateJob implements store.Store, as UpdateMachine.
func (s *Store) UpdateJob(ctx context.Context, j control.Job) (control.Job, error) {
	j, err := codec.Job(j)
	if err != nil {
		return control.Job{}, err
	}
	what := fmt.Sprintf("update job %s", j.ID)
	params, steps, log, err := jobArgs(what, j)
	if err != nil {
		return control.Job{}, err
	}
	res, err := s.pool.Exec(ctx, `UPDATE jobs SET kind = $1, object = $2, params = $3, state = $4, steps = $5,
		current_step = $6, progress = $7, result = $8, error = $9, log = $10, created_by = $11, created_at = $12, updated_at = $13,
		ended_at = $14, attempts = $15, version = version + 1 WHERE id = $16 AND version = $17`,
		j.Kind, j.Object, params, j.State, steps, j.Current, j.Progress, j.Result, j.Error, log,
		j.CreatedBy, ts(j.CreatedAt), ts(j.UpdatedAt), ts(j.EndedAt), j.Attempts, j.ID, j.Version)
	if err != nil {
		return control.Job{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.versioned(ctx, what, "jobs", j.ID, j.Version, res); err != nil {
		return control.Job{}, err
	}
	j.Version++
	return j, nil
}

// ListJobs implements store.Store: newest first; jobs created at the same
// time, the one created last first.
func (s *Store) ListJobs(ctx context.Context, f store.JobFilter) ([]control.Job, error) {
	if err := codec.Limit("list jobs", f.Limit); err != nil {
		return nil, err
	}
	var where []string
	var args []any
	if f.Object != "" {
		args = append(args, f.Object)
		where = append(where, fmt.Sprintf("object = $%d", len(args)))
	}
	if f.Kind != "" {
		args = append(args, f.Kind)
		where = append(where, fmt.Sprintf("kind = $%d", len(args)))
	}
	if f.Unfinished {
		where = append(where, "state NOT IN ('succeeded', 'failed', 'cancelled')")
	}
	q := `SELECT ` + jobCols + ` FROM jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC NULLS LAST, seq DESC`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return collect(rows, "list jobs", scanJob)
}
