package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/standby-dr/standby/internal/store"
)

// Option changes what Run does.
type Option func(*config)

type config struct {
	reopen func(t *testing.T) func() store.Store
}

// WithReopen lets the suite close a store and open its database again.
// database returns a function that opens one new, empty database (created
// for t and removed after it); every call of that function opens the same
// database again. The suite closes each store it opens.
func WithReopen(database func(t *testing.T) func() store.Store) Option {
	return func(c *config) { c.reopen = database }
}

type test struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// Run runs the conformance suite against the stores open returns; open
// gives a new, empty store for each test.
func Run(t *testing.T, open func(t *testing.T) store.Store, opts ...Option) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	var tests []test
	tests = append(tests, inventoryTests...)
	tests = append(tests, machineTests...)
	tests = append(tests, planTests...)
	tests = append(tests, eventTests...)
	tests = append(tests, concurrencyTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
	t.Run("Reopen", func(t *testing.T) {
		if cfg.reopen == nil {
			t.Skip("the opener cannot open a database twice (no WithReopen)")
		}
		testReopen(t, cfg.reopen(t))
	})
}

// ctx is the context of a test: cancelled when it ends.
func ctx(t *testing.T) context.Context {
	return t.Context()
}

// base is the suite's reference time: not UTC and with nanoseconds, so
// that a store that keeps either shows it.
var base = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600))

// at returns base plus d.
func at(d time.Duration) time.Time { return base.Add(d) }

// um is what a store returns for t: UTC, truncated to microseconds.
func um(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// must fails the test on err.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantErr fails the test unless err is target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// same fails the test unless got and want are deeply equal.
func same(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// names maps xs to their names, to compare orders.
func names[T any](xs []T, name func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = name(x)
	}
	return out
}

func id(i int) string { return fmt.Sprintf("id-%03d", i) }

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}
