package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/clickhouse"
)

const reconcileUsage = `Usage: puntos reconcile --program CODE --from T [--to T] [--rebuild] [flags]

Compares what the reports count (the events in ClickHouse) with the
ledger's postings (PostgreSQL) for one program over [from, to), kind by
kind, and names the postings that make each difference: missing from the
reports (after an outage of the reporting sink longer than
PUNTOS_EVENTS_MAX_AGE, say), extra, or with other points. T is an RFC 3339
instant or a date (that day's first instant in the program's time zone, as
the reports count days); to defaults to five
minutes ago, as the sink copies an event a moment after the ledger writes
it. Keep periods to a day or a month. Exits 1 when they differ.

--rebuild first sums again, from the events ClickHouse holds, the hourly
flows of each month (UTC) the period touches, of every program: the repair
for figures above
the ledger's with no event listed as extra (an event two sinks stored at
the same moment). Pause the reporting sinks while it runs. It cannot bring
back events the reports never received.

The other flags are the settings naming the databases (PUNTOS_DATABASE_URL,
PUNTOS_CLICKHOUSE_ADDR, PUNTOS_CLICKHOUSE_DB), as for 'puntos run'.
`

// runReconcile compares the reports' copy of a program's postings with the
// ledger, and with --rebuild repairs the hourly flows first.
func runReconcile(ctx context.Context, args []string, getenv func(string) string,
	stdout, stderr io.Writer) error {
	if slices.ContainsFunc(args, func(a string) bool {
		return a == "-h" || a == "-help" || a == "--help" || a == "help"
	}) {
		fmt.Fprint(stdout, reconcileUsage)
		return nil
	}
	var rebuild bool
	args = slices.DeleteFunc(args, func(a string) bool {
		if a == "--rebuild" || a == "-rebuild" {
			rebuild = true
			return true
		}
		return false
	})
	var own []string
	for _, name := range []string{"program", "from", "to"} {
		var got []string
		args, got = splitFlag(args, name)
		if len(got) > 2 {
			// Two periods or two programs: which one was meant is not ours
			// to guess.
			return fmt.Errorf("reconcile: --%s is given more than once", name)
		}
		own = append(own, got...)
	}
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	program := fs.String("program", "", "the program's code")
	fromArg := fs.String("from", "", "start of the period (included)")
	toArg := fs.String("to", "", "end of the period (excluded); default five minutes ago")
	if err := fs.Parse(own); err != nil {
		return err
	}
	if *program == "" || *fromArg == "" {
		fmt.Fprint(stderr, reconcileUsage)
		return errors.New("reconcile: --program and --from are required")
	}
	// The forms are checked before any connection; dates are read in the
	// program's zone once it is known.
	for _, f := range []struct{ name, v string }{{"from", *fromArg}, {"to", *toArg}} {
		if f.v != "" {
			if _, err := reconcileInstant(f.name, f.v, time.UTC); err != nil {
				return err
			}
		}
	}
	cfg, _, err := app.LoadConfig("reconcile", args, getenv, stderr)
	if err != nil {
		return err
	}
	if cfg.ClickHouseAddr == "" {
		return errors.New("reconcile: reporting is off (PUNTOS_CLICKHOUSE_ADDR): " +
			"there is no copy to compare")
	}
	pool, err := postgres.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	var zone string
	err = pool.QueryRow(ctx, `SELECT time_zone FROM programs WHERE code = $1`,
		*program).Scan(&zone)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("reconcile: --program: the ledger has no program %q", *program)
	}
	if err != nil {
		return fmt.Errorf("reconcile: read programs: %w", err)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return fmt.Errorf("reconcile: program %s: time zone %q: %w", *program, zone, err)
	}
	from, err := reconcileInstant("from", *fromArg, loc)
	if err != nil {
		return err
	}
	to := time.Now().Add(-5 * time.Minute).Truncate(time.Second)
	if *toArg != "" {
		if to, err = reconcileInstant("to", *toArg, loc); err != nil {
			return err
		}
	}
	if !from.Before(to) {
		return fmt.Errorf("reconcile: --to (%s) must come after --from (%s)",
			to.Format(time.RFC3339), from.Format(time.RFC3339))
	}

	conn, err := clickhouse.Open(ctx, cfg.ClickHouseAddr, cfg.ClickHouseDB)
	if err != nil {
		return err
	}
	defer conn.Close()

	if rebuild {
		for m := time.Date(from.Year(), from.Month(), 1, 0, 0, 0, 0, time.UTC); m.Before(to); m = m.AddDate(0, 1, 0) {
			if err := reporting.RebuildFlows(ctx, conn, m); err != nil {
				return fmt.Errorf("reconcile: rebuild %s: %w", m.Format("2006-01"), err)
			}
			fmt.Fprintf(stdout, "hourly flows of %s summed again from the events\n",
				m.Format("2006-01"))
		}
	}
	diffs, err := reporting.Reconcile(ctx, conn, pool, *program, from, to)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "program %s, %s to %s:\n", *program, from.Format(time.RFC3339),
		to.Format(time.RFC3339))
	if len(diffs) == 0 {
		fmt.Fprintln(stdout, "the reports count every posting of the ledger, once")
		return nil
	}
	for _, d := range diffs {
		fmt.Fprintf(stdout, "%s: the ledger has %d postings of %d points, the reports "+
			"%d events of %d points\n", d.Kind, d.Postgres.Count, d.Postgres.Points,
			d.ClickHouse.Count, d.ClickHouse.Points)
		for _, l := range []struct {
			what string
			ids  []int64
		}{{"missing from the reports", d.Missing}, {"in the reports, not in the ledger",
			d.Extra}, {"with other points in the reports", d.Changed}} {
			if len(l.ids) > 0 {
				fmt.Fprintf(stdout, "  postings %s: %s\n", l.what, idList(l.ids))
			}
		}
		if len(d.Missing)+len(d.Extra)+len(d.Changed) == 0 {
			fmt.Fprintln(stdout, "  no posting listed: an event counted twice; "+
				"--rebuild sums the month again")
		}
	}
	return fmt.Errorf("reconcile: the reports differ from the ledger in %d kinds of posting",
		len(diffs))
}

// reconcileInstant reads an RFC 3339 instant, or a date as its first
// instant in the program's zone (loc).
func reconcileInstant(field, v string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return core.StartOfDay(t.Year(), t.Month(), t.Day(), loc).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("reconcile: --%s: %q is neither an RFC 3339 instant "+
		"(2026-09-01T00:00:00-04:00) nor a date (2026-09-01)", field, v)
}

// idList writes posting ids, and says when Reconcile listed no more.
func idList(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	out := strings.Join(s, " ")
	if len(ids) == reporting.MaxListed {
		out += " (the first " + fmt.Sprint(reporting.MaxListed) + ")"
	}
	return out
}
