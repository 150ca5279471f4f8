package componentpb

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/retention"
)

// The mappings below go both ways and keep zero values zero: a zero time
// is an absent Timestamp (not 1970), so that what the JSON API leaves out
// the gRPC one leaves out too. The To functions accept nil messages.

// FromTime is t as a Timestamp; nil for the zero time.
func FromTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// ToTime is ts as a time in UTC; the zero time for nil.
func ToTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func fromDuration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func toDuration(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// FromCapacity maps a control.Capacity.
func FromCapacity(c control.Capacity) *Capacity {
	return &Capacity{Machines: int64(c.Machines), MaxMachines: int64(c.MaxMachines), FreeBytes: c.FreeBytes}
}

// ToCapacity maps a Capacity back.
func ToCapacity(c *Capacity) control.Capacity {
	return control.Capacity{Machines: int(c.GetMachines()), MaxMachines: int(c.GetMaxMachines()), FreeBytes: c.GetFreeBytes()}
}

// FromDisks maps a machine's disks.
func FromDisks(ds []control.Disk) []*Disk {
	out := make([]*Disk, len(ds))
	for i, d := range ds {
		out[i] = &Disk{Name: d.Name, Size: d.Size, Path: d.Path}
	}
	return out
}

// ToDisks maps disks back; nil entries are disks with no name and size
// (the server refuses them).
func ToDisks(ds []*Disk) []control.Disk {
	out := make([]control.Disk, len(ds))
	for i, d := range ds {
		out[i] = control.Disk{Name: d.GetName(), Size: d.GetSize(), Path: d.GetPath()}
	}
	return out
}

// FromReplication maps an agent's replication report.
func FromReplication(r control.ReplicationReport) *Replication {
	return &Replication{State: r.State, RpoSeconds: r.RPOSeconds, BacklogBytes: r.BacklogBytes,
		ResyncBytes: r.ResyncBytes, ResyncLeft: r.ResyncLeft, LastPointAt: FromTime(r.LastPointAt),
		ReportedAt: FromTime(r.ReportedAt), LastError: r.LastError, Epoch: r.Epoch}
}

// ToReplication maps a replication report back.
func ToReplication(r *Replication) control.ReplicationReport {
	return control.ReplicationReport{State: r.GetState(), RPOSeconds: r.GetRpoSeconds(), BacklogBytes: r.GetBacklogBytes(),
		ResyncBytes: r.GetResyncBytes(), ResyncLeft: r.GetResyncLeft(), LastPointAt: ToTime(r.GetLastPointAt()),
		ReportedAt: ToTime(r.GetReportedAt()), LastError: r.GetLastError(), Epoch: r.GetEpoch()}
}

// FromMachine maps a machine as the server holds it.
func FromMachine(m control.Machine) *Machine {
	return &Machine{Id: m.ID, Name: m.Name, Agent: m.Agent, Disks: FromDisks(m.Disks), Group: m.Group,
		Process: m.Process, Target: m.Target, Epoch: m.Epoch, State: string(m.State), Health: string(m.Health),
		HealthReasons: m.HealthReasons, Replication: FromReplication(m.Replication), Version: m.Version,
		UpdatedAt: FromTime(m.UpdatedAt)}
}

// ToMachine maps a machine back.
func ToMachine(m *Machine) control.Machine {
	return control.Machine{ID: m.GetId(), Name: m.GetName(), Agent: m.GetAgent(), Disks: ToDisks(m.GetDisks()),
		Group: m.GetGroup(), Process: m.GetProcess(), Target: m.GetTarget(), Epoch: m.GetEpoch(),
		State: control.MachineState(m.GetState()), Health: control.Health(m.GetHealth()),
		HealthReasons: m.GetHealthReasons(), Replication: ToReplication(m.GetReplication()),
		Version: m.GetVersion(), UpdatedAt: ToTime(m.GetUpdatedAt())}
}

// FromPoints maps a machine's recovery points (their Machine field is
// the request's, not each point's).
func FromPoints(ps []control.RecoveryPoint) []*RecoveryPoint {
	out := make([]*RecoveryPoint, len(ps))
	for i, p := range ps {
		out[i] = &RecoveryPoint{Id: p.ID, Seq: p.Seq, Time: FromTime(p.Time), AppConsistent: p.AppConsistent, Label: p.Label, Tags: p.Tags}
	}
	return out
}

// ToPoints maps recovery points back, for machine.
func ToPoints(machine string, ps []*RecoveryPoint) []control.RecoveryPoint {
	out := make([]control.RecoveryPoint, len(ps))
	for i, p := range ps {
		out[i] = control.RecoveryPoint{Machine: machine, ID: p.GetId(), Seq: p.GetSeq(), Time: ToTime(p.GetTime()),
			AppConsistent: p.GetAppConsistent(), Label: p.GetLabel(), Tags: p.GetTags()}
	}
	return out
}

// FromPolicy maps a protection group's policy.
func FromPolicy(p control.Policy) *Policy {
	r := p.Retention
	return &Policy{PointInterval: fromDuration(p.PointInterval.D()), AppInterval: fromDuration(p.AppInterval.D()),
		Retention: &Retention{KeepAll: fromDuration(r.KeepAll), Hourly: int64(r.Hourly), Daily: int64(r.Daily),
			Max: fromDuration(r.Max), KeepAppConsistent: int64(r.KeepAppConsistent)},
		RpoThreshold: fromDuration(p.RPOThreshold.D()), InitialStart: FromTime(p.InitialStart),
		Compression: p.Compression, BandwidthLimit: p.BandwidthLimit}
}

// ToPolicy maps a policy back.
func ToPolicy(p *Policy) control.Policy {
	r := p.GetRetention()
	return control.Policy{PointInterval: control.Duration(toDuration(p.GetPointInterval())),
		AppInterval: control.Duration(toDuration(p.GetAppInterval())),
		Retention: retention.Policy{KeepAll: toDuration(r.GetKeepAll()), Hourly: int(r.GetHourly()), Daily: int(r.GetDaily()),
			Max: toDuration(r.GetMax()), KeepAppConsistent: int(r.GetKeepAppConsistent())},
		RPOThreshold: control.Duration(toDuration(p.GetRpoThreshold())), InitialStart: ToTime(p.GetInitialStart()),
		Compression: p.GetCompression(), BandwidthLimit: p.GetBandwidthLimit()}
}

// FromReplicaSpec maps a test failover's replica machine.
func FromReplicaSpec(r control.ReplicaSpec) *ReplicaSpec {
	return &ReplicaSpec{Name: r.Name, Cpus: int64(r.CPUs), MemoryMib: int64(r.MemoryMiB)}
}

// ToReplicaSpec maps a replica machine back.
func ToReplicaSpec(r *ReplicaSpec) control.ReplicaSpec {
	return control.ReplicaSpec{Name: r.GetName(), CPUs: int(r.GetCpus()), MemoryMiB: int(r.GetMemoryMib())}
}

// FromTestReport maps a master target's test failover report (its
// ReportedAt is the server's to set: not sent).
func FromTestReport(r control.TestReport) *TestReport {
	return &TestReport{Phase: string(r.Phase), PointId: r.PointID, PointTime: FromTime(r.PointTime), Export: r.Export,
		Disks: r.Disks, Machine: r.Machine, MachineState: r.MachineState, Error: r.Error}
}

// ToTestReport maps a report back.
func ToTestReport(r *TestReport) control.TestReport {
	return control.TestReport{Phase: control.TestPhase(r.GetPhase()), PointID: r.GetPointId(), PointTime: ToTime(r.GetPointTime()),
		Export: r.GetExport(), Disks: r.GetDisks(), Machine: r.GetMachine(), MachineState: r.GetMachineState(), Error: r.GetError()}
}

// FromFailoverReport maps a master target's failover report (ReportedAt
// is the server's to set: not sent).
func FromFailoverReport(r control.FailoverReport) *FailoverReport {
	h := r.Hydration
	return &FailoverReport{Phase: string(r.Phase), Fenced: r.Fenced, PointId: r.PointID, PointTime: FromTime(r.PointTime),
		Export: r.Export, Disks: r.Disks, Machine: r.Machine, MachineState: r.MachineState, Released: int64(r.Released), Error: r.Error,
		Hydration: &Hydration{Done: h.Done, Total: h.Total, Images: h.Images, Complete: h.Complete, CompletedAt: FromTime(h.CompletedAt), Error: h.Error}}
}

// ToFailoverReport maps a report back.
func ToFailoverReport(r *FailoverReport) control.FailoverReport {
	h := r.GetHydration()
	return control.FailoverReport{Phase: control.FailoverPhase(r.GetPhase()), Fenced: r.GetFenced(), PointID: r.GetPointId(),
		PointTime: ToTime(r.GetPointTime()), Export: r.GetExport(), Disks: r.GetDisks(), Machine: r.GetMachine(),
		MachineState: r.GetMachineState(), Released: int(r.GetReleased()), Error: r.GetError(),
		Hydration: control.Hydration{Done: h.GetDone(), Total: h.GetTotal(), Images: h.GetImages(), Complete: h.GetComplete(),
			CompletedAt: ToTime(h.GetCompletedAt()), Error: h.GetError()}}
}

// FromDrainReport maps an agent's drain report; nil stays nil.
func FromDrainReport(r *control.DrainReport) *DrainReport {
	if r == nil {
		return nil
	}
	return &DrainReport{Id: r.ID, SourceStopped: r.SourceStopped, SourceState: r.SourceState, WritesRefused: r.WritesRefused,
		Done: r.Done, BookmarkSeq: r.BookmarkSeq, Label: r.Label, Error: r.Error}
}

// ToDrainReport maps a drain report message back; nil stays nil.
func ToDrainReport(r *DrainReport) *control.DrainReport {
	if r == nil {
		return nil
	}
	return &control.DrainReport{ID: r.GetId(), SourceStopped: r.GetSourceStopped(), SourceState: r.GetSourceState(), WritesRefused: r.GetWritesRefused(),
		Done: r.GetDone(), BookmarkSeq: r.GetBookmarkSeq(), Label: r.GetLabel(), Error: r.GetError()}
}

// FromReverseReport maps a reverse direction's report; nil stays nil.
func FromReverseReport(r *control.ReverseReport) *ReverseReport {
	if r == nil {
		return nil
	}
	return &ReverseReport{Ready: r.Ready, Seeded: r.Seeded, Replication: FromReplication(r.Replication), SentBytes: r.SentBytes,
		ResyncBytes: r.ResyncBytes, Released: r.Released, Error: r.Error, Drain: FromDrainReport(r.Drain)}
}

// ToReverseReport maps a reverse report message back; nil stays nil.
func ToReverseReport(r *ReverseReport) *control.ReverseReport {
	if r == nil {
		return nil
	}
	return &control.ReverseReport{Ready: r.GetReady(), Seeded: r.GetSeeded(), Replication: ToReplication(r.GetReplication()), SentBytes: r.GetSentBytes(),
		ResyncBytes: r.GetResyncBytes(), Released: r.GetReleased(), Error: r.GetError(), Drain: ToDrainReport(r.GetDrain())}
}

// FromBarrierReport maps an agent's barrier report; nil stays nil.
func FromBarrierReport(r *control.BarrierReport) *BarrierReport {
	if r == nil {
		return nil
	}
	return &BarrierReport{Id: r.ID, Held: r.Held, Done: r.Done, Seq: r.Seq, Error: r.Error}
}

// ToBarrierReport maps a barrier report message back; nil stays nil.
func ToBarrierReport(r *BarrierReport) *control.BarrierReport {
	if r == nil {
		return nil
	}
	return &control.BarrierReport{ID: r.GetId(), Held: r.GetHeld(), Done: r.GetDone(), Seq: r.GetSeq(), Error: r.GetError()}
}
