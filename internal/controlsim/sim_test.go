package controlsim

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/server"
	"github.com/standby-dr/standby/internal/store"
)

// A small simulation against a real server: every agent joins, heartbeats
// and reports; the API readers time their calls.
func TestSimulation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	cfg := server.Defaults()
	cfg.Listen, cfg.DataDir = "127.0.0.1:0", filepath.Join(dir, "server")
	s, err := server.New(ctx, server.Options{Config: cfg, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ctx, ln)
	tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, Options{Server: "https://" + ln.Addr().String(), AdminToken: strings.TrimSpace(string(tok)), CAFile: filepath.Join(cfg.DataDir, "ca.crt"),
		Dir: filepath.Join(dir, "agents"), Agents: 20, Interval: 200 * time.Millisecond, Duration: 2 * time.Second, Readers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.AgentErrors != 0 || res.Heartbeats < 20*5 || res.Reports < 20*5 || res.APICalls < 10 || res.APIP99ms <= 0 {
		t.Errorf("simulation: %+v", res)
	}
	ms, err := s.Store().ListMachines(ctx, store.MachineFilter{})
	if err != nil || len(ms) != 20 {
		t.Fatalf("%d machines in the store (%v), want 20", len(ms), err)
	}
}
