package process

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/standby-dr/standby/internal/journal"
	"github.com/standby-dr/standby/internal/metrics"
)

// MachineStatus is one machine as the process server sees it.
type MachineStatus struct {
	ID             string       `json:"id"`
	Name           string       `json:"name,omitempty"`
	Connected      bool         `json:"connected_to_target"`
	Applied        journal.Pos  `json:"applied"`
	Consistent     bool         `json:"consistent"`
	CacheSegments  int          `json:"cache_segments"`
	CacheBytes     int64        `json:"cache_bytes"`
	CacheTail      journal.Pos  `json:"cache_tail"`
	Refused        string       `json:"refused,omitempty"` // the master target's refusal, until the agent resyncs
	LastError      string       `json:"last_error,omitempty"`
	Forwarding     forwardStats `json:"forwarding"`
	RecordTimeNano int64        `json:"applied_record_time"`
}

// Status is the process server's state.
type Status struct {
	CacheUsed    int64           `json:"cache_used"`
	CacheQuota   int64           `json:"cache_quota"`
	AgentBytes   uint64          `json:"agent_bytes"`
	AgentSegs    uint64          `json:"agent_segments"`
	TargetBefore uint64          `json:"target_bytes_before_packing"`
	TargetAfter  uint64          `json:"target_bytes_after_packing"`
	Machines     []MachineStatus `json:"machines"`
}

// Status reports the cache and every machine.
func (s *Server) Status() Status {
	var out Status
	out.CacheUsed, out.CacheQuota = s.spool.Usage()
	s.counters.mu.Lock()
	out.AgentBytes, out.AgentSegs, out.TargetBefore, out.TargetAfter = s.counters.agentBytes, s.counters.segments, s.counters.outBefore, s.counters.outAfter
	s.counters.mu.Unlock()
	sp := s.spool.Stats()
	s.mu.Lock()
	fs := make([]*forwarder, 0, len(s.forwarders))
	for _, f := range s.forwarders {
		fs = append(fs, f)
	}
	s.mu.Unlock()
	for _, f := range fs {
		f.mu.Lock()
		ms := MachineStatus{ID: f.id, Name: f.open.Name, Connected: f.connected, Applied: f.applied, Consistent: f.consistent,
			LastError: f.lastErr, Forwarding: f.stats, RecordTimeNano: f.recordTime}
		if f.broken != nil {
			ms.Refused = f.broken.Error()
		}
		f.mu.Unlock()
		st := sp[f.id]
		ms.CacheSegments, ms.CacheBytes, ms.CacheTail = st.Segments, st.Bytes, st.Tail
		out.Machines = append(out.Machines, ms)
	}
	sort.Slice(out.Machines, func(i, j int) bool { return out.Machines[i].ID < out.Machines[j].ID })
	return out
}

// Handler serves GET /status and GET /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(s.Status())
	})
	mux.Handle("GET /metrics", metrics.Handler(func(m *metrics.Writer) {
		st := s.Status()
		m.Gauge("standby_process_cache_bytes", "Bytes held in the cache.", nil, float64(st.CacheUsed))
		m.Gauge("standby_process_cache_quota_bytes", "Cache quota.", nil, float64(st.CacheQuota))
		m.Counter("standby_process_bytes_in_total", "Segment bytes received from agents.", nil, float64(st.AgentBytes))
		m.Counter("standby_process_bytes_out_before_packing_total", "Segment bytes forwarded, before zero elimination, dedup and compression.", nil, float64(st.TargetBefore))
		m.Counter("standby_process_bytes_out_total", "Bytes sent to the master target, after packing.", nil, float64(st.TargetAfter))
		for _, ms := range st.Machines {
			l := metrics.Labels{"machine": ms.ID, "name": ms.Name}
			m.Gauge("standby_process_machine_cache_bytes", "Bytes of the machine's segments in the cache.", l, float64(ms.CacheBytes))
			m.Gauge("standby_process_machine_cache_segments", "The machine's segments in the cache.", l, float64(ms.CacheSegments))
			m.Gauge("standby_process_machine_applied_seq", "The master target's apply frontier for the machine.", l, float64(ms.Applied.Seq))
			up := 0.0
			if ms.Connected {
				up = 1
			}
			m.Gauge("standby_process_target_connected", "1 while the machine's stream to the master target is up.", l, up)
			m.Counter("standby_process_zero_bytes_eliminated_total", "Zero payload bytes not sent.", l, float64(ms.Forwarding.ZeroBytes))
			m.Counter("standby_process_dedup_bytes_total", "Payload bytes sent as references to earlier blocks.", l, float64(ms.Forwarding.DedupBytes))
		}
	}))
	return mux
}
