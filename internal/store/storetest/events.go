package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

var eventTests = []test{
	{"Alerts", testAlerts},
	{"AlertOrder", testAlertOrder},
	{"Audit", testAudit},
}

func testAlerts(t *testing.T, s store.Store) {
	a := control.Alert{Key: "rpo/m1", Machine: "m1", Severity: control.SeverityWarning, Message: "rpo 95s", RaisedAt: at(0)}
	got, isNew, err := s.RaiseAlert(ctx(t), a)
	must(t, "raise", err)
	if !isNew || got.ID == "" || got.Count != 1 || !got.Active() {
		t.Fatalf("first raise: new %v, %+v; want new, an ID, count 1, active", isNew, got)
	}
	first := got
	want := control.Alert{ID: first.ID, Key: "rpo/m1", Machine: "m1", Severity: control.SeverityWarning,
		Message: "rpo 95s", RaisedAt: um(at(0)), LastSeen: um(at(0)), Count: 1}
	same(t, "raised alert", got, want)

	// A repeat counts and updates what it says, not when it was raised.
	again := control.Alert{Key: "rpo/m1", Machine: "m1", Severity: control.SeverityCritical, Message: "rpo 300s",
		RaisedAt: at(time.Minute), LastSeen: at(time.Minute)}
	got, isNew, err = s.RaiseAlert(ctx(t), again)
	must(t, "raise again", err)
	want.Severity, want.Message, want.LastSeen, want.Count = control.SeverityCritical, "rpo 300s", um(at(time.Minute)), 2
	if isNew {
		t.Fatal("second raise: new, want a repeat")
	}
	same(t, "repeated alert", got, want)
	_, _, err = s.RaiseAlert(ctx(t), control.Alert{Key: "rpo/m1", LastSeen: at(2 * time.Minute), Message: "rpo 400s", Severity: control.SeverityCritical})
	must(t, "raise a third time", err)
	other := control.Alert{ID: "fixed-id", Key: "server/a1", Server: "a1", Severity: control.SeverityWarning, Message: "silent", RaisedAt: at(time.Second)}
	got, isNew, err = s.RaiseAlert(ctx(t), other)
	must(t, "raise another", err)
	if !isNew || got.ID != "fixed-id" {
		t.Fatalf("other key: new %v, id %q; want new with the given ID", isNew, got.ID)
	}
	// The caller may name the alert on every raise.
	got, isNew, err = s.RaiseAlert(ctx(t), other)
	must(t, "raise another again, same ID", err)
	if isNew || got.ID != "fixed-id" || got.Count != 2 {
		t.Fatalf("other key again: new %v, %+v; want a repeat with count 2", isNew, got)
	}

	active, err := s.ListAlerts(ctx(t), true)
	must(t, "list", err)
	same(t, "active alerts", names(active, func(a control.Alert) string { return fmt.Sprint(a.Key, " ", a.Count) }),
		[]string{"server/a1 2", "rpo/m1 3"})
	same(t, "last seen of the third raise", active[1].LastSeen, um(at(2*time.Minute)))

	must(t, "clear", s.ClearAlert(ctx(t), "rpo/m1", at(time.Hour)))
	must(t, "clear again", s.ClearAlert(ctx(t), "rpo/m1", at(2*time.Hour)))
	must(t, "clear unknown", s.ClearAlert(ctx(t), "nope", at(time.Hour)))
	active, err = s.ListAlerts(ctx(t), true)
	must(t, "list", err)
	same(t, "active after clear", names(active, func(a control.Alert) string { return a.Key }), []string{"server/a1"})
	all, err := s.ListAlerts(ctx(t), false)
	must(t, "list all", err)
	same(t, "all after clear", len(all), 2)
	cleared := all[1]
	if cleared.Active() || !cleared.ClearedAt.Equal(um(at(time.Hour))) || cleared.Count != 3 || cleared.ID != first.ID {
		t.Fatalf("cleared alert: %+v; want cleared at %v (the first clear), count 3, id %s", cleared, um(at(time.Hour)), first.ID)
	}

	// Raised again after a clear: a new alert, counted from one.
	got, isNew, err = s.RaiseAlert(ctx(t), control.Alert{Key: "rpo/m1", Machine: "m1", Severity: control.SeverityWarning, Message: "back", RaisedAt: at(3 * time.Hour)})
	must(t, "raise after clear", err)
	if !isNew || got.Count != 1 || got.ID == first.ID || !got.RaisedAt.Equal(um(at(3*time.Hour))) {
		t.Fatalf("raise after clear: new %v, %+v; want a new alert with count 1 and a new ID", isNew, got)
	}
	all, err = s.ListAlerts(ctx(t), false)
	must(t, "list all", err)
	same(t, "all alerts, newest raised first", names(all, func(a control.Alert) string { return fmt.Sprint(a.Key, " ", a.Count) }),
		[]string{"rpo/m1 1", "server/a1 2", "rpo/m1 3"})
	_, _, err = s.RaiseAlert(ctx(t), control.Alert{ID: first.ID, Key: "other", RaisedAt: at(0)})
	wantErr(t, "new alert with a used ID", err, store.ErrExists)
}

func testAlertOrder(t *testing.T, s store.Store) {
	for i, d := range []time.Duration{time.Minute, 0, time.Hour, time.Minute} {
		_, _, err := s.RaiseAlert(ctx(t), control.Alert{ID: id(i), Key: id(i), RaisedAt: at(d)})
		must(t, "raise", err)
	}
	all, err := s.ListAlerts(ctx(t), false)
	must(t, "list", err)
	// id-003 and id-000 were raised at the same time; the later raise first.
	same(t, "alerts, newest first", names(all, func(a control.Alert) string { return a.ID }), []string{id(2), id(3), id(0), id(1)})
}

func testAudit(t *testing.T, s store.Store) {
	var appended []control.AuditEntry
	for i := range 5 {
		e := control.AuditEntry{
			// Times out of order: the log's order is the order of appends.
			At:    at(time.Duration(5-i) * time.Second),
			Actor: "user:alice", Action: "machine.protect", Object: fmt.Sprintf("machine/web%02d", i),
			Result: "ok", Detail: "group web",
		}
		if i == 3 {
			e.Result, e.Detail = "refused: not found", ""
		}
		got, err := s.AppendAudit(ctx(t), e)
		must(t, "append", err)
		if len(appended) > 0 && got.ID <= appended[len(appended)-1].ID {
			t.Fatalf("entry %d: id %d, want more than %d", i, got.ID, appended[len(appended)-1].ID)
		}
		e.ID, e.At = got.ID, um(e.At)
		same(t, "appended entry", got, e)
		appended = append(appended, e)
	}
	all, err := s.ListAudit(ctx(t), 0)
	must(t, "list", err)
	same(t, "audit, newest first", all, []control.AuditEntry{appended[4], appended[3], appended[2], appended[1], appended[0]})
	two, err := s.ListAudit(ctx(t), 2)
	must(t, "list 2", err)
	same(t, "audit limited to 2", two, []control.AuditEntry{appended[4], appended[3]})
	many, err := s.ListAudit(ctx(t), 50)
	must(t, "list 50", err)
	same(t, "audit limited beyond its length", len(many), 5)
}
