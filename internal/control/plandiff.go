package control

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// DiffPlans says what applying plan to over plan from changes, one line
// a change, for an operator to read (docs/plans.md). A line starts with
// "+" (added), "-" (removed) or "~" (changed):
//
//	~ description: "shop" -> "the shop"
//	+ group app: machines [app01 app02]
//	+ group app: before drain-lb: script [/opt/lb/drain app]
//	~ group db: machines [db01] -> [db01 db02]
//	~ group db: after check: timeout default -> 30m0s
//	- group web
//	~ groups order: [db app] -> [app db]
//	~ drill.every: 24h0m0s -> 12h0m0s
//	+ drill.probes[web01]: http http://web01/health
//
// Only what a plan declares is compared (description, groups, drill), not
// its ID, version or times. From is the zero Plan when the plan is new.
// Both are valid plans (Validate): names are unique where they must be.
// A nil and an empty list are the same. The plan is unchanged exactly
// when there is no line; the answer is never nil.
func DiffPlans(from, to Plan) []string {
	d := planDiff{lines: []string{}}
	switch {
	case from.Description == to.Description:
	case from.Description == "":
		d.add("+ description: %q", to.Description)
	case to.Description == "":
		d.add("- description")
	default:
		d.add("~ description: %q -> %q", from.Description, to.Description)
	}
	d.groups(from.Groups, to.Groups)
	d.drill(from.Drill, to.Drill)
	return d.lines
}

type planDiff struct{ lines []string }

func (d *planDiff) add(format string, a ...any) {
	d.lines = append(d.lines, fmt.Sprintf(format, a...))
}

func (d *planDiff) groups(from, to []PlanGroup) {
	name := func(g PlanGroup) string { return g.Name }
	old, was := named(from, name)
	_, now := named(to, name)
	for _, n := range without(was, now) {
		d.add("- group %s", n)
	}
	for _, g := range to {
		where := "group " + g.Name
		o, ok := old[g.Name]
		if !ok {
			d.add("+ %s: machines %v", where, g.Machines)
			for _, a := range g.Before {
				d.add("+ %s: before %s", where, describeAction(a))
			}
			for _, a := range g.After {
				d.add("+ %s: after %s", where, describeAction(a))
			}
			continue
		}
		if !slices.Equal(o.Machines, g.Machines) {
			d.add("~ %s: machines %v -> %v", where, o.Machines, g.Machines)
		}
		d.actions(where+": before", o.Before, g.Before)
		d.actions(where+": after", o.After, g.After)
	}
	d.order("groups", was, now)
}

// actions compares the actions of one stage of one group, by name.
func (d *planDiff) actions(where string, from, to []PlanAction) {
	name := func(a PlanAction) string { return a.Name }
	old, was := named(from, name)
	_, now := named(to, name)
	for _, n := range without(was, now) {
		d.add("- %s %s", where, n)
	}
	for _, a := range to {
		o, ok := old[a.Name]
		if !ok {
			d.add("+ %s %s", where, describeAction(a))
			continue
		}
		of, nf := actionFields(o), actionFields(a)
		for i := range nf {
			if of[i][1] != nf[i][1] {
				d.add("~ %s %s: %s %s -> %s", where, a.Name, nf[i][0], of[i][1], nf[i][1])
			}
		}
	}
	d.order(where, was, now)
}

// order reports a change of the order of the names both lists hold (an
// addition or a removal alone changes no order).
func (d *planDiff) order(where string, from, to []string) {
	gone, added := without(from, to), without(to, from)
	kept := func(xs, out []string) []string {
		return slices.DeleteFunc(slices.Clone(xs), func(x string) bool { return slices.Contains(out, x) })
	}
	if !slices.Equal(kept(from, gone), kept(to, added)) {
		d.add("~ %s order: %v -> %v", where, from, to)
	}
}

// named indexes xs by name and lists their names in order.
func named[T any](xs []T, name func(T) string) (map[string]T, []string) {
	m := make(map[string]T, len(xs))
	names := make([]string, len(xs))
	for i, x := range xs {
		m[name(x)], names[i] = x, name(x)
	}
	return m, names
}

// without is the names of xs that ys lacks, in order.
func without(xs, ys []string) []string {
	var out []string
	for _, x := range xs {
		if !slices.Contains(ys, x) {
			out = append(out, x)
		}
	}
	return out
}

func (d *planDiff) drill(from, to *DrillPolicy) {
	switch {
	case from == nil && to == nil:
		return
	case to == nil:
		d.add("- drill")
		return
	case from == nil:
		d.add("+ drill: every %s, window %s", to.Every, orDefault(to.Window))
		for _, name := range slices.Sorted(maps.Keys(to.Probes)) {
			d.add("+ drill.probes[%s]: %s", name, to.Probes[name].String())
		}
		return
	}
	if from.Every != to.Every {
		d.add("~ drill.every: %s -> %s", from.Every, to.Every)
	}
	if from.Window != to.Window {
		d.add("~ drill.window: %s -> %s", orDefault(from.Window), orDefault(to.Window))
	}
	names := slices.Sorted(maps.Keys(from.Probes))
	for name := range to.Probes {
		if _, ok := from.Probes[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		o, had := from.Probes[name]
		p, has := to.Probes[name]
		switch was, is := o.String(), p.String(); {
		case !has:
			d.add("- drill.probes[%s]", name)
		case !had:
			d.add("+ drill.probes[%s]: %s", name, is)
		case was != is:
			d.add("~ drill.probes[%s]: %s -> %s", name, was, is)
		}
	}
}

// actionFields are what an action declares, as (field, text) pairs in a
// fixed order, to compare and to show. A field added to PlanAction must be
// added here (TestDiffPlansKnowsEveryField).
func actionFields(a PlanAction) [6][2]string {
	kind, command, instructions := "", "-", "-"
	if a.Script != nil {
		kind, command = "script", fmt.Sprint(a.Script.Command)
	}
	if a.Manual != nil {
		kind, instructions = "manual", fmt.Sprintf("%q", a.Manual.Instructions)
	}
	ops := "all"
	if len(a.Operations) > 0 {
		ops = fmt.Sprint(a.Operations)
	}
	return [6][2]string{
		{"kind", kind}, {"command", command}, {"instructions", instructions},
		{"operations", ops}, {"timeout", orDefault(a.Timeout)}, {"retries", fmt.Sprint(a.Retries)},
	}
}

// describeAction is an added action in one line: its name, what it is,
// and the settings that are not defaults.
func describeAction(a PlanAction) string {
	var b strings.Builder
	b.WriteString(a.Name + ": ")
	switch {
	case a.Script != nil:
		fmt.Fprintf(&b, "script %v", a.Script.Command)
	case a.Manual != nil:
		s := a.Manual.Instructions
		if r := []rune(s); len(r) > 60 {
			s = string(r[:57]) + "..."
		}
		fmt.Fprintf(&b, "manual %q", s)
	}
	if len(a.Operations) > 0 {
		fmt.Fprintf(&b, ", operations %v", a.Operations)
	}
	if a.Timeout != 0 {
		fmt.Fprintf(&b, ", timeout %s", a.Timeout)
	}
	if a.Retries != 0 {
		fmt.Fprintf(&b, ", retries %d", a.Retries)
	}
	return b.String()
}

// String says what the probe checks: "tcp db01:5432", "http URL",
// "command [ARGV]", and its timeout when set.
func (p Probe) String() string {
	var s string
	switch {
	case p.TCP != "":
		s = "tcp " + p.TCP
	case p.HTTP != "":
		s = "http " + p.HTTP
	case len(p.Command) > 0:
		s = fmt.Sprintf("command %v", p.Command)
	}
	if p.Timeout != 0 {
		s += ", timeout " + p.Timeout.String()
	}
	return s
}

func orDefault(d Duration) string {
	if d == 0 {
		return "default"
	}
	return d.String()
}

// PlanProblems lists the problems of an error of Plan.Validate, one a
// line, each naming its field ("groups[1].name: ..."), without the
// "invalid plan: " every one of them starts with.
func PlanProblems(err error) []string {
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		msg := e.Error()
		if errors.Is(e, ErrInvalidPlan) {
			msg = strings.TrimPrefix(msg, ErrInvalidPlan.Error()+": ")
		}
		out = append(out, msg)
	}
	return out
}
