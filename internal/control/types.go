package control

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes as text ("10s",
// "1h30m") in JSON.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads text such as "10s", or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: want text such as \"10s\" or \"1h30m\", got %s", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want text such as \"10s\" or \"1h30m\"", s)
	}
	*d = Duration(v)
	return nil
}

// MachineState is where a machine is in its protection life cycle. The
// transitions allowed between states are the table in state.go.
type MachineState string

// Health is a protected machine's health, derived from its replication
// (health.go).
type Health string

// Healths.
const (
	HealthNormal   Health = "normal"
	HealthWarning  Health = "warning"
	HealthCritical Health = "critical"
)

// JobState is where a job is.
type JobState string

// Job states. A job is created queued, runs, and ends succeeded, failed or
// cancelled; a running job whose runner died is resumed (or failed) when
// the server starts again.
const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Done says whether a job in state s has ended.
func (s JobState) Done() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

// StepState is where one step of a job is.
type StepState string

// Step states.
const (
	StepPending   StepState = "pending"
	StepRunning   StepState = "running"
	StepSucceeded StepState = "succeeded"
	StepFailed    StepState = "failed"
	StepSkipped   StepState = "skipped"
)

// Job is one long operation (enable protection, failover, a plan run):
// steps, progress, logs and a result, persisted so that it survives a
// restart of the server.
type Job struct {
	ID      string          `json:"id"`
	Kind    string          `json:"kind"`             // e.g. "protect"
	Object  string          `json:"object,omitempty"` // e.g. "machine/web01"
	Params  json.RawMessage `json:"params,omitempty"` // the planner's input
	State   JobState        `json:"state"`
	Steps   []Step          `json:"steps"`
	Current int             `json:"current"` // index of the step running or next
	// Progress is 0..1 over all steps.
	Progress  float64   `json:"progress"`
	Result    string    `json:"result,omitempty"`
	Error     string    `json:"error,omitempty"`
	Log       []LogLine `json:"log,omitempty"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	EndedAt   time.Time `json:"ended_at,omitempty"`
	// Attempts counts how often the job was started (resumptions included).
	Attempts int `json:"attempts"`
	// Version increases with every update (optimistic concurrency).
	Version int64 `json:"version"`
}

// Step is one step of a job.
type Step struct {
	Name      string    `json:"name"`
	State     StepState `json:"state"`
	Progress  float64   `json:"progress"` // 0..1 within the step
	Message   string    `json:"message,omitempty"`
	StartedAt time.Time `json:"started_at,omitempty"`
	EndedAt   time.Time `json:"ended_at,omitempty"`
	Attempts  int       `json:"attempts"`
}

// LogLine is one line of a job's log.
type LogLine struct {
	At      time.Time `json:"at"`
	Level   string    `json:"level"` // info, warn, error
	Message string    `json:"message"`
}
