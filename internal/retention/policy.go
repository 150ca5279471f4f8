package retention

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Policy says which recovery points of one machine to keep. The rules are
// independent; a point is kept if any rule keeps it (see Apply).
type Policy struct {
	// KeepAll keeps every point newer than now-KeepAll (strictly newer: a
	// point exactly KeepAll old is not kept by this rule). 0 turns it off.
	KeepAll time.Duration `json:"keep_all"`

	// Hourly keeps the newest point of each of the last Hourly UTC hours,
	// the current hour included. 0 turns it off.
	Hourly int `json:"hourly"`

	// Daily keeps the newest point of each of the last Daily UTC days,
	// today included. 0 turns it off.
	Daily int `json:"daily"`

	// Max removes every point older than now-Max (strictly older), whatever
	// the other rules say, except in-use points and the newest point.
	// 0 means no limit. When set it must cover the other rules' windows.
	Max time.Duration `json:"max"`

	// KeepAppConsistent additionally keeps the newest KeepAppConsistent
	// app-consistent points that are not older than Max. 0 turns it off.
	KeepAppConsistent int `json:"keep_app_consistent"`
}

// Defaults returns the default policy: every point of the last hour, hourly
// points for a day, daily points for a week, the 3 newest app-consistent
// points, nothing older than 7 days. This is the only place defaults live.
func Defaults() Policy {
	return Policy{
		KeepAll:           time.Hour,
		Hourly:            24,
		Daily:             7,
		Max:               7 * 24 * time.Hour,
		KeepAppConsistent: 3,
	}
}

// Validate reports every invalid field, each as a *FieldError wrapping
// ErrInvalidPolicy (joined with errors.Join when there are several), or nil.
//
// Besides the ranges of each field, it rejects a policy that keeps nothing
// but the newest point (a typo must not prune a machine's history), and a
// Max shorter than the window of KeepAll, Hourly or Daily (those points
// would be kept and removed at once).
func (p Policy) Validate() error {
	var errs []error
	bad := func(field, value, allowed string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Allowed: allowed})
	}
	if p.KeepAll < 0 {
		bad("KeepAll", p.KeepAll.String(), "0 (off) or a positive duration such as 1h")
	}
	if p.Hourly < 0 {
		bad("Hourly", strconv.Itoa(p.Hourly), "0 (off) or a positive number of hours")
	}
	if p.Daily < 0 {
		bad("Daily", strconv.Itoa(p.Daily), "0 (off) or a positive number of days")
	}
	if p.KeepAppConsistent < 0 {
		bad("KeepAppConsistent", strconv.Itoa(p.KeepAppConsistent), "0 (off) or a positive number of points")
	}
	switch {
	case p.Max < 0:
		bad("Max", p.Max.String(), "0 (no limit) or a positive duration")
	case p.Max > 0:
		if w := p.window(); w > p.Max {
			bad("Max", formatDuration(p.Max), fmt.Sprintf("0 (no limit) or at least %s, the window of KeepAll, Hourly and Daily", formatDuration(w)))
		}
	}
	if len(errs) == 0 && p.KeepAll == 0 && p.Hourly == 0 && p.Daily == 0 && p.KeepAppConsistent == 0 {
		bad("KeepAll, Hourly, Daily, KeepAppConsistent", "all 0",
			"at least one of them positive (a policy that keeps only the newest point is refused)")
	}
	return errors.Join(errs...)
}

// window returns how far back KeepAll, Hourly and Daily can reach. The
// oldest hour bucket starts less than Hourly hours before now, the oldest
// day bucket less than Daily days before now.
func (p Policy) window() time.Duration {
	w := max(p.KeepAll, 0)
	w = max(w, time.Duration(p.Hourly)*time.Hour)
	w = max(w, time.Duration(p.Daily)*24*time.Hour)
	return w
}

// String describes the policy in words, for logs and the console.
func (p Policy) String() string {
	return fmt.Sprintf("keep all within %s, %d hourly, %d daily, %d app-consistent, max %s",
		formatDuration(p.KeepAll), p.Hourly, p.Daily, p.KeepAppConsistent, formatMax(p.Max))
}

func formatMax(d time.Duration) string {
	if d == 0 {
		return "unlimited"
	}
	return formatDuration(d)
}

// formatDuration writes whole days as "7 days" and anything else as
// time.Duration does ("1h0m0s"), so reasons read naturally.
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	default:
		return d.String()
	}
}
