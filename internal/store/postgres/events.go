package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store/internal/codec"
)

const alertCols = `id, alert_key, machine_id, server_id, severity, message, raised_at, last_seen, count, cleared_at`

func scanAlert(r pgx.Row) (control.Alert, error) {
	var x control.Alert
	err := r.Scan(&x.ID, &x.Key, &x.Machine, &x.Server, &x.Severity, &x.Message,
		tm(&x.RaisedAt), tm(&x.LastSeen), &x.Count, tm(&x.ClearedAt))
	return x, err
}

// RaiseAlert implements store.Store. The upsert targets the partial unique
// index of active alerts, so a repeat updates the active alert and a raise
// after a clear inserts a new one. A new alert has count 1 and a repeated
// one at least 2: that is how the caller learns which happened.
func (s *Store) RaiseAlert(ctx context.Context, a control.Alert) (control.Alert, bool, error) {
	a, err := codec.Alert(a)
	if err != nil {
		return control.Alert{}, false, err
	}
	if a.ID == "" {
		a.ID = codec.NewID()
	}
	what := fmt.Sprintf("raise alert %q", a.Key)
	x, err := scanAlert(s.pool.QueryRow(ctx, `INSERT INTO alerts (`+alertCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, NULL)
		ON CONFLICT (alert_key) WHERE cleared_at IS NULL DO UPDATE SET
			count = alerts.count + 1, last_seen = excluded.last_seen, message = excluded.message, severity = excluded.severity
		RETURNING `+alertCols,
		a.ID, a.Key, a.Machine, a.Server, a.Severity, a.Message, ts(a.RaisedAt), ts(a.LastSeen)))
	if err != nil {
		return control.Alert{}, false, exists(what, err)
	}
	return x, x.Count == 1, nil
}

// ClearAlert implements store.Store.
func (s *Store) ClearAlert(ctx context.Context, key string, at time.Time) error {
	at, err := codec.ClearAlert(key, at)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `UPDATE alerts SET cleared_at = $1 WHERE alert_key = $2 AND cleared_at IS NULL`, ts(at), key); err != nil {
		return fmt.Errorf("clear alert %q: %w", key, err)
	}
	return nil
}

// ListAlerts implements store.Store.
func (s *Store) ListAlerts(ctx context.Context, activeOnly bool) ([]control.Alert, error) {
	q := `SELECT ` + alertCols + ` FROM alerts`
	if activeOnly {
		q += ` WHERE cleared_at IS NULL`
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY raised_at DESC NULLS LAST, seq DESC`)
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	return collect(rows, "list alerts", scanAlert)
}

const auditCols = `id, at, actor, action, object, result, detail`

func scanAudit(r pgx.Row) (control.AuditEntry, error) {
	var x control.AuditEntry
	err := r.Scan(&x.ID, tm(&x.At), &x.Actor, &x.Action, &x.Object, &x.Result, &x.Detail)
	return x, err
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(ctx context.Context, e control.AuditEntry) (control.AuditEntry, error) {
	e, err := codec.Audit(e)
	if err != nil {
		return control.AuditEntry{}, err
	}
	err = s.pool.QueryRow(ctx, `INSERT INTO audit (at, actor, action, object, result, detail) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		ts(e.At), e.Actor, e.Action, e.Object, e.Result, e.Detail).Scan(&e.ID)
	if err != nil {
		return control.AuditEntry{}, fmt.Errorf("append audit %q: %w", e.Action, err)
	}
	return e, nil
}

// ListAudit implements store.Store. Newest is last appended: IDs grow in
// append order, whatever the entries' times say.
func (s *Store) ListAudit(ctx context.Context, limit int) ([]control.AuditEntry, error) {
	if err := codec.Limit("list audit", limit); err != nil {
		return nil, err
	}
	q, args := `SELECT `+auditCols+` FROM audit ORDER BY id DESC`, []any{}
	if limit > 0 {
		q, args = q+` LIMIT $1`, append(args, limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return collect(rows, "list audit", scanAudit)
}
