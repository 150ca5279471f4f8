package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

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
	_, err = s.pool.Exec(ctx, `INSERT INTO sites (id, name, created_at) VALUES ($1, $2, $3)`,
		site.ID, site.Name, ts(site.CreatedAt))
	if err != nil {
		return exists(fmt.Sprintf("create site %q", site.Name), err)
	}
	return nil
}

// ListSites implements store.Store.
func (s *Store) ListSites(ctx context.Context) ([]control.Site, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, created_at FROM sites ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	return collect(rows, "list sites", func(r pgx.Row) (control.Site, error) {
		var x control.Site
		err := r.Scan(&x.ID, &x.Name, tm(&x.CreatedAt))
		return x, err
	})
}

const serverCols = `id, role, name, site, address, version, capacity, cert_serial, cert_expires, revoked, joined_at, heartbeat_at`

func scanServer(r pgx.Row) (control.Server, error) {
	var x control.Server
	err := r.Scan(&x.ID, &x.Role, &x.Name, &x.Site, &x.Address, &x.Version, js(&x.Capacity),
		&x.CertSerial, tm(&x.CertExpires), &x.Revoked, tm(&x.JoinedAt), tm(&x.HeartbeatAt))
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
	_, err = s.pool.Exec(ctx, `INSERT INTO servers (`+serverCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		srv.ID, srv.Role, srv.Name, srv.Site, srv.Address, srv.Version, string(capacity),
		srv.CertSerial, ts(srv.CertExpires), srv.Revoked, ts(srv.JoinedAt), ts(srv.HeartbeatAt))
	if err != nil {
		return exists(what, err)
	}
	return nil
}

// GetServer implements store.Store.
func (s *Store) GetServer(ctx context.Context, id string) (control.Server, error) {
	x, err := scanServer(s.pool.QueryRow(ctx, `SELECT `+serverCols+` FROM servers WHERE id = $1`, id))
	return x, found(fmt.Sprintf("get server %s", id), err)
}

// ListServers implements store.Store.
func (s *Store) ListServers(ctx context.Context, role control.Role) ([]control.Server, error) {
	q, args := `SELECT `+serverCols+` FROM servers`, []any{}
	if role != "" {
		q, args = q+` WHERE role = $1`, append(args, role)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY role, name`, args...)
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
	res, err := s.pool.Exec(ctx, `UPDATE servers SET name = $1, site = $2, address = $3, version = $4, capacity = $5,
		cert_serial = $6, cert_expires = $7, revoked = $8, heartbeat_at = $9 WHERE id = $10`,
		srv.Name, srv.Site, srv.Address, srv.Version, string(capacity),
		srv.CertSerial, ts(srv.CertExpires), srv.Revoked, ts(srv.HeartbeatAt), srv.ID)
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
	res, err := s.pool.Exec(ctx, `UPDATE servers SET heartbeat_at = $1, version = $2, capacity = $3 WHERE id = $4`,
		ts(at), version, string(capacity), id)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return one(what, res)
}

const tokenCols = `id, hash, role, created_by, created_at, expires_at, used_at, used_by`

func scanToken(r pgx.Row) (control.JoinToken, error) {
	var x control.JoinToken
	err := r.Scan(&x.ID, &x.Hash, &x.Role, &x.CreatedBy, tm(&x.CreatedAt), tm(&x.ExpiresAt), tm(&x.UsedAt), &x.UsedBy)
	return x, err
}

// CreateJoinToken implements store.Store.
func (s *Store) CreateJoinToken(ctx context.Context, t control.JoinToken) error {
	t, err := codec.JoinToken(t)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO join_tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		t.ID, t.Hash, t.Role, t.CreatedBy, ts(t.CreatedAt), ts(t.ExpiresAt), ts(t.UsedAt), t.UsedBy)
	if err != nil {
		return exists(fmt.Sprintf("create join token %s", t.ID), err)
	}
	return nil
}

// UseJoinToken implements store.Store with one conditional UPDATE: of
// concurrent calls, PostgreSQL lets the first update the row and the
// others, re-checking the condition after it committed, find it used.
func (s *Store) UseJoinToken(ctx context.Context, hash string, now time.Time, usedBy string) (control.JoinToken, error) {
	const what = "use join token"
	if err := codec.Key(what, hash); err != nil {
		return control.JoinToken{}, err
	}
	if err := codec.Key(what, usedBy); err != nil {
		return control.JoinToken{}, err
	}
	now = codec.Time(now)
	t, err := scanToken(s.pool.QueryRow(ctx, `UPDATE join_tokens SET used_at = $2, used_by = $3
		WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING `+tokenCols, hash, now, usedBy))
	if err == nil {
		return t, nil
	}
	if err := found(what, err); !errors.Is(err, store.ErrNotFound) {
		return control.JoinToken{}, err
	}
	// Not updated: say why.
	t, err = scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM join_tokens WHERE hash = $1`, hash))
	if err != nil {
		return control.JoinToken{}, found(what, err)
	}
	if err := usable(t, now); err != nil {
		return control.JoinToken{}, err
	}
	return control.JoinToken{}, fmt.Errorf("%s %s: %w", what, t.ID, store.ErrConflict)
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
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM join_tokens ORDER BY created_at DESC NULLS LAST, id`)
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	return collect(rows, "list join tokens", scanToken)
}

const userCols = `id, name, role, coalesce(token_hash, ''), created_at, disabled`

func scanUser(r pgx.Row) (control.User, error) {
	var x control.User
	err := r.Scan(&x.ID, &x.Name, &x.Role, &x.TokenHash, tm(&x.CreatedAt), &x.Disabled)
	return x, err
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u control.User) error {
	u, err := codec.User(u)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO users (id, name, role, token_hash, created_at, disabled) VALUES ($1, $2, $3, $4, $5, $6)`,
		u.ID, u.Name, u.Role, nullText(u.TokenHash), ts(u.CreatedAt), u.Disabled)
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
	x, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE token_hash = $1`, hash))
	return x, found(what, err)
}

// ListUsers implements store.Store, by name.
func (s *Store) ListUsers(ctx context.Context) ([]control.User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return collect(rows, "list users", scanUser)
}

const groupCols = `id, name, policy, created_at, updated_at`

func scanGroup(r pgx.Row) (control.Group, error) {
	var x control.Group
	err := r.Scan(&x.ID, &x.Name, js(&x.Policy), tm(&x.CreatedAt), tm(&x.UpdatedAt))
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
	_, err = s.pool.Exec(ctx, `INSERT INTO protection_groups (`+groupCols+`) VALUES ($1, $2, $3, $4, $5)`,
		g.ID, g.Name, string(policy), ts(g.CreatedAt), ts(g.UpdatedAt))
	if err != nil {
		return exists(what, err)
	}
	return nil
}

// GetGroup implements store.Store.
func (s *Store) GetGroup(ctx context.Context, id string) (control.Group, error) {
	x, err := scanGroup(s.pool.QueryRow(ctx, `SELECT `+groupCols+` FROM protection_groups WHERE id = $1`, id))
	return x, found(fmt.Sprintf("get group %s", id), err)
}

// GroupByName implements store.Store.
func (s *Store) GroupByName(ctx context.Context, name string) (control.Group, error) {
	x, err := scanGroup(s.pool.QueryRow(ctx, `SELECT `+groupCols+` FROM protection_groups WHERE name = $1`, name))
	return x, found(fmt.Sprintf("get group %q", name), err)
}

// ListGroups implements store.Store.
func (s *Store) ListGroups(ctx context.Context) ([]control.Group, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+groupCols+` FROM protection_groups ORDER BY name`)
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
	res, err := s.pool.Exec(ctx, `UPDATE protection_groups SET name = $1, policy = $2, updated_at = $3 WHERE id = $4`,
		g.Name, string(policy), ts(g.UpdatedAt), g.ID)
	if err != nil {
		return exists(what, err)
	}
	return one(what, res)
}
