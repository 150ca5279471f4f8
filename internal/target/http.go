package target

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/standby-dr/standby/internal/blockmap"
	"github.com/standby-dr/standby/internal/replica"

	"github.com/standby-dr/standby/internal/metrics"
)

// Handler serves GET /status (JSON), GET /machines/{machine}/points,
// the exports (export_http.go) and GET /metrics (Prometheus).
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
	mux.HandleFunc("GET /machines/{machine}/points/{point}/blockmap", t.serveBlockMap)
	mux.HandleFunc("GET /machines/{machine}/points/{point}/disks/{disk}", t.serveDisk)
	t.mountExports(mux)
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

// openView opens the point a request names ("latest" or an id).
func (t *Target) openView(r *http.Request) (*replica.View, int, error) {
	rep, _, ok := t.Lookup(r.PathValue("machine"))
	if !ok {
		return nil, http.StatusNotFound, fmt.Errorf("no replica of machine %s", r.PathValue("machine"))
	}
	var id uint64
	if p := r.PathValue("point"); p != "latest" {
		var err error
		if id, err = strconv.ParseUint(p, 10, 64); err != nil || id == 0 {
			return nil, http.StatusBadRequest, fmt.Errorf("point %q is not an id or latest", p)
		}
	}
	v, err := rep.OpenPoint(r.Context(), id)
	if err != nil {
		return nil, http.StatusNotFound, err
	}
	return v, 0, nil
}

// serveDisk serves one disk of a recovery point as a raw image (with
// range requests): a read-only copy of the point, for checks and copies.
func (t *Target) serveDisk(w http.ResponseWriter, r *http.Request) {
	v, code, err := t.openView(r)
	if err != nil {
		writeJSON(w, code, map[string]string{"error": err.Error()})
		return
	}
	defer v.Close()
	disk, err := strconv.Atoi(r.PathValue("disk"))
	if err != nil || disk < 0 || disk >= len(v.Disks()) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("disk %q: the machine has %d disks", r.PathValue("disk"), len(v.Disks()))})
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Standby-Point", strconv.FormatUint(v.Point().ID, 10))
	http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(v.DiskReaderAt(disk), 0, v.Size(disk)))
}

// serveBlockMap hashes one disk of a recovery point ("latest" or an id):
// what `standby verify` compares a source with.
func (t *Target) serveBlockMap(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, err error) { writeJSON(w, code, map[string]string{"error": err.Error()}) }
	v, code, err := t.openView(r)
	if err != nil {
		fail(code, err)
		return
	}
	defer v.Close()
	disk, err := strconv.Atoi(r.URL.Query().Get("disk"))
	if err != nil {
		fail(http.StatusBadRequest, fmt.Errorf("disk: want a disk index"))
		return
	}
	bs := blockmap.DefaultBlockSize
	if v := r.URL.Query().Get("block_size"); v != "" {
		if bs, err = strconv.Atoi(v); err != nil {
			fail(http.StatusBadRequest, fmt.Errorf("block_size: %q is not a number", v))
			return
		}
	}
	if disk < 0 || disk >= len(v.Disks()) {
		fail(http.StatusBadRequest, fmt.Errorf("disk %d: the machine has %d disks", disk, len(v.Disks())))
		return
	}
	m, err := blockmap.Hasher{BlockSize: bs}.Hash(r.Context(), v.DiskReaderAt(disk), v.Size(disk), nil)
	if err != nil {
		fail(http.StatusInternalServerError, err)
		return
	}
	b, err := blockmap.AppendMap(nil, m)
	if err != nil {
		fail(http.StatusBadRequest, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Standby-Point", strconv.FormatUint(v.Point().ID, 10))
	w.Write(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
