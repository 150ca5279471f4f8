// Package servertest runs a real configuration server on loopback for
// the roles' tests of their managed mode, and makes the segments those
// tests feed. Only tests import it.
package servertest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/api/client"
	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/server"
	"github.com/standby-dr/standby/internal/trust"
)

// Server is a configuration server on loopback and its first admin's API
// client. It stops when the test ends.
type Server struct {
	tb    testing.TB
	URL   string
	Admin *client.Client
}

// Start starts a server with a SQLite store in a temporary directory.
func Start(tb testing.TB) *Server {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := tb.TempDir()
	cfg := server.Defaults()
	cfg.Listen, cfg.DataDir, cfg.LogLevel = "127.0.0.1:0", dir, "error"
	s, err := server.New(ctx, server.Options{Config: cfg, Version: "test", AssessEvery: time.Hour, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		s.Close()
	})
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	cs := &Server{tb: tb, URL: "https://" + ln.Addr().String()}
	cs.Admin, err = client.New(client.Options{Server: cs.URL, Token: strings.TrimSpace(string(tok)), CAFile: filepath.Join(dir, "ca.crt")})
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}

// Call makes one API call as the admin; an error fails the test.
func (cs *Server) Call(method, path string, body, out any) {
	cs.tb.Helper()
	if err := cs.Admin.Do(context.Background(), method, path, body, out); err != nil {
		cs.tb.Fatalf("%s %s: %v", method, path, err)
	}
}

// Join joins a component of role into a new directory, which it returns;
// listening roles get 127.0.0.1 in their certificates and register addr.
func (cs *Server) Join(role control.Role, name, addr string) (string, trust.Identity) {
	cs.tb.Helper()
	var tok struct {
		Token string `json:"token"`
	}
	cs.Call("POST", "/v1/tokens", map[string]string{"role": string(role), "ttl": "10m"}, &tok)
	dir := filepath.Join(cs.tb.TempDir(), "id")
	id, err := trust.Join(context.Background(), trust.JoinOptions{ServerURL: cs.URL, Token: tok.Token, Role: role, Name: name, Address: addr, Dir: dir, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		cs.tb.Fatalf("join %s %s: %v", role, name, err)
	}
	return dir, id
}

// Component is the server's client for the component joined into dir.
func (cs *Server) Component(dir string) *client.Component {
	cs.tb.Helper()
	c, err := client.NewComponent(cs.URL, dir)
	if err != nil {
		cs.tb.Fatal(err)
	}
	return c
}

// WaitFor polls ok until it holds or within passes.
func WaitFor(tb testing.TB, what string, within time.Duration, ok func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Machine is the machine ID of the segments SegmentWithBookmark makes.
var Machine = [16]byte{0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// SegmentWithBookmark is one 4 KiB write and an app-consistent bookmark
// labelled label, after prev.
func SegmentWithBookmark(tb testing.TB, prev journal.Pos, label string) ([]byte, journal.Pos) {
	tb.Helper()
	var buf bytes.Buffer
	now := time.Now().UnixNano()
	w, err := journal.NewWriter(&buf, journal.Header{MachineID: Machine, Epoch: 1, FirstSeq: prev.Seq + 1, PrevChain: prev.Chain, Created: now})
	if err != nil {
		tb.Fatal(err)
	}
	recs := []journal.Record{
		{Kind: journal.KindWrite, Offset: 4096, Length: 4096, Time: now, Data: bytes.Repeat([]byte{byte(prev.Seq + 1)}, 4096)},
		{Kind: journal.KindBookmark, Flags: journal.FlagAppConsistent, Time: now, Data: []byte(label)},
	}
	for i := range recs {
		if err := w.Append(&recs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	tr, err := w.Seal(now)
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes(), tr.Pos()
}
