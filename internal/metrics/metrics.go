// Package metrics writes the Prometheus text exposition format (version
// 0.0.4) for the roles' /metrics endpoints. Each role collects its numbers
// when scraped; there is no registry to keep in sync.
package metrics

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
)

// Writer writes metric families. HELP and TYPE are written once per name.
type Writer struct {
	w    io.Writer
	seen map[string]bool
}

// New writes to w.
func New(w io.Writer) *Writer { return &Writer{w: w, seen: map[string]bool{}} }

// Labels are a sample's labels.
type Labels map[string]string

// Gauge writes one gauge sample.
func (m *Writer) Gauge(name, help string, l Labels, v float64) { m.sample(name, help, "gauge", l, v) }

// Counter writes one counter sample.
func (m *Writer) Counter(name, help string, l Labels, v float64) {
	m.sample(name, help, "counter", l, v)
}

func (m *Writer) sample(name, help, typ string, l Labels, v float64) {
	if !m.seen[name] {
		m.seen[name] = true
		fmt.Fprintf(m.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	fmt.Fprintf(m.w, "%s%s %g\n", name, format(l), v)
}

func format(l Labels) string {
	if len(l) == 0 {
		return ""
	}
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, l[k])
	}
	b.WriteByte('}')
	return b.String()
}

// Handler serves fn's metrics.
func Handler(fn func(*Writer)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fn(New(w))
	})
}
