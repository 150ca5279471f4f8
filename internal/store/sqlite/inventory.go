package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
	"github.com/standby-dr/standby/internal/store/internal/codec"
)

// CreateSite implements store.Store.
func (s *Store) CreateSite(ctx context.Context, site control.Site) error {
	site, err := codec.Site(site)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO sites (id, name, created_at) VALUES (?, ?, ?)`,
		site.ID, site.Name, micro(site.CreatedAt))
	if err != nil {
		return exists(fmt.Sprintf("create site %q", site.Name), err)
	}
	return nil
}

// ListSites implements store.Store.
func (s *Store) ListSites(ctx context.Context) ([]control.Site, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, created_at FROM sites ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	return collect(rows, "list sites", func(r scanner) (control.Site, error) {
		var x control.Site
		err := r.Scan(&x.ID, &x.Name, timeCol{&x.CreatedAt})
		return x, err
	})
}

const serverCols = `id, role, name, site, address, version, capacity, cert_serial, cert_expires, revoked, joined_at, heartbeat_at`

func scanServer(r scanner) (control.Server, error) {
	var x control.Server
	err := r.Scan(&x.ID, &x.Role, &x.Name, &x.Site, &x.Address, &x.Version, jsonCol{&x.Capacity},
		&x.CertSerial, timeCol{&x.CertExpires}, &x.Revoked, timeCol{&x.JoinedAt}, timeCol{&x.HeartbeatAt})
	return x, err
}

// CreateServer implements store.Store.
func (s *Store) CreateServer(ctx context.Context, srv control.Server) error {
	srv, err := codec.Server(srv, true)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("create server %s/%s", srv.Role, srv.Name)
	capacity, err := codec.JSON(what, srv.Capacity)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO servers (`+serverCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		srv.ID, srv.Role, srv.Name, srv.Site, srv.Address, srv.Version, string(capacity),
		srv.CertSerial, micro(srv.CertExpires), srv.Revoked, micro(srv.JoinedAt), micro(srv.HeartbeatAt))
	if err != nil {
		return exists(what, err)
	}
	return nil
}

// GetServer implements store.Store.
func (s *Store) GetServer(ctx context.Context, id string) (control.Server, error) {
	x, err := scanServer(s.r.QueryRowContext(ctx, `SELECT `+serverCols+` FROM servers WHERE id = ?`, id))
	return x, found(fmt.Sprintf("get server %s", id), err)
}

// ListServers implements store.Store.
func (s *Store) ListServers(ctx context.Context, role control.Role) ([]control.Server, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+serverCols+` FROM servers WHERE ? = '' OR role = ? ORDER BY role, name`, role, role)
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	return collect(rows, "list servers", scanServer)
}

// UpdateServer implements store.Store.
func (s *Store) UpdateServer(ctx context.Context, srv control.Server) error {
	srv, err := codec.Server(srv, false)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("update server %s", srv.ID)
	capacity, err := codec.JSON(what, srv.Capacity)
	if err != nil {
		return err
	}
	// Role and JoinedAt are the server's identity and history (its
	// certificate names the role): an update keeps them.
	res, err := s.w.ExecContext(ctx, `UPDATE servers SET name = ?, site = ?, address = ?, version = ?, capacity = ?,
		cert_serial = ?, cert_expires = ?, revoked = ?, heartbeat_at = ? WHERE id = ?`,
		srv.Name, srv.Site, srv.Address, srv.Version, string(capacity),
		srv.CertSerial, micro(srv.CertExpires), srv.Revoked, micro(srv.HeartbeatAt), srv.ID)
	if err != nil {
		return exists(what, err)
	}
	return one(what, res)
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, id string, at time.Time, version string, c control.Capacity) error {
	at, err := codec.Heartbeat(id, at, version)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("heartbeat of server %s", id)
	capacity, err := codec.JSON(what, c)
	if err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `UPDATE servers SET heartbeat_at = ?, version = ?, capacity = ? WHERE id = ?`,
		micro(at), version, string(capacity), id)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return one(what, res)
}

const tokenCols = `id, hash, role, created_by, created_at, expires_at, used_at, used_by`

func scanToken(r scanner) (control.JoinToken, error) {
	var x control.JoinToken
	err := r.Scan(&x.ID, &x.Hash, &x.Role, &x.CreatedBy, timeCol{&x.CreatedAt}, timeCol{&x.ExpiresAt}, timeCol{&x.UsedAt}, &x.UsedBy)
	return x, err
}

// CreateJoinToken implements store.Store.
func (s *Store) CreateJoinToken(ctx context.Context, t control.JoinToken) error {
	t, err := codec.JoinToken(t)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO join_tokens (`+tokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Hash, t.Role, t.CreatedBy, micro(t.CreatedAt), micro(t.ExpiresAt), micro(t.UsedAt), t.UsedBy)
	if err != nil {
		return exists(fmt.Sprintf("create join token %s", t.ID), err)
	}
	return nil
}

// UseJoinToken implements store.Store. Writes are serialized on the one
// write connection and the transaction is IMMEDIATE, so the read and the
// update below are one atomic step.
func (s *Store) UseJoinToken(ctx context.Context, hash string, now time.Time, usedBy string) (control.JoinToken, error) {
	const what = "use join token"
	if err := codec.Key(what, hash); err != nil {
		return control.JoinToken{}, err
	}
	if err := codec.Key(what, usedBy); err != nil {
		return control.JoinToken{}, err
	}
	now = codec.Time(now)
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return control.JoinToken{}, fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()
	t, err := scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM join_tokens WHERE hash = ?`, hash))
	if err != nil {
		return control.JoinToken{}, found(what, err)
	}
	if err := usable(t, now); err != nil {
		return control.JoinToken{}, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE join_tokens SET used_at = ?, used_by = ? WHERE id = ?`, micro(now), usedBy, t.ID); err != nil {
		return control.JoinToken{}, fmt.Errorf("%s %s: %w", what, t.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return control.JoinToken{}, fmt.Errorf("%s %s: %w", what, t.ID, err)
	}
	t.UsedAt, t.UsedBy = now, usedBy
	return t, nil
}

// usable says why token t cannot be used at now, or nil. A used token is
// reported as used even once it has expired: that is the more alarming news.
func usable(t control.JoinToken, now time.Time) error {
	if !t.UsedAt.IsZero() {
		return fmt.Errorf("use join token %s: used by %s at %s: %w (create a new one)", t.ID, t.UsedBy, t.UsedAt.Format(time.RFC3339), store.ErrTokenUsed)
	}
	if !now.Before(t.ExpiresAt) {
		return fmt.Errorf("use join token %s: expired at %s: %w (create a new one)", t.ID, t.ExpiresAt.Format(time.RFC3339), store.ErrTokenExpired)
	}
	return nil
}

// ListJoinTokens implements store.Store, newest first.
func (s *Store) ListJoinTokens(ctx context.Context) ([]control.JoinToken, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenCols+` FROM join_tokens ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	return collect(rows, "list join tokens", scanToken)
}

const userCols = `id, name, role, coalesce(token_hash, ''), created_at, disabled`

func scanUser(r scanner) (control.User, error) {
	var x control.User
	err := r.Scan(&x.ID, &x.Name, &x.Role, &x.TokenHash, timeCol{&x.CreatedAt}, &x.Disabled)
	return x, err
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u control.User) error {
	u, err := codec.User(u)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO users (id, name, role, token_hash, created_at, disabled) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Name, u.Role, nullText(u.TokenHash), micro(u.CreatedAt), u.Disabled)
	if err != nil {
		return exists(fmt.Sprintf("create user %q", u.Name), err)
	}
	return nil
}

// UserByTokenHash implements store.Store.
func (s *Store) UserByTokenHash(ctx context.Context, hash string) (control.User, error) {
	const what = "user by token"
	if hash == "" {
		return control.User{}, fmt.Errorf("%s: empty hash: %w", what, store.ErrNotFound)
	}
	x, err := scanUser(s.r.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE token_hash = ?`, hash))
	return x, found(what, err)
}

// ListUsers implements store.Store, by name.
func (s *Store) ListUsers(ctx context.Context) ([]control.User, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return collect(rows, "list users", scanUser)
}

const groupCols = `id, name, policy, created_at, updated_at`

func scanGroup(r scanner) (control.Group, error) {
	var x control.Group
	err := r.Scan(&x.ID, &x.Name, jsonCol{&x.Policy}, timeCol{&x.CreatedAt}, timeCol{&x.UpdatedAt})
	return x, err
}

// CreateGroup implements store.Store.
func (s *Store) CreateGroup(ctx context.Context, g control.Group) error {
	g, err := codec.Group(g)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("create group %q", g.Name)
	policy, err := codec.JSON(what, g.Policy)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO protection_groups (`+groupCols+`) VALUES (?, ?, ?, ?, ?)`,
		g.ID, g.Name, string(policy), micro(g.CreatedAt), micro(g.UpdatedAt))
	if err != nil {
		return exists(what, err)
	}
	return nil
}

// GetGroup implements store.Store.
func (s *Store) GetGroup(ctx context.Context, id string) (control.Group, error) {
	x, err := scanGroup(s.r.QueryRowContext(ctx, `SELECT `+groupCols+` FROM protection_groups WHERE id = ?`, id))
	return x, found(fmt.Sprintf("get group %s", id), err)
}

// GroupByName implements store.Store.
func (s *Store) GroupByName(ctx context.Context, name string) (control.Group, error) {
	x, err := scanGroup(s.r.QueryRowContext(ctx, `SELECT `+groupCols+` FROM protection_groups WHERE name = ?`, name))
	return x, found(fmt.Sprintf("get group %q", name), err)
}

// ListGroups implements store.Store.
func (s *Store) ListGroups(ctx context.Context) ([]control.Group, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+groupCols+` FROM protection_groups ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return collect(rows, "list groups", scanGroup)
}

// UpdateGroup implements store.Store.
func (s *Store) UpdateGroup(ctx context.Context, g control.Group) error {
	g, err := codec.Group(g)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("update group %s", g.ID)
	policy, err := codec.JSON(what, g.Policy)
	if err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `UPDATE protection_groups SET name = ?, policy = ?, updated_at = ? WHERE id = ?`,
		g.Name, string(policy), micro(g.UpdatedAt), g.ID)
	if err != nil {
		return exists(what, err)
	}
	return one(what, res)
}

// found turns sql.ErrNoRows into store.ErrNotFound.
func found(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// one checks that an UPDATE by ID found its row.
func one(what string, res sql.Result) error {
	n, err := affected(res)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return nil
}

// collect scans every row; it always returns a non-nil slice on success,
// so that an empty list encodes as [] and not null.
func collect[T any](rows *sql.Rows, what string, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		x, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
