package trust

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Renewer keeps a role's certificate fresh: it checks every Every and
// renews (Renew) when NeedsRenewal says so, retrying sooner after a
// failure. A role runs one beside its work and reloads its TLS
// configuration in OnRenew.
type Renewer struct {
	Dir       string
	ServerURL string
	// Every is how often it checks; 0: an hour. After a failure it tries
	// again after Every/4.
	Every time.Duration
	// OnRenew, when set, is called with the new identity files loaded.
	OnRenew func(*Local)
	// Log; nil: slog.Default().
	Log *slog.Logger
	// Now is the clock NeedsRenewal is asked with; nil: time.Now.
	Now func() time.Time

	once    sync.Once
	stop    chan struct{}
	done    chan struct{}
	failing bool
}

func (r *Renewer) init() {
	r.once.Do(func() {
		r.stop = make(chan struct{})
		r.done = make(chan struct{})
	})
}

// Run checks and renews until ctx is cancelled or Close is called. It
// returns nil then; a failed renewal is logged and retried, never
// returned, because the current certificate is still valid meanwhile.
func (r *Renewer) Run(ctx context.Context) error {
	r.init()
	defer close(r.done)
	every := r.Every
	if every <= 0 {
		every = time.Hour
	}
	for {
		wait := every
		if err := r.check(ctx); err != nil {
			wait = every / 4
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-r.stop:
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// check renews when due. It logs a failure once, until it recovers.
func (r *Renewer) check(ctx context.Context) error {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
	l, err := Load(r.Dir)
	if err == nil && !NeedsRenewal(l.Cert.Leaf, now) {
		return nil
	}
	if err == nil {
		_, err = Renew(ctx, r.Dir, r.ServerURL)
	}
	if err == nil {
		l, err = Load(r.Dir)
	}
	if err != nil {
		if !r.failing && ctx.Err() == nil {
			level := slog.LevelWarn
			if errors.Is(err, ErrRevoked) || errors.Is(err, ErrNotJoined) {
				level = slog.LevelError
			}
			log.Log(ctx, level, "certificate renewal failed; will retry", "dir", r.Dir, "err", err)
		}
		r.failing = true
		return err
	}
	if r.failing {
		log.Info("certificate renewal recovered", "dir", r.Dir)
	}
	r.failing = false
	log.Info("certificate renewed", "server", l.Identity.String(), "serial", SerialString(l.Cert.Leaf), "expires", l.Cert.Leaf.NotAfter)
	if r.OnRenew != nil {
		r.OnRenew(l)
	}
	return nil
}

// Close stops Run and waits for it to return, or for ctx.
func (r *Renewer) Close(ctx context.Context) error {
	r.init()
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
