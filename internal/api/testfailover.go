package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// A test failover (docs/control-plane.md) is declarative, as protection
// is: the user call moves the machine's test-failover flag
// (control.TestTransition, refused with the allowed events), records what
// is wanted on the machine and publishes the desired state; the master
// target exports the point and starts the replica machine (or removes
// both) and reports through ReportRecovery; a job follows the reports.

// Job kinds submitted here; their planners are internal/server's.
const (
	JobTestFailover = "test-failover"
	JobTestCleanup  = "test-cleanup"
)

// TestJobParams are the parameters of both test failover jobs.
type TestJobParams struct {
	Machine string `json:"machine"` // the machine's ID
	Test    string `json:"test"`    // the test failover's ID
}

type testFailoverRequest struct {
	// Point: latest (default), latest-app, a point id or an RFC 3339 time.
	Point string `json:"point,omitempty"`
	// Machine is the replica machine; every field is optional.
	Machine control.ReplicaSpec `json:"machine,omitzero"`
}

type testCleanupRequest struct{}

// testResponse is the machine as the call left it and the job that
// follows the master target.
type testResponse struct {
	Machine control.Machine `json:"machine"`
	Job     control.Job     `json:"job"`
}

// DesiredTest is a test failover a master target should run, or with
// Remove, clean up (the machine's flag is cleaning-up).
type DesiredTest struct {
	ID      string              `json:"id"`
	Point   string              `json:"point"`
	Replica control.ReplicaSpec `json:"replica"` // Name always set
	Remove  bool                `json:"remove,omitempty"`
}

// RecoveryReport is a master target's report of what it did of a
// machine's test failover (POST /v1/target/recovery).
//
// A failover's report carries FailoverID and Failover instead of TestID
// and Test (failover.go).
type RecoveryReport struct {
	Machine    string                  `json:"machine"`           // the machine ID
	TestID     string                  `json:"test_id,omitempty"` // DesiredTest.ID
	Test       control.TestReport      `json:"test,omitzero"`
	FailoverID string                  `json:"failover_id,omitempty"` // DesiredFailover.ID
	Failover   *control.FailoverReport `json:"failover,omitempty"`
	// A reverse direction's report carries ReverseID and Reverse
	// (reverse.go).
	ReverseID string                 `json:"reverse_id,omitempty"`
	Reverse   *control.ReverseReport `json:"reverse,omitempty"`
}

// CheckPointSelector refuses a point selector that is not latest,
// latest-app, a point id or an RFC 3339 time (the master target chooses
// the point; this only catches typing mistakes early).
func CheckPointSelector(sel string) error {
	switch sel {
	case "", "latest", "latest-app":
		return nil
	}
	if _, err := strconv.ParseUint(sel, 10, 64); err == nil {
		return nil
	}
	if _, err := time.Parse(time.RFC3339Nano, sel); err == nil {
		return nil
	}
	return fmt.Errorf("point %q: want latest, latest-app, a point id or a time (RFC 3339, e.g. 2026-11-27T10:00:00Z)", sel)
}

func (s *Server) testFailover(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req testFailoverRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	var job control.Job
	m, err := s.startTest(ctx, name, req)
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, JobTestFailover, "machine/"+m.Name, TestJobParams{Machine: m.ID, Test: m.Test.ID}, principalOf(ctx).actor())
	}
	detail := "point " + req.Point
	if err == nil {
		detail += ", replica machine " + m.Test.Replica.Name + ", job " + job.ID
	}
	s.audit(ctx, "machine.test-failover", "machine/"+name, err, detail)
	if err != nil {
		return nil, err
	}
	return testResponse{Machine: m, Job: job}, nil
}

// startTest sets the test-failover flag of machine name and records the
// test failover wanted.
func (s *Server) startTest(ctx context.Context, name string, req testFailoverRequest) (control.Machine, error) {
	if s.o.Jobs == nil {
		return control.Machine{}, errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	if err := CheckPointSelector(req.Point); err != nil {
		return control.Machine{}, errorf(http.StatusBadRequest, "%v", err)
	}
	if err := req.Machine.Validate(); err != nil {
		return control.Machine{}, errorf(http.StatusBadRequest, "%v", err)
	}
	if req.Point == "" {
		req.Point = "latest"
	}
	return s.moveTest(ctx, name, control.EventTestFailover, func(m *control.Machine) {
		spec := req.Machine
		spec.Name = spec.ReplicaName(m.Name)
		m.Test = &control.TestFailover{ID: newID(), Point: req.Point, Replica: spec, RequestedAt: s.now()}
	})
}

func (s *Server) testCleanup(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx := r.Context()
	name := r.PathValue("name")
	var req testCleanupRequest
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	var job control.Job
	var m control.Machine
	err := error(errorf(http.StatusNotImplemented, "this server runs no jobs"))
	if s.o.Jobs != nil {
		m, err = s.moveTest(ctx, name, control.EventTestCleanup, func(m *control.Machine) {
			if m.Test == nil { // a flag without its record: clean up whatever the target has
				m.Test = &control.TestFailover{ID: newID(), RequestedAt: s.now()}
			}
		})
	}
	if err == nil {
		job, err = s.o.Jobs.Submit(ctx, JobTestCleanup, "machine/"+m.Name, TestJobParams{Machine: m.ID, Test: m.Test.ID}, principalOf(ctx).actor())
	}
	s.audit(ctx, "machine.test-cleanup", "machine/"+name, err, "job "+job.ID)
	if err != nil {
		return nil, err
	}
	return testResponse{Machine: m, Job: job}, nil
}

// moveTest applies event ev to the test-failover flag of machine name,
// lets change record what goes with it, stores the machine and publishes
// the desired state.
func (s *Server) moveTest(ctx context.Context, name string, ev control.Event, change func(*control.Machine)) (control.Machine, error) {
	return s.changeMachine(ctx, name, func(m *control.Machine) error {
		next, err := control.TestTransition(m.State, m.TestFailover, ev)
		if err != nil {
			return errorf(http.StatusConflict, "machine %s: %v", name, err)
		}
		if m.Target == "" {
			return errorf(http.StatusConflict, "machine %s has no master target", name)
		}
		m.TestFailover = next
		change(m)
		return nil
	})
}

// desiredTest is what a master target should do of m's test failover;
// nil: nothing.
func desiredTest(m control.Machine) *DesiredTest {
	if m.TestFailover == control.TestNone || m.Test == nil {
		return nil
	}
	return &DesiredTest{ID: m.Test.ID, Point: m.Test.Point, Replica: m.Test.Replica, Remove: m.TestFailover == control.TestCleaningUp}
}

func (s *Server) targetRecovery(w http.ResponseWriter, r *http.Request) (any, error) {
	var req RecoveryReport
	if err := decode(w, r, &req); err != nil {
		return nil, err
	}
	return nil, s.reportRecovery(r.Context(), req)
}

// reportRecovery records the calling master target's report of a test
// failover. A report that the test failover is removed ends a cleanup:
// the flag goes back to none. A report of another test failover than the
// machine's current one is refused (409): the target drops it.
func (s *Server) reportRecovery(ctx context.Context, req RecoveryReport) error {
	if req.Failover != nil {
		return s.reportFailover(ctx, req)
	}
	if req.Reverse != nil {
		return s.reportReverse(ctx, req)
	}
	target := principalOf(ctx).comp
	if err := req.Test.Validate(); err != nil {
		return errorf(http.StatusBadRequest, "%v", err)
	}
	for attempt := 0; ; attempt++ {
		m, err := s.o.Store.GetMachine(ctx, req.Machine)
		if err != nil {
			return err
		}
		if m.Target != target.ID {
			return errorf(http.StatusConflict, "machine %s is not replicated to this master target (%s)", m.Name, target.ID)
		}
		if m.Test == nil || m.Test.ID != req.TestID {
			return errorf(http.StatusConflict, "machine %s: test failover %q is not its current one", m.Name, req.TestID)
		}
		before := m.TestFailover
		rep := req.Test
		rep.ReportedAt = s.now()
		t := *m.Test
		t.Report = rep
		m.Test = &t
		if rep.Phase == control.TestPhaseRemoved && m.TestFailover == control.TestCleaningUp {
			if m.TestFailover, err = control.TestTransition(m.State, m.TestFailover, control.EventTestCleanupDone); err != nil {
				return err // cannot happen: cleaning-up always allows it
			}
		}
		m.UpdatedAt = s.now()
		m, err = s.o.Store.UpdateMachine(ctx, m)
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if m.TestFailover != before {
			s.audit(ctx, "machine.test-cleanup-done", "machine/"+m.Name, nil, "export "+rep.Export+" removed")
			s.desired.notify()
		}
		return nil
	}
}

// DesiredChanged wakes the desired-state watches: a job that changed
// what components should do calls it.
func (s *Server) DesiredChanged() { s.desired.notify() }
