package trust

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
)

// A role's listener presents the renewed certificate without a restart.
func TestLiveRenewal(t *testing.T) {
	ts := mustServer(t)
	_, dir := ts.join(t, control.RoleTarget, "mt1")
	before := mustLoad(t, dir)
	live := NewLive(before)
	live.Now = func() time.Time { return before.Cert.Leaf.NotAfter.Add(-time.Hour) } // nearly expired
	ln, err := tls.Listen("tcp", "127.0.0.1:0", live.Serve(ServerTLS(before.Roots, before.Cert, []control.Role{control.RoleProcess}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	_, pdir := ts.join(t, control.RoleProcess, "ps1")
	peer := mustLoad(t, pdir)
	served := func() string {
		c, err := tls.Dial("tcp", ln.Addr().String(), ClientTLS(peer.Roots, peer.Cert, before.Identity))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return SerialString(c.ConnectionState().PeerCertificates[0])
	}
	if got := served(); got != SerialString(before.Cert.Leaf) {
		t.Fatalf("serves %s, want %s", got, SerialString(before.Cert.Leaf))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		live.RunRenewal(ctx, dir, ts.URL, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for live.Local() == before {
		if time.Now().After(deadline) {
			t.Fatal("no renewal")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := served(); got == SerialString(before.Cert.Leaf) || got != SerialString(live.Local().Cert.Leaf) {
		t.Errorf("after renewal the listener serves %s; renewed %s, old %s", got, SerialString(live.Local().Cert.Leaf), SerialString(before.Cert.Leaf))
	}
	cancel()
	<-done
}
