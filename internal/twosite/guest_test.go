package twosite

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/driver"
	"github.com/standby-dr/standby/internal/driver/qemu"
	"github.com/standby-dr/standby/internal/driver/qemu/qemutest"
	"github.com/standby-dr/standby/internal/target"
)

// A replica machine boots: a marker written on the protected machine's
// disk through the agent is replicated; the master target exports the
// recovery point holding it over NBD (a writable overlay); the qemu
// driver boots a tiny Linux from that export, and the guest reads the
// marker. (The failover job that does this is the recovery work's; this
// is its data path, end to end.)
func TestGuestBootsFromAReplicatedPoint(t *testing.T) {
	guest := qemutest.Need(t)
	ctx := context.Background()
	h := Start(t, Options{Disks: []int64{8 << 20}, Exports: true, Logger: testLogger(t)})
	h.WaitProtected(30 * time.Second)
	marker := "replicated-" + time.Now().UTC().Format("150405.000000")
	d := h.DialDisk(ctx, 0)
	if _, err := d.WriteAt([]byte(marker+"\n"), qemutest.MarkerOffset); err != nil {
		t.Fatal(err)
	}
	seq, err := h.Agent.Machine().Bookmark("marker", false)
	if err != nil {
		t.Fatal(err)
	}
	h.WaitApplied(30*time.Second, seq)
	// A write after the point must not show in the export of the point.
	if _, err := d.WriteAt([]byte("later-write-not-in-the-point\n"), qemutest.MarkerOffset); err != nil {
		t.Fatal(err)
	}

	ex, err := h.Target.Export(ctx, target.ExportRequest{Machine: h.Agent.Machine().ID(), Point: "latest"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Target.Unexport(ctx, ex.Name)
	if ex.Point.Label != "marker" {
		t.Fatalf("exported point %d (%q), want the marker bookmark", ex.Point.ID, ex.Point.Label)
	}
	qd, err := qemu.New(qemu.Options{StateDir: filepath.Join(h.Dir, "qemu")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	m := driver.Machine{Name: "web01-test", CPUs: 1, MemoryMiB: 256,
		Disks:   []driver.Disk{{Name: "vda", URI: ex.Disks[0].UnixURI}},
		Network: driver.Network{Isolated: true},
		Boot:    driver.Boot{Kernel: guest.Kernel, Initrd: guest.Initrd, Append: qemutest.BaseAppend}}
	hd, err := qd.Start(ctx, m)
	if err != nil {
		t.Fatalf("start the replica machine: %v", err)
	}
	defer qd.Stop(context.Background(), hd, true)
	log := qd.SerialLog(hd)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if got, ok := qemutest.ConsoleLine(log, qemutest.MarkerPrefix); ok {
			if got != marker {
				t.Fatalf("the guest read %q, want %q (the point's content)", got, marker)
			}
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log)
			t.Fatalf("no marker on the guest's console:\n%s", tailText(string(b)))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tailText(s string) string {
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return strings.TrimSpace(s)
}
