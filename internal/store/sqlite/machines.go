package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/internal/codec"
)

const machineCols = `id, name, agent_id, group_id, process_id, target_id, epoch, state, health,
	health_reasons, disks, replication, version, updated_at, test_failover, test, failover, reverse`

func scanMachine(r scanner) (control.Machine, error) {
	var x control.Machine
	err := r.Scan(&x.ID, &x.Name, &x.Agent, &x.Group, &x.Process, &x.Target, u64Col{&x.Epoch}, &x.State, &x.Health,
		jsonCol{&x.HealthReasons}, jsonCol{&x.Disks}, jsonCol{&x.Replication}, &x.Version, timeCol{&x.UpdatedAt}, &x.TestFailover, jsonCol{&x.Test}, jsonCol{&x.Failover}, jsonCol{&x.Reverse})
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
	_, err = s.w.ExecContext(ctx, `INSERT INTO machines (`+machineCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.Name, m.Agent, m.Group, m.Process, m.Target, int64(m.Epoch), m.State, m.Health,
		reasons, disks, repl, m.Version, micro(m.UpdatedAt), m.TestFailover, test, failover, reverse)
	if err != nil {
		return control.Machine{}, exists(what, err)
	}
	return m, nil
}

// GetMachine implements store.Store.
func (s *Store) GetMachine(ctx context.Context, id string) (control.Machine, error) {
	x, err := scanMachine(s.r.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE id = ?`, id))
	return x, found(fmt.Sprintf("get machine %s", id), err)
}

// MachineByName implements store.Store.
func (s *Store) MachineByName(ctx context.Context, name string) (control.Machine, error) {
	x, err := scanMachine(s.r.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE name = ?`, name))
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
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if f.Protected {
		where = append(where, "group_id <> ''")
	}
	q := `SELECT ` + machineCols + ` FROM machines`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY name`, args...)
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
	res, err := s.w.ExecContext(ctx, `UPDATE machines SET name = ?, agent_id = ?, group_id = ?, process_id = ?, target_id = ?,
		epoch = ?, state = ?, health = ?, health_reasons = ?, disks = ?, replication = ?, version = version + 1, updated_at = ?,
		test_failover = ?, test = ?, failover = ?, reverse = ?
		WHERE id = ? AND version = ?`,
		m.Name, m.Agent, m.Group, m.Process, m.Target, int64(m.Epoch), m.State, m.Health,
		reasons, disks, repl, micro(m.UpdatedAt), m.TestFailover, test, failover, reverse, m.ID, m.Version)
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
func (s *Store) versioned(ctx context.Context, what, table, id string, version int64, res sql.Result) error {
	n, err := affected(res)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 1 {
		return nil
	}
	var stored int64
	err = s.w.QueryRowContext(ctx, `SELECT version FROM `+table+` WHERE id = ?`, id).Scan(&stored)
	if err != nil {
		return found(what, err)
	}
	return fmt.Errorf("%s: version %d, stored %d: %w", what, version, stored, store.ErrConflict)
}

const pointCols = `machine_id, id, seq, point_time, app_consistent, label, tags`

func scanPoint(r scanner) (control.RecoveryPoint, error) {
	var x control.RecoveryPoint
	err := r.Scan(&x.Machine, u64Col{&x.ID}, u64Col{&x.Seq}, timeCol{&x.Time}, &x.AppConsistent, &x.Label, jsonCol{&x.Tags})
	return x, err
}

// ReplacePoints implements store.Store.
func (s *Store) ReplacePoints(ctx context.Context, machine string, pts []control.RecoveryPoint) error {
	pts, err := codec.Points(machine, pts)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("replace recovery points of machine %s", machine)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT 1 FROM machines WHERE id = ?`, machine).Scan(&one); err != nil {
		return found(what, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_points WHERE machine_id = ?`, machine); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO recovery_points (`+pointCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer ins.Close()
	for _, p := range pts {
		tags, err := codec.JSON(what, p.Tags)
		if err != nil {
			return err
		}
		if _, err := ins.ExecContext(ctx, p.Machine, int64(p.ID), int64(p.Seq), micro(p.Time), p.AppConsistent, p.Label, string(tags)); err != nil {
			return fmt.Errorf("%s: point %d: %w", what, p.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ListPoints implements store.Store. An unknown machine is ErrNotFound, so
// that a typo is not mistaken for a machine without points.
func (s *Store) ListPoints(ctx context.Context, machine string) ([]control.RecoveryPoint, error) {
	what := fmt.Sprintf("list recovery points of machine %s", machine)
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()
	var one int
	if err := tx.QueryRowContext(ctx, `SELECT 1 FROM machines WHERE id = ?`, machine).Scan(&one); err != nil {
		return nil, found(what, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+pointCols+` FROM recovery_points WHERE machine_id = ?
		ORDER BY point_time DESC, id DESC`, machine)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return collect(rows, what, scanPoint)
}

const jobCols = `id, kind, object, params, state, steps, current_step, progress, result, error, log,
	created_by, created_at, updated_at, ended_at, attempts, version`

func scanJob(r scanner) (control.Job, error) {
	var x control.Job
	var params sql.NullString
	err := r.Scan(&x.ID, &x.Kind, &x.Object, &params, &x.State, jsonCol{&x.Steps}, &x.Current, &x.Progress,
		&x.Result, &x.Error, jsonCol{&x.Log}, &x.CreatedBy, timeCol{&x.CreatedAt}, timeCol{&x.UpdatedAt},
		timeCol{&x.EndedAt}, &x.Attempts, &x.Version)
	if params.Valid {
		x.Params = []byte(params.String)
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
	_, err = s.w.ExecContext(ctx, `INSERT INTO jobs (`+jobCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.Kind, j.Object, params, j.State, steps, j.Current, j.Progress, j.Result, j.Error, log,
		j.CreatedBy, micro(j.CreatedAt), micro(j.UpdatedAt), micro(j.EndedAt), j.Attempts, j.Version)
	if err != nil {
		return control.Job{}, exists(what, err)
	}
	return j, nil
}

// GetJob implements store.Store.
func (s *Store) GetJob(ctx context.Context, id string) (control.Job, error) {
	x, err := scanJob(s.r.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, id))
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
	res, err := s.w.ExecContext(ctx, `UPDATE jobs SET kind = ?, object = ?, params = ?, state = ?, steps = ?,
		current_step = ?, progress = ?, result = ?, error = ?, log = ?, created_by = ?, created_at = ?, updated_at = ?,
		ended_at = ?, attempts = ?, version = version + 1 WHERE id = ? AND version = ?`,
		j.Kind, j.Object, params, j.State, steps, j.Current, j.Progress, j.Result, j.Error, log,
		j.CreatedBy, micro(j.CreatedAt), micro(j.UpdatedAt), micro(j.EndedAt), j.Attempts, j.ID, j.Version)
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
		where, args = append(where, "object = ?"), append(args, f.Object)
	}
	if f.Kind != "" {
		where, args = append(where, "kind = ?"), append(args, f.Kind)
	}
	if f.Unfinished {
		where = append(where, "state NOT IN ('succeeded', 'failed', 'cancelled')")
	}
	q := `SELECT ` + jobCols + ` FROM jobs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, seq DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return collect(rows, "list jobs", scanJob)
}
