package api

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/orchestrate"
	"github.com/standby-dr/standby/internal/store"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// queryInt reads an optional whole-number query parameter.
func queryInt(r *http.Request, name string, def, max int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > max {
		return 0, errorf(http.StatusBadRequest, "%s=%q: want a whole number from 0 to %d", name, v, max)
	}
	return n, nil
}

func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, errorf(http.StatusBadRequest, "%s=%q: want true or false", name, v)
	}
	return b, nil
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) (any, error) {
	var f store.MachineFilter
	q := r.URL.Query()
	if g := q.Get("group"); g != "" {
		grp, err := s.o.Store.GroupByName(r.Context(), g)
		if err != nil {
			return nil, err
		}
		f.Group = grp.ID
	}
	var err error
	if f.Protected, err = queryBool(r, "protected"); err != nil {
		return nil, err
	}
	ms, err := s.o.Store.ListMachines(r.Context(), f)
	if ms == nil && err == nil {
		ms = []control.Machine{}
	}
	return ms, err
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.MachineByName(r.Context(), r.PathValue("name"))
}

// pointsBody answers GET /v1/machines/{name}/points: every point in the
// catalogue, newest first, and the ones a failover would pick.
type pointsBody struct {
	Points        []control.RecoveryPoint `json:"points"`
	Latest        *control.RecoveryPoint  `json:"latest,omitempty"`
	LatestApp     *control.RecoveryPoint  `json:"latest_app_consistent,omitempty"`
	At            *control.RecoveryPoint  `json:"at,omitempty"` // the newest at or before ?at=TIME
	RequestedTime string                  `json:"requested_time,omitempty"`
}

func (s *Server) listPoints(w http.ResponseWriter, r *http.Request) (any, error) {
	m, err := s.o.Store.MachineByName(r.Context(), r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	var at time.Time
	if v := r.URL.Query().Get("at"); v != "" {
		if at, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return nil, errorf(http.StatusBadRequest, "at=%q: want an RFC 3339 time such as 2026-11-27T10:00:00Z", v)
		}
	}
	pts, err := s.o.Store.ListPoints(r.Context(), m.ID)
	if err != nil {
		return nil, err
	}
	b := pointsBody{Points: pts}
	if b.Points == nil {
		b.Points = []control.RecoveryPoint{}
	}
	for i := range pts { // newest first
		p := &pts[i]
		if b.Latest == nil {
			b.Latest = p
		}
		if b.LatestApp == nil && p.AppConsistent {
			b.LatestApp = p
		}
		if !at.IsZero() && b.At == nil && !p.Time.After(at) {
			b.At = p
		}
	}
	if !at.IsZero() {
		b.RequestedTime = at.UTC().Format(time.RFC3339Nano)
		if b.At == nil {
			return nil, errorf(http.StatusNotFound, "machine %s has no recovery point at or before %s", m.Name, b.RequestedTime)
		}
	}
	return b, nil
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) (any, error) {
	f := store.JobFilter{Object: r.URL.Query().Get("object"), Kind: r.URL.Query().Get("kind")}
	var err error
	if f.Unfinished, err = queryBool(r, "unfinished"); err != nil {
		return nil, err
	}
	if f.Limit, err = queryInt(r, "limit", 100, 10000); err != nil {
		return nil, err
	}
	js, err := s.o.Store.ListJobs(r.Context(), f)
	if js == nil && err == nil {
		js = []control.Job{}
	}
	return js, err
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.o.Store.GetJob(r.Context(), r.PathValue("id"))
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) (any, error) {
	all, err := queryBool(r, "all")
	if err != nil {
		return nil, err
	}
	as, err := s.o.Store.ListAlerts(r.Context(), !all)
	if as == nil && err == nil {
		as = []control.Alert{}
	}
	return as, err
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) (any, error) {
	n, err := queryInt(r, "limit", 100, 100000)
	if err != nil {
		return nil, err
	}
	es, err := s.o.Store.ListAudit(r.Context(), n)
	if es == nil && err == nil {
		es = []control.AuditEntry{}
	}
	return es, err
}

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) (any, error) {
	if s.o.Jobs == nil {
		return nil, errorf(http.StatusNotImplemented, "this server runs no jobs")
	}
	id := r.PathValue("id")
	err := s.o.Jobs.Cancel(r.Context(), id)
	if errors.Is(err, orchestrate.ErrJobEnded) {
		err = errorf(http.StatusConflict, "%v", err)
	}
	s.audit(r.Context(), "job.cancel", "job/"+id, err, "")
	if err != nil {
		return nil, err
	}
	return s.o.Store.GetJob(r.Context(), id)
}
