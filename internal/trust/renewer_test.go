package trust

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

func TestRenewer(t *testing.T) {
	ts := mustServer(t)
	_, dir := ts.join(t, control.RoleProcess, "ps1")
	before := mustLoad(t, dir)
	renewed := make(chan *Local, 1)
	r := &Renewer{
		Dir: dir, ServerURL: ts.URL, Every: time.Hour,
		Now:     func() time.Time { return before.Cert.Leaf.NotAfter.Add(-time.Hour) }, // nearly expired
		OnRenew: func(l *Local) { renewed <- l },
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background()) }()
	select {
	case l := <-renewed:
		if SerialString(l.Cert.Leaf) == SerialString(before.Cert.Leaf) || l.Identity != before.Identity {
			t.Errorf("renewed to %v serial %s; before %v serial %s", l.Identity, SerialString(l.Cert.Leaf), before.Identity, SerialString(before.Cert.Leaf))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("Run: %v", err)
	}
}
