package target

import (
	"encoding/json"
	"net/http"

	"github.com/standby-dr/standby/internal/metrics"
)

// Handler serves GET /status (JSON), GET /machines/{machine}/points and
// GET /metrics (Prometheus).
func (t *Target) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, t.Status())
	})
	mux.HandleFunc("GET /machines/{machine}/points", func(w http.ResponseWriter, r *http.Request) {
		rep, _, ok := t.Lookup(r.PathValue("machine"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no replica of machine " + r.PathValue("machine")})
			return
		}
		writeJSON(w, http.StatusOK, rep.Points())
	})
	mux.Handle("GET /metrics", metrics.Handler(t.writeMetrics))
	return mux
}

func (t *Target) writeMetrics(m *metrics.Writer) {
	now := t.o.Now()
	for _, s := range t.Status() {
		l := metrics.Labels{"machine": s.ID, "name": s.Name}
		st := s.Status
		m.Gauge("standby_target_applied_seq", "Sequence number of the last applied record (the latest recovery point).", l, float64(st.Applied.Seq))
		lag := 0.0
		if !st.LastRecordTime.IsZero() && !st.AppliedAt.IsZero() {
			lag = st.AppliedAt.Sub(st.LastRecordTime).Seconds()
		}
		m.Gauge("standby_target_apply_lag_seconds", "Time from the agent's acceptance of the last applied record to its apply here.", l, lag)
		age := 0.0
		if !st.AppliedAt.IsZero() {
			age = now.Sub(st.AppliedAt).Seconds()
		}
		m.Gauge("standby_target_last_apply_age_seconds", "Time since the last apply.", l, age)
		consistent := 0.0
		if st.Consistent {
			consistent = 1
		}
		m.Gauge("standby_target_consistent", "1 when the replica presents a consistent state (no resync pending).", l, consistent)
		m.Gauge("standby_target_points", "Recovery points retained.", l, float64(st.Points))
		m.Gauge("standby_target_stored_bytes", "Bytes of journal segments retained for recovery points.", l, float64(st.Bytes))
		m.Counter("standby_target_bytes_in_total", "Packed bytes received (after compression).", l, float64(s.BytesIn))
		m.Counter("standby_target_bytes_out_total", "Segment bytes those unpacked to (before compression).", l, float64(s.BytesOut))
		m.Counter("standby_target_segments_total", "Segments applied.", l, float64(s.Segments))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
