package codec

import (
	"errors"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

// Normalising a plan or a run never changes the caller's value, and
// shares nothing with it.
func TestPlanCopies(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 6789, time.Local)
	p := control.Plan{ID: "p", Name: "p", Groups: []control.PlanGroup{{Name: "g", Machines: []string{"m"}}},
		Drill: &control.DrillPolicy{Every: control.Duration(time.Hour), Probes: map[string]control.Probe{"m": {TCP: "m:1"}}}}
	n, err := Plan(p)
	if err != nil {
		t.Fatal(err)
	}
	n.Groups[0].Machines[0], n.Drill.Probes["m"] = "x", control.Probe{}
	if p.Groups[0].Machines[0] != "m" || p.Drill.Probes["m"].TCP != "m:1" {
		t.Fatalf("Plan shares its argument's groups or drill: %+v", p)
	}
	r := control.PlanRun{ID: "r", Plan: "p", Operation: control.PlanFailover, State: control.JobRunning,
		Steps: []control.PlanStepReport{{Name: "s", StartedAt: at}}, Machines: []control.PlanMachineReport{{Machine: "m", ReadyAt: at}},
		Signals: map[string]string{"s": "continue"}, StartedAt: at}
	nr, err := PlanRun(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := Time(at); nr.StartedAt != want || nr.Steps[0].StartedAt != want || nr.Machines[0].ReadyAt != want {
		t.Fatalf("PlanRun: times %v %v %v, want %v", nr.StartedAt, nr.Steps[0].StartedAt, nr.Machines[0].ReadyAt, want)
	}
	nr.Steps[0].Name, nr.Signals["s"] = "x", "abort"
	if r.Steps[0].Name != "s" || r.Steps[0].StartedAt != at || r.Signals["s"] != "continue" {
		t.Fatalf("PlanRun changed or shares its argument: %+v", r)
	}
	if _, err := PlanRun(control.PlanRun{ID: "r", Plan: "p", Operation: control.PlanFailover, State: "paused"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a run in state paused: got %v, want ErrInvalid", err)
	}
}
