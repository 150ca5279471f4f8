// Package orchestrate is Standby's one job runner: every long operation of
// the control plane (enable protection, failover, commit, re-protect, a
// recovery plan run) is a control.Job that this package drives. It is the
// generic driver; what a job does is its kind's Planner, registered
// explicitly by cmd/ (no init()).
//
//	Submit ──▶ queued ──claim──▶ running ──▶ succeeded | failed | cancelled
//	                ▲                │
//	                └──── Resume ◀───┘ (after a restart: the runner died)
//
// Nouns:
//
//	job        control.Job: kind, object, params, steps, progress, log
//	planner    says a kind's steps for a job (Planner.Steps)
//	step       StepSpec: a name, a Run function, a timeout, retries, and
//	           whether running it twice is harmless (Idempotent)
//	step run   StepRun: what a running step reports (progress, messages,
//	           log lines, the job's result)
//	job store  JobStore: the jobs part of store.Store
//
// Persistence: every change of a job's or a step's state is written to the
// JobStore before the runner does the next thing (the step starts only
// after "running" is stored; the next step only after "succeeded" is). So
// after a crash the store says exactly which steps finished and which one
// may have been half done, and Resume decides: a half-done Idempotent step
// runs again, any other fails the job with an error that says what to
// check. Finished steps never run again. Progress and log lines written
// while a step runs are flushed every FlushInterval.
//
// One job per object at a time: a queued job waits while another job on
// the same Object runs, so two failovers of a machine never overlap, and
// jobs on one object run in the order they were submitted.
//
// A cancelled context (Run's) means no further mutation: the runner stops
// where it is, writes nothing more, and leaves the jobs for Resume — the
// same state a kill -9 leaves. Cancel cancels one job and records it.
package orchestrate
