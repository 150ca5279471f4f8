package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/control"
	"github.com/standby-dr/standby/internal/store"
)

var concurrencyTests = []test{
	{"ConcurrentJoin", testConcurrentJoin},
	{"ConcurrentJoinExpired", testConcurrentJoinExpired},
	{"ConcurrentMachineUpdate", testConcurrentMachineUpdate},
	{"ConcurrentAlerts", testConcurrentAlerts},
	{"ConcurrentCreate", testConcurrentCreate},
	{"ConcurrentHeartbeats", testConcurrentHeartbeats},
}

// racers is how many goroutines race for one thing.
const racers = 8

// race runs fn in racers goroutines released at once and returns their
// errors.
func race(fn func(i int) error) []error {
	errs := make([]error, racers)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

// oneWins checks that exactly one error is nil and every other is loser.
func oneWins(t *testing.T, what string, errs []error, loser error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("%s: racers %d and %d both won", what, winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, loser):
			t.Fatalf("%s: racer %d: got %v, want %v", what, i, err, loser)
		}
	}
	if winner < 0 {
		t.Fatalf("%s: nobody won: %v", what, errs)
	}
	return winner
}

func testConcurrentJoin(t *testing.T, s store.Store) {
	must(t, "create", s.CreateJoinToken(ctx(t), control.JoinToken{ID: "k1", Hash: "h1", Role: control.RoleAgent,
		CreatedAt: at(0), ExpiresAt: at(time.Hour)}))
	errs := race(func(i int) error {
		_, err := s.UseJoinToken(ctx(t), "h1", at(time.Minute), fmt.Sprintf("server-%d", i))
		return err
	})
	w := oneWins(t, "use one token 8 times at once", errs, store.ErrTokenUsed)
	list, err := s.ListJoinTokens(ctx(t))
	must(t, "list", err)
	same(t, "token used by the winner", list[0].UsedBy, fmt.Sprintf("server-%d", w))
}

func testConcurrentJoinExpired(t *testing.T, s store.Store) {
	must(t, "create", s.CreateJoinToken(ctx(t), control.JoinToken{ID: "k1", Hash: "h1", Role: control.RoleAgent,
		CreatedAt: at(0), ExpiresAt: at(time.Minute)}))
	for i, err := range race(func(i int) error {
		_, err := s.UseJoinToken(ctx(t), "h1", at(time.Hour), fmt.Sprintf("server-%d", i))
		return err
	}) {
		wantErr(t, fmt.Sprintf("racer %d using an expired token", i), err, store.ErrTokenExpired)
	}
	list, err := s.ListJoinTokens(ctx(t))
	must(t, "list", err)
	if !list[0].UsedAt.IsZero() || list[0].UsedBy != "" {
		t.Fatalf("expired token: %+v, want it unused", list[0])
	}
}

func testConcurrentMachineUpdate(t *testing.T, s store.Store) {
	m, err := s.CreateMachine(ctx(t), control.Machine{ID: "m1", Name: "web01", State: "protected"})
	must(t, "create", err)
	errs := race(func(i int) error {
		u := m
		u.State = control.MachineState(fmt.Sprintf("state-%d", i))
		_, err := s.UpdateMachine(ctx(t), u)
		return err
	})
	w := oneWins(t, "update one version 8 times at once", errs, store.ErrConflict)
	got, err := s.GetMachine(ctx(t), "m1")
	must(t, "get", err)
	same(t, "the winner's state", got.State, control.MachineState(fmt.Sprintf("state-%d", w)))
	same(t, "version", got.Version, int64(2))
}

func testConcurrentAlerts(t *testing.T, s store.Store) {
	news := make([]bool, racers)
	errs := race(func(i int) error {
		var err error
		_, news[i], err = s.RaiseAlert(ctx(t), control.Alert{Key: "rpo/m1", Severity: control.SeverityWarning,
			Message: "late", RaisedAt: at(time.Duration(i) * time.Second)})
		return err
	})
	for i, err := range errs {
		must(t, fmt.Sprintf("racer %d", i), err)
	}
	n := 0
	for _, isNew := range news {
		if isNew {
			n++
		}
	}
	same(t, "racers told the alert is new", n, 1)
	all, err := s.ListAlerts(ctx(t), false)
	must(t, "list", err)
	if len(all) != 1 || all[0].Count != racers {
		t.Fatalf("alerts after %d raises of one key: %+v; want one with count %d", racers, all, racers)
	}
}

func testConcurrentCreate(t *testing.T, s store.Store) {
	oneWins(t, "create one site name 8 times at once", race(func(i int) error {
		return s.CreateSite(ctx(t), control.Site{ID: id(i), Name: "primary"})
	}), store.ErrExists)
	oneWins(t, "create one machine name 8 times at once", race(func(i int) error {
		_, err := s.CreateMachine(ctx(t), control.Machine{ID: id(i), Name: "web01"})
		return err
	}), store.ErrExists)
	ids := make([]int64, racers)
	for i, err := range race(func(i int) error {
		e, err := s.AppendAudit(ctx(t), control.AuditEntry{At: at(0), Action: "x"})
		ids[i] = e.ID
		return err
	}) {
		must(t, fmt.Sprintf("append %d", i), err)
	}
	seen := map[int64]bool{}
	for _, x := range ids {
		if seen[x] {
			t.Fatalf("concurrent appends: audit IDs %v repeat", ids)
		}
		seen[x] = true
	}
}

// testConcurrentHeartbeats: many small concurrent writes, as a thousand
// agents send; none may fail for want of a lock.
func testConcurrentHeartbeats(t *testing.T, s store.Store) {
	for i := range racers {
		must(t, "create", s.CreateServer(ctx(t), control.Server{ID: id(i), Role: control.RoleAgent, Name: id(i)}))
	}
	const beats = 40
	for i, err := range race(func(i int) error {
		for n := range beats {
			if err := s.Heartbeat(ctx(t), id(i), at(time.Duration(n)*time.Second), "1.0", control.Capacity{Machines: n}); err != nil {
				return err
			}
			if _, err := s.GetServer(ctx(t), id((i+1)%racers)); err != nil {
				return err
			}
		}
		return nil
	}) {
		must(t, fmt.Sprintf("agent %d", i), err)
	}
	all, err := s.ListServers(ctx(t), control.RoleAgent)
	must(t, "list", err)
	for _, x := range all {
		if x.Capacity.Machines != beats-1 || !x.HeartbeatAt.Equal(um(at((beats-1)*time.Second))) {
			t.Fatalf("server %s after %d heartbeats: %+v", x.ID, beats, x)
		}
	}
}
