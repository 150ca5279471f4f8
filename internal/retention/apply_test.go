package retention

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNow = mustTime("2026-11-27T10:30:00Z")

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// ago returns a point taken d before testNow.
func ago(seq uint64, d time.Duration) Point {
	return Point{Seq: seq, Time: testNow.Add(-d)}
}

func at(seq uint64, s string) Point { return Point{Seq: seq, Time: mustTime(s)} }

func app(p Point) Point   { p.AppConsistent = true; return p }
func inUse(p Point) Point { p.InUse = true; return p }

// render writes decisions as "keep 3: r1; r2" lines, keep then remove.
func render(keep, remove []Decision) []string {
	var out []string
	for _, d := range keep {
		out = append(out, fmt.Sprintf("keep %d: %s", d.Seq, strings.Join(d.Reasons, "; ")))
	}
	for _, d := range remove {
		out = append(out, fmt.Sprintf("remove %d: %s", d.Seq, strings.Join(d.Reasons, "; ")))
	}
	return out
}

const (
	day  = 24 * time.Hour
	week = 7 * day
)

func TestApply(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		points []Point
		want   []string
	}{
		{
			name:   "empty input",
			policy: Defaults(),
			want:   nil,
		},
		{
			name:   "single point beyond Max is kept as the newest",
			policy: Defaults(),
			points: []Point{ago(1, 30*day)},
			want:   []string{"keep 1: newest point"},
		},
		{
			name:   "KeepAll keeps strictly newer than now-KeepAll",
			policy: Policy{KeepAll: time.Hour},
			points: []Point{ago(3, 0), ago(2, time.Hour-time.Nanosecond), ago(1, time.Hour)},
			want: []string{
				"keep 3: newest point; within 1h0m0s",
				"keep 2: within 1h0m0s",
				"remove 1: older than 1h0m0s",
			},
		},
		{
			name:   "Max removes strictly older than now-Max",
			policy: Policy{Daily: 7, Max: week},
			points: []Point{ago(3, 0), ago(2, week), ago(1, week+time.Nanosecond)},
			want: []string{
				"keep 3: newest point; newest in day 2026-11-27",
				// A week ago exactly is in day 11-20, before the last 7 days.
				"remove 2: day 2026-11-20 is before the last 7 days",
				"remove 1: older than 7 days",
			},
		},
		{
			name:   "Hourly keeps the newest of each UTC hour; hour starts belong to their hour",
			policy: Policy{Hourly: 3},
			points: []Point{
				at(6, "2026-11-27T10:00:00Z"),
				at(5, "2026-11-27T09:59:59.999Z"),
				at(4, "2026-11-27T09:00:00Z"),
				at(3, "2026-11-27T08:00:00Z"),
				at(2, "2026-11-27T07:59:59Z"),
				at(1, "2026-11-27T07:00:00Z"),
			},
			want: []string{
				"keep 6: newest point; newest in hour 2026-11-27T10",
				"keep 5: newest in hour 2026-11-27T09",
				"keep 3: newest in hour 2026-11-27T08",
				"remove 4: not the newest in hour 2026-11-27T09 (seq 5 is)",
				"remove 2: hour 2026-11-27T07 is before the last 3 hours",
				"remove 1: hour 2026-11-27T07 is before the last 3 hours",
			},
		},
		{
			name:   "Hourly skips empty hours without reaching further back",
			policy: Policy{Hourly: 2},
			points: []Point{at(2, "2026-11-27T10:10:00Z"), at(1, "2026-11-27T08:50:00Z")},
			want: []string{
				"keep 2: newest point; newest in hour 2026-11-27T10",
				"remove 1: hour 2026-11-27T08 is before the last 2 hours",
			},
		},
		{
			name:   "Daily buckets are UTC days whatever the input zone",
			policy: Policy{Daily: 2},
			points: []Point{
				{Seq: 4, Time: mustTime("2026-11-27T01:00:00+02:00")}, // 11-26 23:00 UTC
				at(3, "2026-11-26T22:00:00Z"),
				at(2, "2026-11-25T23:59:59Z"),
				at(1, "2026-11-27T00:00:00Z"),
			},
			want: []string{
				"keep 1: newest point; newest in day 2026-11-27",
				"keep 4: newest in day 2026-11-26",
				"remove 3: not the newest in day 2026-11-26 (seq 4 is)",
				"remove 2: day 2026-11-25 is before the last 2 days",
			},
		},
		{
			name:   "KeepAppConsistent counts only app-consistent points within Max",
			policy: Policy{KeepAll: time.Minute, KeepAppConsistent: 2, Max: 2 * time.Hour},
			points: []Point{
				ago(6, 0),
				app(ago(5, 30*time.Minute)),
				ago(4, 40*time.Minute),
				app(ago(3, time.Hour)),
				app(ago(2, 90*time.Minute)),
				app(ago(1, 3*time.Hour)),
			},
			want: []string{
				"keep 6: newest point; within 1m0s",
				"keep 5: one of the 2 newest app-consistent",
				"keep 3: one of the 2 newest app-consistent",
				"remove 4: older than 1m0s",
				"remove 2: older than 1m0s; not one of the 2 newest app-consistent",
				"remove 1: older than 2h0m0s",
			},
		},
		{
			name:   "duplicate times: higher Seq is newer",
			policy: Policy{Hourly: 1},
			points: []Point{ago(5, time.Minute), ago(6, time.Minute), ago(7, time.Minute)},
			want: []string{
				"keep 7: newest point; newest in hour 2026-11-27T10",
				"remove 6: not the newest in hour 2026-11-27T10 (seq 7 is)",
				"remove 5: not the newest in hour 2026-11-27T10 (seq 7 is)",
			},
		},
		{
			name:   "in-use points survive Max and every other rule",
			policy: Policy{KeepAll: time.Hour, Max: day},
			points: []Point{
				ago(4, 0),
				inUse(ago(3, 2*time.Hour)),
				inUse(ago(2, 30*day)),
				ago(1, 2*day),
			},
			want: []string{
				"keep 4: newest point; within 1h0m0s",
				"keep 3: in use by an export or test failover",
				"keep 2: in use by an export or test failover",
				"remove 1: older than 1 day",
			},
		},
		{
			name:   "an in-use newest point says both",
			policy: Policy{KeepAll: time.Hour, Max: day},
			points: []Point{inUse(ago(1, 2*day))},
			want:   []string{"keep 1: newest point; in use by an export or test failover"},
		},
		{
			name:   "newest beyond Max is kept; the rest beyond Max go",
			policy: Policy{KeepAll: time.Hour, KeepAppConsistent: 5, Max: day},
			points: []Point{app(ago(2, 2*day)), app(ago(1, 3*day))},
			want: []string{
				"keep 2: newest point",
				"remove 1: older than 1 day",
			},
		},
		{
			name:   "a point newer than now is kept",
			policy: Policy{KeepAppConsistent: 1},
			points: []Point{ago(2, -time.Minute), app(ago(1, time.Minute))},
			want: []string{
				"keep 2: newest point; newer than now (clock skew?)",
				"keep 1: one of the 1 newest app-consistent",
			},
		},
		{
			name:   "a point no rule looks at",
			policy: Policy{KeepAppConsistent: 1},
			points: []Point{ago(2, 0), ago(1, time.Minute)},
			want:   []string{"keep 2: newest point", "remove 1: no rule keeps it"},
		},
		{
			name:   "an invalid policy removes nothing",
			policy: Policy{Hourly: -1},
			points: []Point{ago(2, 0), ago(1, 30*day)},
			want: []string{
				"keep 2: policy is invalid, nothing removed: retention policy: Hourly = -1: allowed: 0 (off) or a positive number of hours",
				"keep 1: policy is invalid, nothing removed: retention policy: Hourly = -1: allowed: 0 (off) or a positive number of hours",
			},
		},
		{
			name:   "rules together",
			policy: Policy{KeepAll: time.Hour, Hourly: 2, Daily: 2, Max: 2 * day, KeepAppConsistent: 1},
			points: []Point{
				ago(7, 10*time.Minute),
				app(ago(6, 50*time.Minute)),                  // 09:40
				ago(5, 80*time.Minute),                       // 09:10
				app(ago(4, 3*time.Hour)),                     // 07:30
				ago(3, 12*time.Hour),                         // 11-26 22:30
				inUse(ago(2, 13*time.Hour)),                  // 11-26 21:30
				{Seq: 1, Time: testNow.Add(-50 * time.Hour)}, // beyond Max
			},
			want: []string{
				"keep 7: newest point; within 1h0m0s; newest in hour 2026-11-27T10; newest in day 2026-11-27",
				"keep 6: within 1h0m0s; newest in hour 2026-11-27T09; one of the 1 newest app-consistent",
				"keep 3: newest in day 2026-11-26",
				"keep 2: in use by an export or test failover",
				"remove 5: older than 1h0m0s; not the newest in hour 2026-11-27T09 (seq 6 is); not the newest in day 2026-11-27 (seq 7 is)",
				"remove 4: older than 1h0m0s; hour 2026-11-27T07 is before the last 2 hours; not the newest in day 2026-11-27 (seq 7 is); not one of the 1 newest app-consistent",
				"remove 1: older than 2 days",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keep, remove := Apply(tt.points, tt.policy, testNow)
			got := render(keep, remove)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
			checkInvariants(t, tt.points, tt.policy, testNow, keep, remove)
		})
	}
}

// checkInvariants checks what Apply promises for any input: a partition of
// the input, sorted newest first, every decision with a reason, the safety
// rules, Max, independence from input order and idempotence.
func checkInvariants(t *testing.T, points []Point, p Policy, now time.Time, keep, remove []Decision) {
	t.Helper()

	// Every input point appears exactly once in keep ∪ remove.
	var out []Point
	for _, d := range slices.Concat(keep, remove) {
		out = append(out, d.Point)
		if len(d.Reasons) == 0 {
			t.Errorf("seq %d: decision without a reason", d.Seq)
		}
	}
	if !samePoints(points, out) {
		t.Errorf("keep ∪ remove is not the input:\n in  %v\n out %v", seqs(points), seqs(out))
	}

	// Sorted newest first.
	for _, ds := range [][]Decision{keep, remove} {
		if !slices.IsSortedFunc(ds, func(a, b Decision) int { return newerFirst(a.Point, b.Point) }) {
			t.Errorf("not sorted newest first: %v", seqs(points))
		}
	}

	// Safety: the newest point and in-use points are kept; nothing older
	// than Max is kept otherwise.
	if len(points) > 0 {
		newest := slices.MinFunc(points, newerFirst)
		if !slices.ContainsFunc(keep, func(d Decision) bool { return reflect.DeepEqual(d.Point, newest) }) {
			t.Errorf("newest point seq %d not kept", newest.Seq)
		}
	}
	for _, d := range remove {
		if d.InUse {
			t.Errorf("in-use point seq %d removed", d.Seq)
		}
	}
	if p.Validate() == nil && p.Max > 0 {
		for i, d := range keep {
			if d.Time.Before(now.Add(-p.Max)) && !d.InUse && i != 0 {
				t.Errorf("seq %d older than Max kept: %v", d.Seq, d.Reasons)
			}
		}
	}

	// The same decisions whatever the input order.
	shuffled := slices.Clone(points)
	r := rand.New(rand.NewPCG(uint64(len(points)), 7))
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	k2, r2 := Apply(shuffled, p, now)
	if !reflect.DeepEqual(k2, keep) || !reflect.DeepEqual(r2, remove) {
		t.Errorf("decisions depend on input order")
	}

	// Idempotent: applying again to the kept points keeps all of them, for
	// the same reasons.
	var kept []Point
	for _, d := range keep {
		kept = append(kept, d.Point)
	}
	k3, r3 := Apply(kept, p, now)
	if len(r3) != 0 {
		t.Errorf("second Apply removed %v", render(nil, r3))
	}
	if !reflect.DeepEqual(k3, keep) {
		t.Errorf("second Apply changed the reasons:\n first  %s\n second %s",
			strings.Join(render(keep, nil), "\n\t"), strings.Join(render(k3, nil), "\n\t"))
	}
}

func seqs(points []Point) []uint64 {
	var s []uint64
	for _, p := range points {
		s = append(s, p.Seq)
	}
	return s
}

// samePoints reports whether a and b hold the same points, as multisets.
func samePoints(a, b []Point) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, newerFirst)
	slices.SortFunc(b, newerFirst)
	return reflect.DeepEqual(a, b)
}

// TestApplyProperties checks the invariants on random histories under
// the default policy and random valid policies.
func TestApplyProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	policies := []Policy{Defaults()}
	for len(policies) < 40 {
		p := Policy{
			KeepAll:           time.Duration(r.IntN(4)) * 30 * time.Minute,
			Hourly:            r.IntN(30),
			Daily:             r.IntN(10),
			KeepAppConsistent: r.IntN(5),
		}
		if r.IntN(2) == 0 {
			p.Max = p.window() + time.Duration(r.IntN(3))*day
		}
		if p.Validate() == nil {
			policies = append(policies, p)
		}
	}
	var kept, removed, beyondMax int
	for iter := range 500 {
		p := policies[iter%len(policies)]
		now := testNow.Add(time.Duration(r.Int64N(int64(day))))
		points := randomPoints(r, now)
		t.Run(fmt.Sprint(iter), func(t *testing.T) {
			keep, remove := Apply(points, p, now)
			checkInvariants(t, points, p, now, keep, remove)
			kept += len(keep)
			removed += len(remove)
			for _, d := range keep {
				if p.Max > 0 && d.Time.Before(now.Add(-p.Max)) {
					beyondMax++
				}
			}
		})
	}
	// The histories must exercise the rules, not just keep everything.
	if kept < 1000 || removed < 1000 || beyondMax < 10 {
		t.Errorf("weak random histories: %d kept, %d removed, %d kept beyond Max", kept, removed, beyondMax)
	}
	t.Logf("%d kept, %d removed, %d kept beyond Max", kept, removed, beyondMax)
}

// randomPoints makes up to 60 points over the 12 days before now, with
// duplicate times, a few points from the future, hour and day boundaries,
// and random app-consistency and use.
func randomPoints(r *rand.Rand, now time.Time) []Point {
	n := r.IntN(60)
	points := make([]Point, 0, n)
	for i := range n {
		var tm time.Time
		switch r.IntN(10) {
		case 0: // on an hour boundary
			tm = hourOf(now).Add(-time.Duration(r.IntN(300)) * time.Hour)
		case 1: // same time as an earlier point
			if len(points) > 0 {
				tm = points[r.IntN(len(points))].Time
				break
			}
			fallthrough
		case 2: // clock skew
			tm = now.Add(time.Duration(r.IntN(120)) * time.Minute)
		default:
			tm = now.Add(-time.Duration(r.Int64N(int64(12 * day))))
		}
		points = append(points, Point{
			Seq:           uint64(i + 1),
			Time:          tm,
			AppConsistent: r.IntN(3) == 0,
			InUse:         r.IntN(15) == 0,
			Tags:          []string{"tested"}[:r.IntN(2)],
		})
	}
	return points
}

// FuzzApply checks the invariants on inputs the fuzzer builds.
func FuzzApply(f *testing.F) {
	f.Add(uint64(1), uint64(2), 10)
	f.Add(uint64(42), uint64(0), 0)
	f.Fuzz(func(t *testing.T, seed1, seed2 uint64, policy int) {
		r := rand.New(rand.NewPCG(seed1, seed2))
		p := Defaults()
		if policy%2 == 1 {
			p = Policy{Hourly: 3, Daily: 2, KeepAppConsistent: 1}
		}
		points := randomPoints(r, testNow)
		keep, remove := Apply(points, p, testNow)
		checkInvariants(t, points, p, testNow, keep, remove)
	})
}

// Apply must not modify its input.
func TestApplyDoesNotModifyInput(t *testing.T) {
	points := []Point{ago(1, time.Hour*3), ago(3, 0), ago(2, 5*time.Hour)}
	before := slices.Clone(points)
	Apply(points, Defaults(), testNow)
	if !reflect.DeepEqual(points, before) {
		t.Errorf("input modified: %v", seqs(points))
	}
}
