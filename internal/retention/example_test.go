package retention_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/standby-dr/standby/internal/retention"
)

// The worked example of doc.go, checked.
func ExampleApply() {
	at := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	now := at("2026-11-27T10:30:00Z")
	points := []retention.Point{
		{Seq: 10, Time: at("2026-11-27T10:20:00Z")},
		{Seq: 9, Time: at("2026-11-27T10:05:00Z"), AppConsistent: true},
		{Seq: 8, Time: at("2026-11-27T09:50:00Z")},
		{Seq: 7, Time: at("2026-11-27T09:10:00Z")},
		{Seq: 6, Time: at("2026-11-26T23:40:00Z"), AppConsistent: true},
		{Seq: 5, Time: at("2026-11-26T23:10:00Z")},
		{Seq: 4, Time: at("2026-11-25T12:00:00Z")},
		{Seq: 3, Time: at("2026-11-25T08:00:00Z"), AppConsistent: true},
		{Seq: 2, Time: at("2026-11-18T10:00:00Z"), InUse: true},
		{Seq: 1, Time: at("2026-11-10T10:00:00Z")},
	}
	keep, remove := retention.Apply(points, retention.Defaults(), now)
	for _, d := range keep {
		fmt.Printf("keep   %2d  %s\n", d.Seq, strings.Join(d.Reasons, "; "))
	}
	for _, d := range remove {
		fmt.Printf("remove %2d  %s\n", d.Seq, strings.Join(d.Reasons, "; "))
	}
	// Output:
	// keep   10  newest point; within 1h0m0s; newest in hour 2026-11-27T10; newest in day 2026-11-27
	// keep    9  within 1h0m0s; one of the 3 newest app-consistent
	// keep    8  within 1h0m0s; newest in hour 2026-11-27T09
	// keep    6  newest in hour 2026-11-26T23; newest in day 2026-11-26; one of the 3 newest app-consistent
	// keep    4  newest in day 2026-11-25
	// keep    3  one of the 3 newest app-consistent
	// keep    2  in use by an export or test failover
	// remove  7  older than 1h0m0s; not the newest in hour 2026-11-27T09 (seq 8 is); not the newest in day 2026-11-27 (seq 10 is)
	// remove  5  older than 1h0m0s; not the newest in hour 2026-11-26T23 (seq 6 is); not the newest in day 2026-11-26 (seq 6 is)
	// remove  1  older than 7 days
}
