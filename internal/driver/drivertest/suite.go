// Package drivertest is the conformance suite every machine driver runs
// (the restic backend-suite habit): one set of behaviours, every
// implementation held to it. Only tests import it.
package drivertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/driver"
)

// Harness is what the suite needs from a driver's test.
type Harness struct {
	Driver driver.Driver
	// Machine returns a valid machine called name that keeps running
	// until it is stopped.
	Machine func(t *testing.T, name string) driver.Machine
	// Timeout bounds each wait for a state (booting under TCG is slow).
	Timeout time.Duration
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 30 * time.Second
	}
	t.Run("InvalidMachine", func(t *testing.T) { invalidMachine(t, h) })
	t.Run("UnknownHandle", func(t *testing.T) { unknownHandle(t, h) })
	t.Run("Lifecycle", func(t *testing.T) { lifecycle(t, h) })
}

func invalidMachine(t *testing.T, h Harness) {
	ctx := context.Background()
	m := h.Machine(t, "suite-invalid")
	for name, bad := range map[string]driver.Machine{
		"bad name": func() driver.Machine { b := m; b.Name = "no spaces"; return b }(),
		"no disks": func() driver.Machine { b := m; b.Disks = nil; return b }(),
		"bad uri": func() driver.Machine {
			b := m
			b.Disks = []driver.Disk{{Name: "d0", URI: "http://example/x"}}
			return b
		}(),
	} {
		if _, err := h.Driver.Start(ctx, bad); !errors.Is(err, driver.ErrInvalid) {
			t.Errorf("%s: Start error = %v, want one wrapping ErrInvalid", name, err)
		}
	}
}

func unknownHandle(t *testing.T, h Harness) {
	st, err := h.Driver.Status(context.Background(), "suite-never-started")
	// A driver that cannot tell "never heard of" from "stopped" (exec)
	// may say stopped; nothing may say running.
	if err == nil && st.State != driver.Stopped {
		t.Fatalf("Status of a never started machine = %+v, want ErrNotFound or stopped", st)
	}
	if err != nil && !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Status of a never started machine: %v, want ErrNotFound", err)
	}
}

func lifecycle(t *testing.T, h Harness) {
	ctx := context.Background()
	m := h.Machine(t, "suite-life")
	id, err := h.Driver.Start(ctx, m)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = h.Driver.Stop(context.Background(), id, true) })
	WaitState(t, h.Driver, id, driver.Running, h.Timeout)
	if _, err := h.Driver.Start(ctx, m); !errors.Is(err, driver.ErrAlreadyRunning) {
		t.Errorf("second Start error = %v, want one wrapping ErrAlreadyRunning", err)
	}
	if err := h.Driver.Stop(ctx, id, false); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	WaitState(t, h.Driver, id, driver.Stopped, h.Timeout)
	if err := h.Driver.Stop(ctx, id, false); err != nil {
		t.Errorf("Stop of a stopped machine: %v, want nil", err)
	}
	// It starts again, and a forced stop stops it.
	id2, err := h.Driver.Start(ctx, m)
	if err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	WaitState(t, h.Driver, id2, driver.Running, h.Timeout)
	if err := h.Driver.Stop(ctx, id2, true); err != nil {
		t.Fatalf("forced Stop: %v", err)
	}
	WaitState(t, h.Driver, id2, driver.Stopped, h.Timeout)
}

// WaitState polls Status until the machine is in want, and fails the test
// after timeout with the last status seen.
func WaitState(tb testing.TB, d driver.Driver, id driver.Handle, want driver.State, timeout time.Duration) driver.Status {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.Status(context.Background(), id)
		if err == nil && st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			tb.Fatalf("machine %s: not %s after %v: last status %+v, error %v", id, want, timeout, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
