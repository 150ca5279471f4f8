package componentpb

import (
	"net/http"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/retention"
)

// Every field survives the trip through its message and the wire, and
// zero values stay zero (no 1970 timestamps).
func TestRoundTrips(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	rep := control.ReplicationReport{State: "protected", RPOSeconds: 0.25, BacklogBytes: 1, ResyncBytes: 2, ResyncLeft: 3, LastPointAt: at, ReportedAt: at.Add(time.Second), LastError: "x"}
	m := control.Machine{ID: "m1", Name: "web01", Agent: "a1", Disks: []control.Disk{{Name: "vda", Size: 1 << 30}, {Name: "vdb", Size: 5}},
		Group: "g1", Process: "p1", Target: "t1", Epoch: 7, State: control.StateProtected, Health: control.HealthWarning,
		HealthReasons: []string{"rpo"}, Replication: rep, Version: 9, UpdatedAt: at}
	var back Machine
	wire(t, FromMachine(m), &back)
	if got := ToMachine(&back); !reflect.DeepEqual(got, m) {
		t.Errorf("machine:\n got %+v\nwant %+v", got, m)
	}
	if got := ToMachine(FromMachine(control.Machine{})); !reflect.DeepEqual(got, control.Machine{Disks: []control.Disk{}}) {
		t.Errorf("zero machine came back as %+v", got)
	}

	pol := control.Policy{PointInterval: control.Duration(5 * time.Second), AppInterval: control.Duration(time.Hour),
		Retention:    retention.Policy{KeepAll: time.Hour, Hourly: 24, Daily: 7, Max: 7 * 24 * time.Hour, KeepAppConsistent: 3},
		RPOThreshold: control.Duration(time.Minute), InitialStart: at, Compression: "best", BandwidthLimit: 1 << 20}
	var pb Policy
	wire(t, FromPolicy(pol), &pb)
	if got := ToPolicy(&pb); got != pol {
		t.Errorf("policy:\n got %+v\nwant %+v", got, pol)
	}
	if got := ToPolicy(nil); got != (control.Policy{}) {
		t.Errorf("nil policy: %+v", got)
	}

	pts := []control.RecoveryPoint{{Machine: "m1", ID: 1, Seq: 10, Time: at, AppConsistent: true, Label: "app", Tags: []string{"a", "b"}}, {Machine: "m1", ID: 2, Seq: 20, Time: at.Add(time.Minute)}}
	var req ReportPointsRequest
	wire(t, &ReportPointsRequest{Machine: "m1", Points: FromPoints(pts)}, &req)
	if got := ToPoints(req.GetMachine(), req.GetPoints()); !reflect.DeepEqual(got, pts) {
		t.Errorf("points:\n got %+v\nwant %+v", got, pts)
	}
	c := control.Capacity{Machines: 3, MaxMachines: 10, FreeBytes: 1 << 40}
	if got := ToCapacity(FromCapacity(c)); got != c {
		t.Errorf("capacity %+v came back %+v", c, got)
	}
}

// wire marshals in and unmarshals it into out.
func wire(t *testing.T, in, out proto.Message) {
	t.Helper()
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

// The status table maps both ways; statuses it does not name still get
// a code of their class.
func TestStatusCodes(t *testing.T) {
	for _, sc := range statusCodes {
		if got := HTTPStatus(Code(sc.status)); got != sc.status {
			t.Errorf("HTTP %d -> %s -> HTTP %d", sc.status, Code(sc.status), got)
		}
	}
	for status, want := range map[int]codes.Code{http.StatusTeapot: codes.InvalidArgument, http.StatusBadGateway: codes.Internal} {
		if got := Code(status); got != want {
			t.Errorf("HTTP %d: %s, want %s", status, got, want)
		}
	}
	if HTTPStatus(codes.AlreadyExists) != http.StatusConflict || HTTPStatus(codes.DataLoss) != http.StatusInternalServerError {
		t.Error("AlreadyExists is not 409 or an unnamed code is not 500")
	}
}

// A test failover's replica machine and report survive the wire.
func TestTestFailoverRoundTrips(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 5, time.UTC)
	spec := control.ReplicaSpec{Name: "web01-test", CPUs: 2, MemoryMiB: 1024}
	var ps ReplicaSpec
	wire(t, FromReplicaSpec(spec), &ps)
	if got := ToReplicaSpec(&ps); got != spec {
		t.Errorf("replica spec %+v came back %+v", spec, got)
	}
	rep := control.TestReport{Phase: control.TestPhaseRunning, PointID: 42, PointTime: at, Export: "test-web01",
		Disks: []string{"nbd+unix:///test-web01/vda?socket=%2Fx"}, Machine: "h", MachineState: "running", Error: "e"}
	var pr TestReport
	wire(t, FromTestReport(rep), &pr)
	if got := ToTestReport(&pr); !reflect.DeepEqual(got, rep) {
		t.Errorf("test report:\n got %+v\nwant %+v", got, rep)
	}
	if got := ToTestReport(nil); !reflect.DeepEqual(got, control.TestReport{}) {
		t.Errorf("nil report: %+v", got)
	}
}
