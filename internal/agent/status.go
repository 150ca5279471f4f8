package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/standby-dr/standby/internal/capture"
)

// Status is what GET /status returns.
type Status struct {
	Machine string           `json:"machine"`
	Capture capture.Stats    `json:"capture"`
	Disks   []DiskStatus     `json:"disks"`
	Journal []SegmentStatus  `json:"journal"`
	Dirty   []capture.Extent `json:"dirty"`
	// Replication is present when the agent ships to a process server.
	Replication *ReplicationStatus `json:"replication,omitempty"`
	// Control is present when the agent is managed (a control section).
	Control *ControlStatus `json:"control,omitempty"`
}

// DiskStatus describes one exported disk.
type DiskStatus struct {
	Name   string `json:"name"`
	Export string `json:"export"`
	Size   int64  `json:"size"`
}

// SegmentStatus describes one journal segment.
type SegmentStatus = capture.SegmentInfo

// Status reports the agent's state.
func (a *Agent) Status() Status {
	s := Status{Machine: a.cfg.Machine, Capture: a.machine.Stats(), Journal: a.machine.Segments(), Dirty: a.machine.DirtyExtents()}
	for _, d := range a.machine.Disks() {
		s.Disks = append(s.Disks, DiskStatus{Name: d.Name(), Export: d.Name(), Size: d.Size()})
	}
	if a.ship != nil {
		r := a.ship.Status()
		s.Replication = &r
	}
	if a.ctl != nil {
		c := a.ctl.Status()
		s.Control = &c
	}
	return s
}

func (a *Agent) statusHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /bookmark", func(w http.ResponseWriter, r *http.Request) {
		label := r.URL.Query().Get("label")
		if label == "" {
			label = "manual"
		}
		app, _ := strconv.ParseBool(r.URL.Query().Get("app"))
		var res BookmarkResult
		var err error
		if app {
			// Quiesce hooks; a failed hook gives a crash-consistent
			// bookmark and a warning, a failed thaw an error.
			res, err = a.AppBookmark(r.Context(), label)
		} else {
			res.Seq, err = a.machine.Bookmark(label, false)
		}
		if err == nil {
			a.ship.shipSoon()
		}
		answer := struct {
			BookmarkResult
			Error string `json:"error,omitempty"`
		}{BookmarkResult: res}
		code := http.StatusOK
		if errors.Is(err, capture.ErrNotConsistent) {
			code = http.StatusConflict
		} else if err != nil {
			code = http.StatusInternalServerError
		}
		if err != nil {
			answer.Error = err.Error()
		}
		writeJSON(w, code, answer)
	})
	mux.HandleFunc("POST /resync", func(w http.ResponseWriter, r *http.Request) {
		if a.ship == nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": "this agent does not replicate (no replication section)"})
			return
		}
		if a.ship.Status().State == ReplFenced {
			writeJSON(w, http.StatusConflict, map[string]string{"error": "this agent is fenced: the master target holds a newer epoch; shipping stopped"})
			return
		}
		a.ship.RequestResync()
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "the disks will be compared with the replica; only differing blocks are sent"})
	})
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		st := a.machine.Stats()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		m := a.cfg.Machine
		gauge := func(name, help string, v any) {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s{machine=%q} %v\n", name, help, name, name, m, v)
		}
		counter := func(name, help string, v any) {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s{machine=%q} %v\n", name, help, name, name, m, v)
		}
		counter("standby_capture_writes_total", "Writes captured.", st.Writes)
		counter("standby_capture_write_bytes_total", "Bytes written through capture.", st.WriteBytes)
		counter("standby_capture_flushes_total", "Flush requests.", st.Flushes)
		counter("standby_capture_sync_rounds_total", "Group-commit fsync rounds.", st.SyncRounds)
		counter("standby_capture_bookmarks_total", "Bookmarks appended.", st.Bookmarks)
		gauge("standby_journal_bytes", "Bytes of journal on disk.", st.JournalBytes)
		gauge("standby_journal_limit_bytes", "Journal limit.", st.JournalLimit)
		gauge("standby_journal_seq", "Sequence number of the newest record.", st.Pos.Seq)
		gauge("standby_dirty_bytes", "Bytes marked in the dirty bitmap.", st.DirtyBytes)
		if a.ship != nil {
			r := a.ship.Status()
			gauge("standby_rpo_seconds", "Achieved RPO: age of the oldest write not yet applied at the master target (-1: unknown).", r.RPOSeconds)
			gauge("standby_replication_applied_seq", "The master target's apply frontier.", r.Applied.Seq)
			gauge("standby_replication_durable_seq", "Position durable in the process server's cache.", r.Durable.Seq)
			counter("standby_replication_sent_bytes_total", "Journal bytes sent to the process server.", r.SentBytes)
			gauge("standby_replication_resync_left_bytes", "Bytes still to send of the last comparison with the replica.", r.ResyncLeft)
			for _, rs := range []string{ReplIdle, ReplConnecting, ReplInitial, ReplResyncing, ReplProtected, ReplFenced} {
				v := 0
				if r.State == rs {
					v = 1
				}
				fmt.Fprintf(w, "standby_replication_state{machine=%q,state=%q} %d\n", m, rs, v)
			}
		}
		for _, s := range []capture.State{capture.StateJournaling, capture.StateOverflow, capture.StateResyncing, capture.StateFailed} {
			v := 0
			if st.State == s {
				v = 1
			}
			fmt.Fprintf(w, "standby_capture_state{machine=%q,state=%q} %d\n", m, s, v)
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
