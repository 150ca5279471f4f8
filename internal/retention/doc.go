// Package retention decides which recovery points of a machine to keep
// (DESIGN §5: retention bounded by policy, with thinning; pruning never
// breaks a point in use). It is a pure policy: Apply is a function of the
// points, the Policy and now, imports only the standard library, and
// returns every decision with its reasons, which the console and the CLI
// show (restic's ApplyPolicy is the model).
//
// Glossary:
//
//   - Point: a recovery point as the policy sees it: sequence, time,
//     app-consistency, tags, whether an export or test failover uses it.
//   - Policy: the rules. KeepAll keeps every point of the recent past;
//     Hourly and Daily thin older points to the newest of each UTC hour and
//     day; KeepAppConsistent keeps the newest app-consistent points; Max
//     bounds the history. Defaults returns the default policy.
//   - Decision: a point with the reasons it is kept, or removed.
//
// Two safety rules beat every other rule, Max included: the newest point is
// always kept, and an in-use point is always kept. An invalid policy removes
// nothing. The rules are independent; a point is kept if any keeps it, and
// its Decision lists each one that does.
//
// # Worked example
//
// Now is 2026-11-27T10:30Z and the policy is Defaults(): keep all within 1h,
// newest of each of the last 24 hours and 7 days, the 3 newest
// app-consistent points, nothing older than 7 days. Points marked (a) are
// app-consistent, (u) in use:
//
//	seq time (UTC)          decision and reasons
//	 10 11-27 10:20         keep: newest point; within 1h0m0s; newest in hour 2026-11-27T10; newest in day 2026-11-27
//	  9 11-27 10:05 (a)     keep: within 1h0m0s; one of the 3 newest app-consistent
//	  8 11-27 09:50         keep: within 1h0m0s; newest in hour 2026-11-27T09
//	  7 11-27 09:10         remove: older than 1h0m0s; not the newest in hour 2026-11-27T09 (seq 8 is); not the newest in day 2026-11-27 (seq 10 is)
//	  6 11-26 23:40 (a)     keep: newest in hour 2026-11-26T23; newest in day 2026-11-26; one of the 3 newest app-consistent
//	  5 11-26 23:10         remove: older than 1h0m0s; not the newest in hour 2026-11-26T23 (seq 6 is); not the newest in day 2026-11-26 (seq 6 is)
//	  4 11-25 12:00         keep: newest in day 2026-11-25
//	  3 11-25 08:00 (a)     keep: one of the 3 newest app-consistent
//	  2 11-18 10:00 (u)     keep: in use by an export or test failover
//	  1 11-10 10:00         remove: older than 7 days
//
// Seq 4 is too old for an hourly bucket but is its day's newest; seq 2 is
// older than Max but in use; seq 7 and 5 are thinned out. ExampleApply runs
// this example.
//
// # Boundaries
//
// KeepAll keeps points strictly newer than now-KeepAll; Max removes points
// strictly older than now-Max, so a point exactly Max old stays. Hour and
// day buckets are UTC; "the last N hours" are the current hour and the N-1
// before it. Points with equal times are ordered by Seq (higher is newer),
// so the result never depends on input order. A point newer than now (clock
// skew) is kept: the policy does not delete what it cannot date.
//
// # Why Apply is idempotent
//
// Every keep reason survives removing the removed points: the newest point
// stays the newest; a bucket's newest point stays its newest; the newest N
// app-consistent points within Max stay the newest N; the other reasons
// depend on the point alone. So the next pruning run, with the same now,
// removes nothing more — pruning does not creep.
package retention
