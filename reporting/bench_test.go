package reporting_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// The issue asks for the liability and monthly flow reports over 100
// million events, under a second each, warm. ClickHouse makes the events
// itself (INSERT ... SELECT from system.numbers), 5 million per insert, at
// about 1.5 million a second on the 2-core machine: 100 million take a
// minute or two and about 2.5 GB of disk. `make bench` runs every benchmark
// of the repository, so the default here is 10 million;
// PUNTOS_BENCH_EVENTS=100000000 measures the size (see
// docs/benchmarks.md, "Reports").
const (
	benchDefaultEvents = 10_000_000
	benchChunk         = 5_000_000

	// benchFromEventsMax is the largest table on which the benchmark also
	// times the monthly report read from the events with FINAL (the way
	// every report read before flows_hourly), for comparison: it takes
	// about a second per million events.
	benchFromEventsMax = 10_000_000
)

// benchLoad is the server-side generator of made-up events numbered from
// ? (offset) for ? (count) rows, spread evenly over four years from 2022
// across 4 programs and a million members. Kinds cycle: accrual 100,
// redemption -50, expiry -10, adjustment ±5, credit 20. The materialized
// view sums them into flows_hourly as they go in.
const benchLoad = `INSERT INTO ledger_events (event_id, kind, program, member, member_ref,
		points, occurred_at, recorded_at, source, txn_id, rule_version, partner, channel,
		posting_id)
	SELECT toString(n), kinds[n %% 5 + 1], concat('p', toString(n %% 4)),
		toString(n %% 1000000), '', pts[n %% 5 + 1] * if(n %% 5 = 3 AND n %% 2 = 1, -1, 1),
		toDateTime(1640995200 + intDiv(n * 126230400, %[1]d)),
		toDateTime(1640995200 + intDiv(n * 126230400, %[1]d)),
		'bench', toString(n), '', '', 'web', toInt64(n + 1)
	FROM (SELECT number + %[2]d AS n,
		['accrual', 'redemption', 'expiry', 'adjustment', 'credit'] AS kinds,
		[100, -50, -10, 5, 20] AS pts
		FROM system.numbers LIMIT %[3]d)`

// BenchmarkReports times, warm, over a table of PUNTOS_BENCH_EVENTS events
// (default 10 million): the liability report (every program, all events),
// the liability at an instant inside an hour (which also reads that piece
// of hour from the events), and the monthly flows report (issued, redeemed
// and the rest per program and month, in Santiago). It checks that the
// liability equals the plain sum of the events' points.
func BenchmarkReports(b *testing.B) {
	n := benchDefaultEvents
	if v := os.Getenv("PUNTOS_BENCH_EVENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("PUNTOS_BENCH_EVENTS=%q: want a positive number", v)
		}
	}
	conn, _ := chtest.Database(b)
	ctx := b.Context()
	if err := reporting.Migrate(ctx, conn); err != nil {
		b.Fatal(err)
	}

	// Load, server-side, in chunks.
	start := time.Now()
	for off := 0; off < n; off += benchChunk {
		count := min(benchChunk, n-off)
		if err := conn.Exec(ctx, fmt.Sprintf(benchLoad, n, off, count)); err != nil {
			b.Fatalf("load events %d to %d: %v", off, off+count, err)
		}
	}
	load := time.Since(start)
	var stored uint64
	var total int64
	err := conn.QueryRow(ctx, `SELECT count(), sum(points) FROM ledger_events`).Scan(&stored,
		&total)
	if err != nil {
		b.Fatal(err)
	}
	if stored != uint64(n) {
		b.Fatalf("%d events stored; want %d", stored, n)
	}
	var hourly uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM flows_hourly`).Scan(&hourly); err != nil {
		b.Fatal(err)
	}

	flowsQ := reporting.FlowQuery{TimeZone: "America/Santiago", Bucket: reporting.Month}
	liability := func(at time.Time) func() {
		return func() {
			out, err := reporting.Liabilities(ctx, conn, at)
			if err != nil || len(out) != 4 {
				b.Fatalf("liabilities: %d programs, %v", len(out), err)
			}
			if !at.IsZero() {
				return
			}
			var sum int64
			for _, o := range out {
				sum += o.Points
			}
			if sum != total {
				b.Fatalf("liabilities add up to %d; the events to %d", sum, total)
			}
		}
	}
	monthly := func(q reporting.FlowQuery) func() {
		return func() {
			out, err := reporting.PointFlows(ctx, conn, q)
			if err != nil || len(out) < 4*48 {
				b.Fatalf("monthly flows: %d rows, %v", len(out), err)
			}
		}
	}
	timeIt := func(f func()) time.Duration {
		f() // warm
		t0 := time.Now()
		f()
		return time.Since(t0)
	}
	// Inside the data, 34 minutes and 56 seconds into an hour.
	inside := time.Date(2024, 6, 15, 12, 34, 56, 0, time.UTC)

	b.ResetTimer()
	var liab, liabAt, flows time.Duration
	for b.Loop() {
		liab += timeIt(liability(time.Time{}))
		liabAt += timeIt(liability(inside))
		flows += timeIt(monthly(flowsQ))
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(ms(liab), "ms/liability")
	b.ReportMetric(ms(liabAt), "ms/liability_inside_hour")
	b.ReportMetric(ms(flows), "ms/monthly_flows")
	b.ReportMetric(float64(n)/load.Seconds(), "loaded_events/s")
	b.ReportMetric(float64(hourly), "hourly_rows")

	// For comparison, the same monthly report in a zone whose offset is not
	// a whole number of hours, which reads the events with FINAL.
	if n <= benchFromEventsMax {
		q := flowsQ
		q.TimeZone = "Asia/Kolkata"
		d := timeIt(monthly(q))
		b.ReportMetric(float64(d.Microseconds())/1000, "ms/monthly_flows_from_events")
	}
	b.Logf("%d events loaded in %s (%d rows in flows_hourly)", n,
		load.Round(time.Millisecond), hourly)
}
