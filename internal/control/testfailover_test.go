package control

import (
	"errors"
	"strings"
	"testing"
)

func TestReplicaSpecValidate(t *testing.T) {
	if err := (ReplicaSpec{}).Validate(); err != nil {
		t.Errorf("zero spec: %v", err)
	}
	if err := (ReplicaSpec{Name: "web01-test", CPUs: 2, MemoryMiB: 1024}).Validate(); err != nil {
		t.Errorf("valid spec: %v", err)
	}
	err := ReplicaSpec{Name: "-bad", CPUs: -1, MemoryMiB: 3}.Validate()
	if !errors.Is(err, ErrInvalidTestFailover) {
		t.Fatalf("invalid spec: %v, want ErrInvalidTestFailover", err)
	}
	for _, want := range []string{"machine.name", "machine.cpus", "machine.memory_mib"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if got := (ReplicaSpec{}).ReplicaName("web01"); got != "web01-test" {
		t.Errorf("default name %q", got)
	}
}

func TestTestReportValidate(t *testing.T) {
	for _, p := range []TestPhase{TestPhaseStarting, TestPhaseRunning, TestPhaseFailed, TestPhaseRemoved} {
		if err := (TestReport{Phase: p}).Validate(); err != nil {
			t.Errorf("phase %s: %v", p, err)
		}
	}
	if err := (TestReport{Phase: "bogus"}).Validate(); !errors.Is(err, ErrInvalidTestFailover) || !strings.Contains(err.Error(), "allowed") {
		t.Errorf("bogus phase: %v", err)
	}
	if err := (TestReport{Phase: TestPhaseRunning, Disks: make([]string, 65)}).Validate(); err == nil {
		t.Error("65 disks accepted")
	}
}
