package manage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/standby-dr/standby/internal/api"
	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/trust"
)

// Joined is a managed role's joined identity while it runs: the
// certificate it presents (renewed while it runs), its client to the
// configuration server, and the revocations it checks peers against.
type Joined struct {
	Local   *trust.Local
	Live    *trust.Live
	Comp    *client.Component
	Revoked trust.RevocationSet
}

// Load fills o's defaults and loads the identity joined into o.Identity,
// which must be of role (named noun in errors, e.g. "a master target").
func Load(o *Control, role control.Role, noun string) (*Joined, error) {
	if o.Server == "" || o.Identity == "" {
		return nil, errors.New("control: server and identity are required")
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Revocations <= 0 {
		o.Revocations = time.Minute
	}
	l, err := trust.Load(o.Identity)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if l.Identity.Role != role {
		return nil, fmt.Errorf("control: %s holds the identity of a %s, not %s; join with `standby %s join`", o.Identity, l.Identity.Role, noun, role)
	}
	comp, err := client.NewComponent(o.Server, o.Identity)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	return &Joined{Local: l, Live: trust.NewLive(l), Comp: comp}, nil
}

// RevocationLoop keeps j.Revoked fresh, fetching every `every`; until
// the first fetch succeeds nothing is revoked: the role serves while the
// configuration server is away.
func (j *Joined) RevocationLoop(ctx context.Context, log *slog.Logger, server string, every time.Duration) {
	out := Outage{Log: log, What: "fetch revocations from the configuration server"}
	for {
		rv, err := trust.FetchRevocations(ctx, j.Local, server)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			j.Revoked.Set(rv)
		}
		out.Note(err)
		if !Sleep(ctx, every) {
			return
		}
	}
}

// Outage logs the first failure of a repeated call and its recovery,
// once each (an outage of the configuration server must not flood the
// log).
type Outage struct {
	Log  *slog.Logger
	What string
	mu   sync.Mutex
	down bool
}

// Note records the result of one call.
func (o *Outage) Note(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case err != nil && !o.down:
		o.down = true
		o.Log.Warn(o.What+" failed; retrying, serving as before meanwhile", "err", err)
	case err == nil && o.down:
		o.down = false
		o.Log.Info(o.What + " works again")
	}
}

// Sleep waits d give or take a tenth (so that many components do not call
// in step), or until ctx ends; it says whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	d += time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// HeartbeatLoop says every o.Heartbeat that the role is alive, with its
// address, version and what capacity reports, until ctx ends; a failing
// heartbeat is logged once when it starts failing and once when it works.
func (j *Joined) HeartbeatLoop(ctx context.Context, log *slog.Logger, o *Control, capacity func() control.Capacity) {
	out := Outage{Log: log, What: "heartbeat to the configuration server"}
	for {
		hctx, cancel := context.WithTimeout(ctx, o.Heartbeat+5*time.Second)
		err := j.Comp.Heartbeat(hctx, api.HeartbeatRequest{Version: o.Version, Address: o.Address, Capacity: capacity()})
		cancel()
		if ctx.Err() != nil {
			return
		}
		out.Note(err)
		if !Sleep(ctx, o.Heartbeat) {
			return
		}
	}
}
