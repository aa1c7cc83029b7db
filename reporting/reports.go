package reporting

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/puntos-loyalty/puntos/core"
)

// Reports cover the events that record a posting or move points; events
// that do neither, such as expiry notices (kind expiry_notice, 0 points, no
// posting), are stored but left out of every figure, counts included.
const countedEvents = "(posting_id != 0 OR points != 0)"

// Where the figures come from. The reports of flows and liabilities sum
// flows_hourly (migration 0003): per program, UTC hour, kind and dimension,
// the points gained, the points lost and the events, kept up to date by a
// materialized view on ledger_events, each event once (see InsertEvents),
// plus flows_backfill, the same sums of the events stored before the view
// existed. Reading a few rows per hour instead of every event with FINAL is
// what keeps them under a second at a hundred million events.
//
// Two things the hourly rows cannot give come from the events themselves:
//
//   - A bound that is not a whole UTC hour: the hours inside the period come
//     from flows_hourly and the pieces of hour at either end from
//     ledger_events, each event once (GROUP BY event_id over that sliver).
//   - Buckets in a zone whose offset from UTC is not a whole number of hours
//     at some instant (Asia/Kolkata, Australia/Adelaide): an hour of UTC may
//     then straddle two local days, so the whole report reads ledger_events
//     with FINAL, as every report did before the hourly table.

// Bucket is the width of a report's time buckets.
type Bucket string

// Buckets. A week starts on Monday.
const (
	Day   Bucket = "day"
	Week  Bucket = "week"
	Month Bucket = "month"
)

// bucketExpr is the ClickHouse expression of a bucket: the date, in the
// program's time zone, of the bucket's first day. ClickHouse 18.16 has no
// toStartOfWeek; toMonday is its ISO week start.
var bucketExpr = map[Bucket]string{
	Day:   "toDate(at, ?)",
	Week:  "toMonday(at, ?)",
	Month: "toStartOfMonth(at, ?)",
}

// FlowQuery asks for the point flows of a period.
type FlowQuery struct {
	// Program is a program code; empty means every program.
	Program string

	// TimeZone is the IANA name of the zone that buckets are cut in: the
	// program's own (programs.time_zone, America/Santiago for the operator).
	TimeZone string

	// Bucket is day, week or month.
	Bucket Bucket

	// From and To bound the events by occurred_at, From included and To
	// excluded, truncated to whole seconds; a zero time leaves that side
	// open. Pass the first instants of buckets to get whole buckets.
	From, To time.Time
}

// Flows is what moved in one program over one bucket, in points. The
// columns other than Net are magnitudes, positive in the usual case, and
// add up to Net:
//
//	Net = Issued - Redeemed - Expired - AdjustedDown - ClawedBack + Returned
//	      - Forfeited + Moved
//
// An event's points are its posting's change to available plus pending
// points (bus.Event), which decides how holds show:
//
//   - Issued: accrual, credit and positive adjustment events. Accruals still
//     pending count when they are earned; a maturation moves them from
//     pending to available and is worth 0.
//   - Redeemed: minus the points of redemption, hold, capture and release
//     events. A hold counts as redeemed when it is placed (its points leave
//     available for held); a release gives the unused part back in the
//     bucket where it happens, so a bucket can show less than its
//     redemptions; a capture is worth 0, since its points left at the hold.
//   - Expired: minus the points of expiry events.
//   - AdjustedDown: minus the points of negative adjustments.
//   - ClawedBack: minus the points of negative reversals (an accrual or
//     credit undone, as after a refund of the purchase).
//   - Returned: the points of positive reversals (a redemption undone).
//   - Forfeited: minus the points of forfeit events (a closed account).
//   - Moved: the points of every other event: transfers and merges between
//     members of the program, which add up to 0 over the program, and any
//     kind this report does not know yet, so that nothing drops out of Net.
//   - Net: the sum of all points, the change over the bucket in what
//     members have available and pending (Outstanding less Held).
type Flows struct {
	Program string

	// Start is the bucket's first day at midnight in the query's time zone
	// (the first instant of that day, when midnight was skipped by a
	// daylight-saving change).
	Start time.Time

	Issued, Redeemed, Expired, AdjustedDown, ClawedBack, Returned, Forfeited, Moved int64

	Net int64

	// Events counts the events, each once; notices are not counted.
	Events uint64
}

// flowsColumns computes the Flows columns, see Flows for their meaning,
// from the rows of a flowSource: gained and lost are the positive and the
// negative points of a kind, whose sum is the kind's points.
var flowsColumns = fmt.Sprintf(`
	sumIf(gained + lost, kind IN (%[1]s)) + sumIf(gained, kind = %[2]s) AS issued,
	-sumIf(gained + lost, kind IN (%[3]s)) AS redeemed,
	-sumIf(gained + lost, kind = %[4]s) AS expired,
	-sumIf(lost, kind = %[2]s) AS adjusted_down,
	-sumIf(lost, kind = %[5]s) AS clawed_back,
	sumIf(gained, kind = %[5]s) AS returned,
	-sumIf(gained + lost, kind = %[6]s) AS forfeited,
	sumIf(gained + lost, kind NOT IN (%[1]s, %[2]s, %[3]s, %[4]s, %[5]s, %[6]s)) AS moved,
	sum(gained + lost) AS net,
	sum(events) AS events`,
	quoteList(core.PostAccrual, core.PostCredit), quoteList(core.PostAdjustment),
	quoteList(core.PostRedemption, core.PostHold, core.PostCapture, core.PostRelease),
	quoteList(core.PostExpiry), quoteList(core.PostReversal), quoteList(core.PostForfeit))

// sourceColumns are the columns of every row a flowSource yields: at is an
// hour (or, from the events, the instant) the points occurred in, and events
// counts the events behind the row.
const sourceColumns = `program, at, kind, channel, rule_version, partner, tier,
	gained, lost, events`

// Each part of a flowSource casts its columns to the same types, which a
// UNION ALL of ClickHouse 18.16 requires.
const (
	hourlyPart = `SELECT program, hour AS at, kind, channel, rule_version, partner, tier,
		gained, lost, events FROM %s WHERE %s`
	eventsPart = `SELECT program, occurred_at AS at, kind, channel, rule_version, partner,
		tier, if(points > 0, points, 0) AS gained, if(points < 0, points, 0) AS lost,
		toUInt64(1) AS events
	FROM %s WHERE %s`
	// eachOnce is ledger_events with each event once, for the short pieces
	// of hour at the ends of a period, where grouping by id costs less than
	// FINAL over the partition.
	eachOnce = `(SELECT event_id, any(program) AS program, any(occurred_at) AS occurred_at,
		any(kind) AS kind, any(channel) AS channel, any(rule_version) AS rule_version,
		any(partner) AS partner, any(tier) AS tier, any(points) AS points,
		any(posting_id) AS posting_id
	FROM (SELECT event_id, program, occurred_at, kind, channel, rule_version, partner, tier,
			points, posting_id
		FROM ledger_events WHERE %s)
	GROUP BY event_id)`
)

// flowSource is a subquery, with its arguments, whose rows (sourceColumns)
// add up to the counted events of program (any, when empty) that occurred in
// [from, to), each event once; a zero bound leaves that side open. hourly
// says whether it may use flows_hourly: callers pass false when they bucket
// in a zone without whole-hour offsets.
func flowSource(program string, from, to time.Time, hourly bool) (string, []any) {
	from, to = clampPeriod(from, to)
	from, to = from.UTC().Truncate(time.Second), to.UTC().Truncate(time.Second)
	if !hourly {
		where, args := periodFilter(program, from, to)
		return "(" + fmt.Sprintf(eventsPart, "ledger_events FINAL", where) + ")", args
	}

	// Whole hours [a, b) from the hourly tables, the rest from the events.
	a, b := from, to
	if !from.IsZero() {
		a = from.Truncate(time.Hour)
		if a.Before(from) {
			a = a.Add(time.Hour)
		}
	}
	if !to.IsZero() {
		b = to.Truncate(time.Hour)
	}
	var edges [][2]time.Time
	if !a.IsZero() && !b.IsZero() && !a.Before(b) {
		// No whole hour inside: all from the events.
		edges = append(edges, [2]time.Time{from, to})
	} else {
		if a != from {
			edges = append(edges, [2]time.Time{from, a})
		}
		if b != to {
			edges = append(edges, [2]time.Time{b, to})
		}
	}

	var parts []string
	var args []any
	if len(edges) == 0 || edges[0] != [2]time.Time{from, to} {
		where, wargs := spanFilter(program, "hour", a, b)
		for _, table := range []string{"flows_hourly", "flows_backfill FINAL"} {
			parts = append(parts, fmt.Sprintf(hourlyPart, table, where))
			args = append(args, wargs...)
		}
	}
	if len(edges) > 0 {
		var spans []string
		var inner []any
		if program != "" {
			inner = append(inner, program)
		}
		for _, e := range edges {
			spans = append(spans, "(occurred_at >= ? AND occurred_at < ?)")
			inner = append(inner, e[0], e[1])
		}
		cond := "(" + strings.Join(spans, " OR ") + ")"
		if program != "" {
			cond = "program = ? AND " + cond
		}
		parts = append(parts, fmt.Sprintf(eventsPart, fmt.Sprintf(eachOnce, cond),
			countedEvents))
		args = append(args, inner...)
	}
	return "(" + strings.Join(parts, "\n\tUNION ALL\n\t") + ")", args
}

// hourlyZones caches wholeHours by zone name.
var hourlyZones sync.Map // string -> bool

// wholeHours tells whether loc's offset from UTC is a whole number of hours
// at every instant ClickHouse's DateTime can hold (1970 to 2106), so that
// every UTC hour falls inside one local day.
func wholeHours(loc *time.Location) bool {
	if v, ok := hourlyZones.Load(loc.String()); ok {
		return v.(bool)
	}
	ok := true
	for t := minDateTime; t.Before(maxDateTime); {
		if _, offset := t.In(loc).Zone(); offset%3600 != 0 {
			ok = false
			break
		}
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || !end.After(t) {
			break
		}
		t = end
	}
	hourlyZones.Store(loc.String(), ok)
	return ok
}

// PointFlows reports the flows of q's period per program and bucket, in
// order of program and bucket. Buckets without events are left out.
func PointFlows(ctx context.Context, conn driver.Conn, q FlowQuery) ([]Flows, error) {
	expr, ok := bucketExpr[q.Bucket]
	if !ok {
		return nil, fmt.Errorf("point flows: bucket %q: want day, week or month", q.Bucket)
	}
	loc, err := zone(q.TimeZone)
	if err != nil {
		return nil, fmt.Errorf("point flows: %w", err)
	}

	src, args := flowSource(q.Program, q.From, q.To, wholeHours(loc))
	query := `SELECT program, ` + expr + ` AS bucket, ` + flowsColumns + `
		FROM ` + src + `
		GROUP BY program, bucket
		ORDER BY program, bucket`
	rows, err := conn.Query(ctx, query, append([]any{q.TimeZone}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("point flows: %w", err)
	}
	defer rows.Close()

	var out []Flows
	for rows.Next() {
		var f Flows
		var day time.Time
		err := rows.Scan(&f.Program, &day, &f.Issued, &f.Redeemed, &f.Expired,
			&f.AdjustedDown, &f.ClawedBack, &f.Returned, &f.Forfeited, &f.Moved, &f.Net,
			&f.Events)
		if err != nil {
			return nil, fmt.Errorf("point flows: %w", err)
		}
		f.Start = startOfDay(day, loc)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("point flows: %w", err)
	}
	return out, nil
}

// Outstanding is what one program owes its members at an instant.
type Outstanding struct {
	Program string

	// Points is the sum of the points of every event that occurred before
	// the instant: the members' available plus pending points, debts
	// included, and once AddHeld has run, Held too. Events alone leave
	// held points out: a hold counts as spent when placed (see
	// Flows.Redeemed), and a release brings the unused part back.
	Points int64

	// Held is what holds open at the instant reserve (partner payments and
	// conversions not yet settled), read from the ledger by AddHeld: the
	// members still own those points, so they are owed.
	Held int64

	// Events counts the events summed, each once.
	Events uint64
}

// Liabilities reports, per program in order of code, the points outstanding
// at the instant at (events with occurred_at before it, to the second); a
// zero at means every event stored.
func Liabilities(ctx context.Context, conn driver.Conn, at time.Time) ([]Outstanding, error) {
	src, args := flowSource("", time.Time{}, at, true)
	rows, err := conn.Query(ctx, `SELECT program, sum(gained + lost), sum(events)
		FROM `+src+`
		GROUP BY program
		ORDER BY program`, args...)
	if err != nil {
		return nil, fmt.Errorf("liabilities: %w", err)
	}
	defer rows.Close()

	var out []Outstanding
	for rows.Next() {
		var o Outstanding
		if err := rows.Scan(&o.Program, &o.Points, &o.Events); err != nil {
			return nil, fmt.Errorf("liabilities: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("liabilities: %w", err)
	}
	return out, nil
}

// periodFilter is the condition, with its arguments, that keeps the
// counted events of program (any, when empty) that occurred in [from, to);
// a zero bound is left out.
// clampPeriod brings the bounds of a period [from, to) (zero: no bound)
// into what ClickHouse's DateTime holds, 1970 to early 2106: it reads a time
// outside as another time (1969-12-31 23:00 as 1970-01-01 23:00, 1960 as
// zero), and a report over a period reaching past either end lost events
// without a word. No event is stored outside, so a bound before 1970 or
// after 2106 is no bound, and a period that ends before 1970 or starts
// after 2106 holds nothing.
func clampPeriod(from, to time.Time) (time.Time, time.Time) {
	if (!to.IsZero() && !to.After(minDateTime)) || (!from.IsZero() && from.After(maxDateTime)) {
		return minDateTime, minDateTime // [1970, 1970): empty, however read
	}
	if !from.IsZero() && from.Before(minDateTime) {
		from = time.Time{}
	}
	if !to.IsZero() && to.After(maxDateTime) {
		to = time.Time{}
	}
	return from, to
}

func periodFilter(program string, from, to time.Time) (string, []any) {
	from, to = clampPeriod(from, to)
	cond, args := spanFilter(program, "occurred_at", from, to)
	return countedEvents + " AND " + cond, args
}

// spanFilter is the condition, with its arguments, that keeps the rows of
// program (any, when empty) whose column timeCol is in [from, to).
func spanFilter(program, timeCol string, from, to time.Time) (string, []any) {
	conds := []string{"1"}
	var args []any
	if program != "" {
		conds = append(conds, "program = ?")
		args = append(args, program)
	}
	if !from.IsZero() {
		conds = append(conds, timeCol+" >= ?")
		args = append(args, from.UTC().Truncate(time.Second))
	}
	if !to.IsZero() {
		conds = append(conds, timeCol+" < ?")
		args = append(args, to.UTC().Truncate(time.Second))
	}
	return strings.Join(conds, " AND "), args
}

// startOfDay is the first instant of date's day (its year, month and
// day, whatever its zone) in loc (core.StartOfDay).
func startOfDay(date time.Time, loc *time.Location) time.Time {
	y, m, d := date.Date()
	return core.StartOfDay(y, m, d, loc)
}

// zone loads an IANA time zone that ClickHouse knows by the same name.
func zone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("time zone %q: want an IANA name such as America/Santiago", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", name, err)
	}
	return loc, nil
}

// quoteList writes strings as a list of ClickHouse string literals. It is
// meant for the package's own constants, which hold no quote.
func quoteList(ss ...string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = "'" + s + "'"
	}
	return strings.Join(q, ", ")
}

// RebuildFlows sums again, from ledger_events with FINAL, the hourly flows
// of the UTC month that month falls in, and puts them in place of what
// flows_hourly and flows_backfill hold for that month. It is the repair for
// a month whose figures Reconcile finds above the ledger's with no event
// listed as extra: an event that two sink processes stored at the same
// moment (see "Exactly once" in schema.go), or an insert whose view failed
// after its rows were written. Events stored in that month while it runs
// may be left out of the sums: pause the sinks, or rebuild a month that no
// longer receives events. Reading the month with FINAL takes about as long
// as a report took before flows_hourly existed, a second or so per few
// million events.
func RebuildFlows(ctx context.Context, conn driver.Conn, month time.Time) error {
	y, m, _ := month.UTC().Date()
	part := y*100 + int(m)
	steps := []string{
		`CREATE TABLE IF NOT EXISTS flows_rebuild AS flows_hourly`,
		fmt.Sprintf(`ALTER TABLE flows_rebuild DROP PARTITION %d`, part),
		fmt.Sprintf(`INSERT INTO flows_rebuild (program, hour, kind, channel, rule_version,
			partner, tier, gained, lost, events)
		SELECT program, toStartOfHour(occurred_at) AS hour, kind, channel, rule_version,
			partner, tier, sum(if(points > 0, points, 0)), sum(if(points < 0, points, 0)),
			count()
		FROM ledger_events FINAL
		WHERE toYYYYMM(occurred_at) = %d AND %s
		GROUP BY program, hour, kind, channel, rule_version, partner, tier`, part, countedEvents),
		fmt.Sprintf(`ALTER TABLE flows_backfill DROP PARTITION %d`, part),
		fmt.Sprintf(`ALTER TABLE flows_hourly REPLACE PARTITION %d FROM flows_rebuild`, part),
		fmt.Sprintf(`ALTER TABLE flows_rebuild DROP PARTITION %d`, part),
	}
	for _, stmt := range steps {
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("rebuild flows of %d: %w", part, err)
		}
	}
	return nil
}
