package reporting

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
)

// MaxListed bounds the posting ids a Difference lists in each of Missing,
// Extra and Changed.
const MaxListed = 100

// Totals is a count of events (or postings) and the sum of their points.
type Totals struct {
	Count  int64
	Points int64
}

// Difference is a posting kind whose events in ClickHouse do not match the
// postings in PostgreSQL over the period.
type Difference struct {
	Kind string

	// ClickHouse is what the reports count, each event once (from
	// flows_hourly; see chKinds); Postgres sums, per posting, points
	// plus pending_delta, which is what the posting's event carries.
	ClickHouse, Postgres Totals

	// Missing lists postings without an event in ClickHouse, Extra events
	// whose posting PostgreSQL does not have over the period, Changed
	// postings whose event carries other points; at most MaxListed ids
	// each, in order.
	Missing, Extra, Changed []int64
}

// Postings per kind, in the shape of the events: points plus pending_delta.
const (
	pgKindTotals = `SELECT p.kind, count(*), coalesce(sum(p.points + p.pending_delta), 0)::bigint
		FROM postings p JOIN programs g ON g.id = p.program_id
		WHERE g.code = $1 AND p.occurred_at >= $2 AND p.occurred_at < $3
		GROUP BY p.kind`
	pgKindPostings = `SELECT p.id, p.points + p.pending_delta
		FROM postings p JOIN programs g ON g.id = p.program_id
		WHERE g.code = $1 AND p.kind = $2 AND p.occurred_at >= $3 AND p.occurred_at < $4`
	chKindPostings = `SELECT posting_id, points
		FROM ledger_events FINAL
		WHERE program = ? AND kind = ? AND occurred_at >= ? AND occurred_at < ?
			AND ` + countedEvents
)

// Reconcile compares, kind by kind, the events ClickHouse holds for program
// with the postings of the ledger in PostgreSQL (postings joined to programs
// by code), over the postings and events that occurred in [from, to). It
// returns every kind where the count or the points differ, in order of
// kind, with the posting ids that make the difference; no difference means
// the copy is complete for that period. Events that neither record a
// posting nor move points (expiry notices) are left out, as in the reports;
// an event that moves points without a posting id shows as Extra with id 0.
// from and to are truncated to whole seconds, since ClickHouse keeps no
// fraction of a second.
//
// An event published but not yet inserted by the sink shows as Missing:
// reconcile a period that ended a while ago, or wait for the sink to catch
// up. To find the postings of a kind that differs, Reconcile reads all its
// postings and events of the period: keep periods to a day or a month.
func Reconcile(ctx context.Context, ch driver.Conn, pg *pgxpool.Pool, program string,
	from, to time.Time) ([]Difference, error) {
	if program == "" {
		return nil, errors.New("reconcile: no program")
	}
	from, to = from.UTC().Truncate(time.Second), to.UTC().Truncate(time.Second)
	if !from.Before(to) {
		return nil, fmt.Errorf("reconcile: empty period %s to %s",
			from.Format(time.RFC3339), to.Format(time.RFC3339))
	}

	// Totals per kind on both sides.
	chTotals, err := chKinds(ctx, ch, program, from, to)
	if err != nil {
		return nil, err
	}
	pgTotals, err := pgKinds(ctx, pg, program, from, to)
	if err != nil {
		return nil, err
	}

	// Every kind that differs, with the postings behind the difference.
	var kinds []string
	for k := range chTotals {
		kinds = append(kinds, k)
	}
	for k := range pgTotals {
		if _, ok := chTotals[k]; !ok {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)

	var out []Difference
	for _, kind := range kinds {
		d := Difference{Kind: kind, ClickHouse: chTotals[kind], Postgres: pgTotals[kind]}
		if d.ClickHouse == d.Postgres {
			continue
		}
		if err := d.listPostings(ctx, ch, pg, program, from, to); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// chKinds reads the totals per kind as the reports see them (flowSource:
// flows_hourly and the events at the ends of the period), so that a
// reconciliation checks the figures the back office shows, not only the
// copy of the events.
func chKinds(ctx context.Context, ch driver.Conn, program string,
	from, to time.Time) (map[string]Totals, error) {
	src, args := flowSource(program, from, to, true)
	rows, err := ch.Query(ctx, `SELECT kind, sum(events), sum(gained + lost)
		FROM `+src+` GROUP BY kind`, args...)
	if err != nil {
		return nil, fmt.Errorf("reconcile: read clickhouse: %w", err)
	}
	defer rows.Close()
	out := map[string]Totals{}
	for rows.Next() {
		var kind string
		var n uint64
		var pts int64
		if err := rows.Scan(&kind, &n, &pts); err != nil {
			return nil, fmt.Errorf("reconcile: read clickhouse: %w", err)
		}
		out[kind] = Totals{Count: int64(n), Points: pts}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reconcile: read clickhouse: %w", err)
	}
	return out, nil
}

func pgKinds(ctx context.Context, pg *pgxpool.Pool, program string,
	from, to time.Time) (map[string]Totals, error) {
	rows, err := pg.Query(ctx, pgKindTotals, program, from, to)
	if err != nil {
		return nil, fmt.Errorf("reconcile: read postings: %w", err)
	}
	defer rows.Close()
	out := map[string]Totals{}
	for rows.Next() {
		var kind string
		var t Totals
		if err := rows.Scan(&kind, &t.Count, &t.Points); err != nil {
			return nil, fmt.Errorf("reconcile: read postings: %w", err)
		}
		out[kind] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reconcile: read postings: %w", err)
	}
	return out, nil
}

// listPostings fills Missing, Extra and Changed by reading the postings and
// events of d's kind.
func (d *Difference) listPostings(ctx context.Context, ch driver.Conn, pg *pgxpool.Pool,
	program string, from, to time.Time) error {
	inPG := map[int64]int64{}
	rows, err := pg.Query(ctx, pgKindPostings, program, d.Kind, from, to)
	if err != nil {
		return fmt.Errorf("reconcile: read %s postings: %w", d.Kind, err)
	}
	for rows.Next() {
		var id, pts int64
		if err := rows.Scan(&id, &pts); err != nil {
			rows.Close()
			return fmt.Errorf("reconcile: read %s postings: %w", d.Kind, err)
		}
		inPG[id] = pts
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reconcile: read %s postings: %w", d.Kind, err)
	}

	inCH := map[int64]bool{}
	crows, err := ch.Query(ctx, chKindPostings, program, d.Kind, from, to)
	if err != nil {
		return fmt.Errorf("reconcile: read %s events: %w", d.Kind, err)
	}
	defer crows.Close()
	for crows.Next() {
		var id, pts int64
		if err := crows.Scan(&id, &pts); err != nil {
			return fmt.Errorf("reconcile: read %s events: %w", d.Kind, err)
		}
		want, ok := inPG[id]
		switch {
		case !ok || inCH[id]:
			// Not in the ledger, or a second event for one posting.
			d.Extra = append(d.Extra, id)
		case want != pts:
			d.Changed = append(d.Changed, id)
		}
		inCH[id] = true
	}
	if err := crows.Err(); err != nil {
		return fmt.Errorf("reconcile: read %s events: %w", d.Kind, err)
	}
	for id := range inPG {
		if !inCH[id] {
			d.Missing = append(d.Missing, id)
		}
	}

	d.Missing, d.Extra, d.Changed = firstIDs(d.Missing), firstIDs(d.Extra), firstIDs(d.Changed)
	return nil
}

// firstIDs sorts ids, drops repeats and keeps the first MaxListed.
func firstIDs(ids []int64) []int64 {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > MaxListed {
		ids = ids[:MaxListed]
	}
	return ids
}
