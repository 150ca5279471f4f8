package server

import (
	"context"
	"net/http"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/metrics"
	"github.com/standby-dr/standby/internal/store"
)

// MetricsHandler serves Prometheus /metrics: per machine the achieved RPO,
// the protection state and the health; per registered server the age of
// its last heartbeat; jobs by kind and state and the durations of ended
// ones; active alerts by severity. Collected from the store when scraped.
func (s *Server) MetricsHandler() http.Handler {
	return metrics.Handler(func(w *metrics.Writer) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now := s.o.Now()
		up := 1.0
		defer func() { w.Gauge("standby_server_store_up", "1 when the store answered this scrape", nil, up) }()
		ms, err := s.st.ListMachines(ctx, store.MachineFilter{})
		if err != nil {
			up = 0
			return
		}
		for _, m := range ms {
			l := metrics.Labels{"machine": m.Name}
			if m.Replication.RPOSeconds >= 0 && !m.Replication.ReportedAt.IsZero() {
				w.Gauge("standby_machine_rpo_seconds", "achieved RPO the machine's agent last reported", l, m.Replication.RPOSeconds)
			}
			w.Gauge("standby_machine_state", "1 for the machine's protection state", metrics.Labels{"machine": m.Name, "state": string(m.State)}, 1)
			w.Gauge("standby_machine_health", "1 for the machine's health (normal, warning, critical)", metrics.Labels{"machine": m.Name, "health": string(m.Health)}, 1)
		}
		servers, err := s.st.ListServers(ctx, "")
		if err != nil {
			up = 0
			return
		}
		for _, srv := range servers {
			if srv.HeartbeatAt.IsZero() || srv.Revoked {
				continue
			}
			w.Gauge("standby_server_heartbeat_age_seconds", "seconds since the registered server's last heartbeat",
				metrics.Labels{"server": srv.ID, "role": string(srv.Role), "name": srv.Name}, now.Sub(srv.HeartbeatAt).Seconds())
		}
		jobs, err := s.st.ListJobs(ctx, store.JobFilter{Limit: 10000})
		if err != nil {
			up = 0
			return
		}
		type key struct{ kind, state string }
		count := map[key]int{}
		sum, n := map[string]float64{}, map[string]int{}
		for _, j := range jobs {
			count[key{j.Kind, string(j.State)}]++
			if j.State == control.JobSucceeded && !j.EndedAt.IsZero() {
				sum[j.Kind] += j.EndedAt.Sub(j.CreatedAt).Seconds()
				n[j.Kind]++
			}
		}
		for k, c := range count {
			w.Gauge("standby_jobs", "jobs by kind and state (the newest 10000)", metrics.Labels{"kind": k.kind, "state": k.state}, float64(c))
		}
		for kind := range sum {
			w.Gauge("standby_job_duration_seconds_sum", "total duration of the succeeded jobs of a kind", metrics.Labels{"kind": kind}, sum[kind])
			w.Gauge("standby_job_duration_seconds_count", "succeeded jobs of a kind", metrics.Labels{"kind": kind}, float64(n[kind]))
		}
		alerts, err := s.st.ListAlerts(ctx, true)
		if err != nil {
			up = 0
			return
		}
		sev := map[control.Severity]int{control.SeverityWarning: 0, control.SeverityCritical: 0}
		for _, a := range alerts {
			sev[a.Severity]++
		}
		for k, c := range sev {
			w.Gauge("standby_alerts_active", "active alerts by severity", metrics.Labels{"severity": string(k)}, float64(c))
		}
	})
}
