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
// million events. Loading that many on a 2-core machine takes long, so by
// default the benchmark loads benchDefaultEvents and states the figures
// scaled to benchTargetEvents next to the measured ones. Set
// PUNTOS_BENCH_EVENTS=100000000 to measure the real thing.
const (
	benchTargetEvents  = 100_000_000
	benchDefaultEvents = 10_000_000
	benchChunk         = 5_000_000
)

// benchLoad is the server-side generator of made-up events numbered from
// ? (offset) for ? (count) rows, spread evenly over four years from 2022
// across 4 programs and a million members. Kinds cycle: accrual 100,
// redemption -50, expiry -10, adjustment ±5, credit 20.
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

// BenchmarkReports times, warm, the liability report (every program, all
// events) and the monthly flows report (issued, redeemed and the rest per
// program and month, in Santiago) over a table of PUNTOS_BENCH_EVENTS
// events (default 10 million; see benchTargetEvents).
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
	if err := conn.QueryRow(ctx, `SELECT count() FROM ledger_events`).Scan(&stored); err != nil {
		b.Fatal(err)
	}
	if stored != uint64(n) {
		b.Fatalf("%d events stored; want %d", stored, n)
	}

	flowsQ := reporting.FlowQuery{TimeZone: "America/Santiago", Bucket: reporting.Month}
	liability := func() {
		out, err := reporting.Liabilities(ctx, conn, time.Time{})
		if err != nil || len(out) != 4 {
			b.Fatalf("liabilities: %d programs, %v", len(out), err)
		}
	}
	monthly := func() {
		out, err := reporting.PointFlows(ctx, conn, flowsQ)
		if err != nil || len(out) < 4*48 {
			b.Fatalf("monthly flows: %d rows, %v", len(out), err)
		}
	}
	timeIt := func(f func()) time.Duration {
		f() // warm
		t0 := time.Now()
		f()
		return time.Since(t0)
	}

	b.ResetTimer()
	var liab, flows time.Duration
	for b.Loop() {
		liab += timeIt(liability)
		flows += timeIt(monthly)
	}
	b.StopTimer()
	liabMS := float64(liab.Microseconds()) / 1000 / float64(b.N)
	flowsMS := float64(flows.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(liabMS, "ms/liability")
	b.ReportMetric(flowsMS, "ms/monthly_flows")
	b.ReportMetric(float64(n)/load.Seconds(), "loaded_events/s")

	scale := float64(benchTargetEvents) / float64(n)
	if n != benchTargetEvents {
		// Both reports read every row with FINAL: time grows about linearly.
		b.ReportMetric(liabMS*scale, "ms/liability@100M_extrapolated")
		b.ReportMetric(flowsMS*scale, "ms/monthly_flows@100M_extrapolated")
		b.Logf("measured over %d events (loaded in %s) and scaled linearly to %d: "+
			"liability %.0f ms, monthly flows %.0f ms; set PUNTOS_BENCH_EVENTS=%d to measure",
			n, load.Round(time.Millisecond), benchTargetEvents, liabMS*scale, flowsMS*scale,
			benchTargetEvents)
	}
}
