package retention

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Point is what the policy needs to know about one recovery point.
type Point struct {
	Seq           uint64    `json:"seq"`            // identifies the point; breaks ties between equal times
	Time          time.Time `json:"time"`           // when the point was taken
	AppConsistent bool      `json:"app_consistent"` // taken with the guest's applications quiesced
	Tags          []string  `json:"tags,omitempty"` // e.g. "tested", "multi-machine"; carried, not interpreted
	InUse         bool      `json:"in_use"`         // an export or test failover uses it: never removed
	Label         string    `json:"label,omitempty"`
}

// Decision is the verdict on one point with the reasons for it, in words an
// operator can read (the console and CLI show them). A kept point lists
// every rule that keeps it; a removed point lists why no rule kept it.
type Decision struct {
	Point
	Reasons []string `json:"reasons"`
}

// Reasons, as they appear in Decision.Reasons. Formats take the rule's
// parameter or bucket name.
const (
	reasonNewest       = "newest point"
	reasonInUse        = "in use by an export or test failover"
	reasonFuture       = "newer than now (clock skew?)"
	reasonWithin       = "within %s"
	reasonOlderThan    = "older than %s"
	reasonHour         = "newest in hour %s"
	reasonNotHour      = "not the newest in hour %s (seq %d is)"
	reasonHourOutside  = "hour %s is before the last %d hours"
	reasonDay          = "newest in day %s"
	reasonNotDay       = "not the newest in day %s (seq %d is)"
	reasonDayOutside   = "day %s is before the last %d days"
	reasonApp          = "one of the %d newest app-consistent"
	reasonNotApp       = "not one of the %d newest app-consistent"
	reasonNoRule       = "no rule keeps it"
	reasonPolicyBroken = "policy is invalid, nothing removed: %s"
)

// Bucket names, always in UTC.
const (
	hourLayout = "2006-01-02T15"
	dayLayout  = "2006-01-02"
)

// Apply decides which points to keep under policy p at time now. It is a
// pure function: it reads only its arguments and does not modify points.
//
// A point is kept if any of these holds (its Decision lists all that do):
//   - it is the newest point (the newest Time; among equal times, the
//     highest Seq);
//   - it is in use (InUse);
//   - it is not older than p.Max (or p.Max is 0), and
//   - it is newer than now (clock skew: never delete what we cannot date),
//   - it is newer than now-p.KeepAll,
//   - it is the newest point of one of the last p.Hourly UTC hours,
//   - it is the newest point of one of the last p.Daily UTC days, or
//   - it is app-consistent and one of the p.KeepAppConsistent newest
//     app-consistent points not older than p.Max.
//
// Every other point is removed. If p is invalid (Validate), nothing is
// removed and every point carries the validation error as its reason.
//
// The result does not depend on the order of points. keep and remove are
// sorted newest first (Time, then Seq, then Label, descending); every input
// point appears exactly once in keep or remove. Apply is idempotent:
// applying it again, with the same p and now, to the kept points keeps all
// of them, for the same reasons.
func Apply(points []Point, p Policy, now time.Time) (keep, remove []Decision) {
	if len(points) == 0 {
		return nil, nil
	}
	sorted := slices.Clone(points)
	slices.SortFunc(sorted, newerFirst)

	if err := p.Validate(); err != nil {
		reason := fmt.Sprintf(reasonPolicyBroken, strings.ReplaceAll(err.Error(), "\n", "; "))
		for _, pt := range sorted {
			keep = append(keep, Decision{Point: pt, Reasons: []string{reason}})
		}
		return keep, nil
	}

	e := newEvaluator(sorted, p, now)
	for i, pt := range sorted {
		kept, reasons := e.decide(i, pt)
		d := Decision{Point: pt, Reasons: reasons}
		if kept {
			keep = append(keep, d)
		} else {
			remove = append(remove, d)
		}
	}
	return keep, remove
}

// newerFirst orders points newest first; Seq and Label break ties so that
// the order, and so every decision, is independent of the input order.
func newerFirst(a, b Point) int {
	if c := b.Time.Compare(a.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(b.Seq, a.Seq); c != 0 {
		return c
	}
	return cmp.Compare(b.Label, a.Label)
}

// evaluator holds what decide needs beyond the point itself: the cut-off
// times, the bucket rules and a count of app-consistent points.
type evaluator struct {
	p      Policy
	now    time.Time
	points []Point // sorted newest first

	maxCutoff     time.Time // points before it are beyond Max (if p.Max > 0)
	keepAllCutoff time.Time // points after it are within KeepAll
	hourly, daily bucketRule
	appSeen       int // app-consistent points within Max seen so far
}

// bucketRule is one "newest point of each of the last n buckets" rule.
type bucketRule struct {
	n                        int
	of                       func(time.Time) time.Time // start of the bucket holding a time
	first                    time.Time                 // start of the oldest bucket in the window
	newest                   map[time.Time]int         // bucket start -> index of its newest point
	layout                   string                    // bucket name format
	keep, notNewest, outside string                    // reason formats
}

func newEvaluator(sorted []Point, p Policy, now time.Time) *evaluator {
	now = now.UTC()
	e := &evaluator{
		p:             p,
		now:           now,
		points:        sorted,
		maxCutoff:     now.Add(-p.Max),
		keepAllCutoff: now.Add(-p.KeepAll),
		hourly: bucketRule{
			n: p.Hourly, of: hourOf, layout: hourLayout,
			first: hourOf(now).Add(-time.Duration(p.Hourly-1) * time.Hour),
			keep:  reasonHour, notNewest: reasonNotHour, outside: reasonHourOutside,
		},
		daily: bucketRule{
			n: p.Daily, of: dayOf, layout: dayLayout,
			first: dayOf(now).AddDate(0, 0, -(p.Daily - 1)),
			keep:  reasonDay, notNewest: reasonNotDay, outside: reasonDayOutside,
		},
	}
	e.hourly.index(sorted)
	e.daily.index(sorted)
	return e
}

// index records the newest point of each bucket. points are newest first,
// so the first point seen in a bucket is its newest.
func (r *bucketRule) index(points []Point) {
	r.newest = make(map[time.Time]int)
	for i, pt := range points {
		if _, ok := r.newest[r.of(pt.Time)]; !ok {
			r.newest[r.of(pt.Time)] = i
		}
	}
}

// decide returns whether points[i] is kept and why. It must be called for
// i = 0, 1, 2, … in order (it counts app-consistent points).
func (e *evaluator) decide(i int, pt Point) (kept bool, reasons []string) {
	var why, whyNot []string
	if i == 0 {
		why = append(why, reasonNewest)
	}
	if pt.InUse {
		why = append(why, reasonInUse)
	}
	if e.p.Max > 0 && pt.Time.Before(e.maxCutoff) {
		// Max overrides every rule but the two safety rules above.
		if len(why) > 0 {
			return true, why
		}
		return false, []string{fmt.Sprintf(reasonOlderThan, formatDuration(e.p.Max))}
	}
	if pt.Time.After(e.now) {
		why = append(why, reasonFuture)
	}
	if e.p.KeepAll > 0 {
		if pt.Time.After(e.keepAllCutoff) {
			why = append(why, fmt.Sprintf(reasonWithin, formatDuration(e.p.KeepAll)))
		} else {
			whyNot = append(whyNot, fmt.Sprintf(reasonOlderThan, formatDuration(e.p.KeepAll)))
		}
	}
	for _, r := range []*bucketRule{&e.hourly, &e.daily} {
		if r.n == 0 {
			continue
		}
		if yes, reason := r.decide(i, pt, e.points); yes {
			why = append(why, reason)
		} else {
			whyNot = append(whyNot, reason)
		}
	}
	if e.p.KeepAppConsistent > 0 && pt.AppConsistent {
		e.appSeen++
		if e.appSeen <= e.p.KeepAppConsistent {
			why = append(why, fmt.Sprintf(reasonApp, e.p.KeepAppConsistent))
		} else {
			whyNot = append(whyNot, fmt.Sprintf(reasonNotApp, e.p.KeepAppConsistent))
		}
	}
	switch {
	case len(why) > 0:
		return true, why
	case len(whyNot) > 0:
		return false, whyNot
	default:
		return false, []string{reasonNoRule}
	}
}

// decide says whether the rule keeps points[i], and why or why not.
func (r *bucketRule) decide(i int, pt Point, points []Point) (bool, string) {
	start := r.of(pt.Time)
	name := start.Format(r.layout)
	switch {
	case start.Before(r.first):
		return false, fmt.Sprintf(r.outside, name, r.n)
	case r.newest[start] == i:
		return true, fmt.Sprintf(r.keep, name)
	default:
		return false, fmt.Sprintf(r.notNewest, name, points[r.newest[start]].Seq)
	}
}

// hourOf returns the start of t's UTC hour.
func hourOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), 0, 0, 0, time.UTC)
}

// dayOf returns the start of t's UTC day.
func dayOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}
