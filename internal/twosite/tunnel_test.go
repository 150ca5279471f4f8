package twosite

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/process"
	"github.com/standby-dr/standby/internal/wire"
)

// TestCopyThroughTunnelOrProcessServer: a copy goes through a copy tunnel
// (the process server relays encrypted bytes and sees no Copy frame) unless
// the process server is told not to relay tunnels; then it forwards Copy
// frames itself. Either way the replica equals the source, and the
// process server accounts for the bytes.
func TestCopyThroughTunnelOrProcessServer(t *testing.T) {
	for _, noTunnel := range []bool{false, true} {
		name := "tunnel"
		if noTunnel {
			name = "process server"
		}
		t.Run(name, func(t *testing.T) {
			h := Start(t, Options{Disks: []int64{24 << 20, 8 << 20}, Fill: fillHalf(11), NoTunnel: noTunnel, Logger: testLogger(t)})
			h.WaitProtected(60 * time.Second)
			r := h.Replication()
			if r.ResyncMode != "copy" {
				t.Fatalf("initial replication went as %q, want copy", r.ResyncMode)
			}
			mustEqualLatest(t, h)
			st := h.Process.Status()
			var fw process.MachineStatus
			for _, m := range st.Machines {
				fw = m
			}
			f := fw.Forwarding
			t.Logf("%s: copy frames %d, tunnel bytes %d, bytes before packing %d", name, f.CopyFrames, f.TunnelBytes, f.BytesBefore)
			if noTunnel {
				if f.CopyFrames == 0 || f.TunnelBytes != 0 {
					t.Errorf("without tunnels: %d copy frames forwarded and %d bytes tunnelled; want frames and no tunnel", f.CopyFrames, f.TunnelBytes)
				}
				return
			}
			// What the agent sent crossed the tunnel, in TLS records.
			if f.CopyFrames != 0 || f.TunnelBytes < r.SentBytes || r.SentBytes < 4<<20 {
				t.Errorf("with tunnels: %d copy frames forwarded and %d bytes tunnelled, the agent sent %d; want no frame and all it sent", f.CopyFrames, f.TunnelBytes, r.SentBytes)
			}
			if st.AgentBytes < f.TunnelBytes || st.TargetBefore < f.TunnelBytes {
				t.Errorf("tunnelled bytes not in the totals: agent bytes %d, to the target %d, tunnelled %d", st.AgentBytes, st.TargetBefore, f.TunnelBytes)
			}
		})
	}
}

// TestTunnelWithAnUnknownTicketIsClosed: neither the process server nor
// the master target relays or serves a tunnel whose ticket they did not
// issue: the connection is closed before any TLS.
func TestTunnelWithAnUnknownTicketIsClosed(t *testing.T) {
	h := Start(t, Options{Disks: []int64{8 << 20}, Logger: testLogger(t)})
	h.WaitProtected(60 * time.Second)
	for name, addr := range map[string]string{"process server": h.ProcessAddr, "master target": h.TargetAddr} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteTunnelPreamble(nc, wire.NewTicket()); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := nc.Read(make([]byte, 1))
		if n != 0 || err != io.EOF {
			t.Errorf("%s: a tunnel with an unknown ticket read %d bytes, %v; want EOF", name, n, err)
		}
		nc.Close()
	}
}
