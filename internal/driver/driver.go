package driver

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Driver creates and controls replica machines. Implementations are safe
// for concurrent use on different machines; calls on one machine are
// serialised by the caller (the master target runs one job per machine).
type Driver interface {
	// Start creates and starts m and returns its handle. The machine is
	// running (or booting) when Start returns. Starting a machine whose
	// handle is already running is an error wrapping ErrAlreadyRunning.
	Start(ctx context.Context, m Machine) (Handle, error)
	// Stop stops the machine. Without force it asks the guest to shut
	// down and waits the driver's stop timeout before it pulls the plug;
	// with force it pulls the plug at once. Stopping a stopped machine is
	// not an error.
	Stop(ctx context.Context, h Handle, force bool) error
	// Status reports the machine's state. A handle the driver has never
	// heard of is an error wrapping ErrNotFound, or Stopped from a driver
	// that cannot tell the two apart (exec); never Running.
	Status(ctx context.Context, h Handle) (Status, error)
}

// Handle identifies a started machine to its driver. It is plain text so
// that the control plane can store it and a restarted master target can
// use it again.
type Handle string

// State is a machine's run state as the driver sees it.
type State string

// States.
const (
	Running State = "running"
	Stopped State = "stopped"
	// Unknown means the driver cannot tell (a status command that failed,
	// a process alive whose monitor does not answer); the caller retries
	// or asks an operator, it never assumes either.
	Unknown State = "unknown"
)

// Status is a machine's state with the driver's details.
type Status struct {
	State State `json:"state"`
	// Detail is the driver's own words: the hypervisor's run state, the
	// status command's output, why the state is unknown.
	Detail string `json:"detail,omitempty"`
	// PID is the machine's process, when the driver has one.
	PID int `json:"pid,omitempty"`
}

// Sentinel errors.
var (
	// ErrNotFound: the driver knows no machine by that handle.
	ErrNotFound = errors.New("machine not found")
	// ErrAlreadyRunning: Start of a machine that is running.
	ErrAlreadyRunning = errors.New("machine already running")
	// ErrInvalid marks a machine or settings that fail validation; the
	// error says which field and what is allowed. It is permanent.
	ErrInvalid = errors.New("invalid")
)

// StopAndWait stops machine h (asking the guest first) and polls its
// status every second, up to tries times, until the driver says it
// stopped or no longer knows it. state is what the driver said last:
// "stopped", or the state it is still in.
func StopAndWait(ctx context.Context, d Driver, h Handle, tries int) (state string, err error) {
	if err := d.Stop(ctx, h, false); err != nil {
		return "stop failed", fmt.Errorf("stop machine %s: %w", h, err)
	}
	for i := 0; ; i++ {
		st, err := d.Status(ctx, h)
		if err == nil && st.State == Stopped {
			return "stopped", nil
		}
		if errors.Is(err, ErrNotFound) {
			return "stopped (the driver no longer knows it)", nil
		}
		if i >= tries {
			if err != nil {
				return string(Unknown), fmt.Errorf("machine %s after stop: %w", h, err)
			}
			return string(st.State), fmt.Errorf("machine %s is still %s after stop (%s)", h, st.State, st.Detail)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
