package reporting_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

const santiago = "America/Santiago"

// migrated is a fresh ClickHouse database with the reporting schema.
func migrated(t *testing.T) driver.Conn {
	t.Helper()
	conn, _ := chtest.Database(t)
	if err := reporting.Migrate(t.Context(), conn); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return conn
}

// postingIDs numbers the postings of made-up events.
var postingIDs atomic.Int64

// event is the ledger event of a made-up posting, with a fresh id.
func event(program, kind string, points int64, at time.Time) bus.Event {
	return bus.Event{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Program: program,
		Member: uuid.NewString(), MemberRef: "m1", Points: points, OccurredAt: at,
		RecordedAt: at.Add(time.Second), Source: "test", TxnID: uuid.NewString(),
		PostingID: 1_000_000 + postingIDs.Add(1)}
}

// notice is an event that records no posting and moves no points.
func notice(program string, at time.Time) bus.Event {
	ev := event(program, "expiry_notice", 0, at)
	ev.PostingID, ev.TxnID = 0, ""
	return ev
}

func insert(t *testing.T, conn driver.Conn, evs ...bus.Event) {
	t.Helper()
	if err := reporting.InsertEvents(t.Context(), conn, evs); err != nil {
		t.Fatalf("InsertEvents: %v", err)
	}
}

// rawCount counts the rows of ledger_events as stored, copies included.
func rawCount(t *testing.T, conn driver.Conn) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(t.Context(), `SELECT count() FROM ledger_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func flows(t *testing.T, conn driver.Conn, q reporting.FlowQuery) []reporting.Flows {
	t.Helper()
	out, err := reporting.PointFlows(t.Context(), conn, q)
	if err != nil {
		t.Fatalf("PointFlows: %v", err)
	}
	return out
}

func liabilities(t *testing.T, conn driver.Conn, at time.Time) map[string]reporting.Outstanding {
	t.Helper()
	out, err := reporting.Liabilities(t.Context(), conn, at)
	if err != nil {
		t.Fatalf("Liabilities: %v", err)
	}
	m := map[string]reporting.Outstanding{}
	for _, o := range out {
		m[o.Program] = o
	}
	return m
}

// checkNet fails when a row's columns do not add up to its Net.
func checkNet(t *testing.T, f reporting.Flows) {
	t.Helper()
	sum := f.Issued - f.Redeemed - f.Expired - f.AdjustedDown - f.ClawedBack + f.Returned -
		f.Forfeited + f.Moved
	if sum != f.Net {
		t.Errorf("%s %s: columns add up to %d, Net is %d: %+v", f.Program,
			f.Start.Format(time.DateOnly), sum, f.Net, f)
	}
}

func TestFlowsSortEveryKind(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)

	insert(t, conn,
		event("p1", "accrual", 1000, at), event("p1", "accrual", 300, at),
		event("p1", "credit", 500, at),
		event("p1", "adjustment", 40, at), event("p1", "adjustment", -15, at),
		event("p1", "redemption", -200, at),
		event("p1", "hold", -300, at), event("p1", "capture", 0, at),
		event("p1", "release", 120, at),
		event("p1", "reversal", -300, at), event("p1", "reversal", 200, at),
		event("p1", "expiry", -70, at), event("p1", "forfeit", -25, at),
		event("p1", "maturation", 0, at),
		event("p1", "transfer_out", -60, at), event("p1", "transfer_in", 60, at),
		event("p1", "merge_out", -10, at), event("p1", "merge_in", 10, at),
		event("p1", "surprise", 7, at), // a kind the report does not know
		notice("p1", at),               // not counted
		event("p2", "accrual", 99, at),
	)

	got := flows(t, conn, reporting.FlowQuery{Program: "p1", TimeZone: santiago,
		Bucket: reporting.Month})
	if len(got) != 1 {
		t.Fatalf("rows %+v; want one (p1, March)", got)
	}
	f := got[0]
	want := reporting.Flows{Program: "p1", Issued: 1840, Redeemed: 380, Expired: 70,
		AdjustedDown: 15, ClawedBack: 300, Returned: 200, Forfeited: 25, Moved: 7,
		Net: 1257, Events: 19}
	want.Start = f.Start
	if f != want {
		t.Errorf("flows\n got %+v\nwant %+v", f, want)
	}
	checkNet(t, f)
	if loc, _ := time.LoadLocation(santiago); !f.Start.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, loc)) {
		t.Errorf("bucket starts %s; want 2026-03-01 00:00 in Santiago", f.Start)
	}

	// Liabilities add every event of each program.
	l := liabilities(t, conn, time.Time{})
	if l["p1"].Points != 1257 || l["p1"].Events != 19 || l["p2"].Points != 99 {
		t.Errorf("liabilities %+v; want p1 1257 (19 events), p2 99", l)
	}
	if l := liabilities(t, conn, at); len(l) != 0 {
		t.Errorf("liabilities before the first event: %+v; want none", l)
	}
}

// TestDuplicatesCountOnce stores events again, in separate inserts as a
// redelivered batch would be and twice within one insert, mixed with new
// events, and checks that ledger_events keeps one copy of each (so that the
// hourly sums its materialized view keeps count each once) and that every
// report counts each once.
func TestDuplicatesCountOnce(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	a := event("p1", "accrual", 1000, at)
	b := event("p1", "redemption", -400, at.Add(time.Hour))
	c := event("p1", "accrual", 50, at.AddDate(0, 1, 0)) // another partition

	insert(t, conn, a, b)
	insert(t, conn, a, b)       // the batch again
	insert(t, conn, c, a, b, c) // and again, with a new event twice inside the insert
	if n := rawCount(t, conn); n != 3 {
		t.Fatalf("%d rows stored; want 3 (each event once)", n)
	}

	got := flows(t, conn, reporting.FlowQuery{Program: "p1", TimeZone: santiago,
		Bucket: reporting.Month})
	if len(got) != 2 || got[0].Issued != 1000 || got[0].Redeemed != 400 ||
		got[0].Events != 2 || got[1].Issued != 50 || got[1].Events != 1 {
		t.Errorf("flows %+v; want March 1000 issued, 400 redeemed, 2 events; April 50, 1", got)
	}
	if l := liabilities(t, conn, time.Time{}); l["p1"].Points != 650 || l["p1"].Events != 3 {
		t.Errorf("liability %+v; want 650 over 3 events", l["p1"])
	}

	// Merges fold the hourly rows of one key and the figures stay.
	for _, table := range []string{"ledger_events", "flows_hourly"} {
		if err := conn.Exec(t.Context(), `OPTIMIZE TABLE `+table+` FINAL`); err != nil {
			t.Fatal(err)
		}
	}
	if n := rawCount(t, conn); n != 3 {
		t.Errorf("%d rows after OPTIMIZE FINAL; want 3", n)
	}
	if l := liabilities(t, conn, time.Time{}); l["p1"].Points != 650 || l["p1"].Events != 3 {
		t.Errorf("liability after merge %+v; want 650 over 3 events", l["p1"])
	}
}

// TestBucketsFollowSantiagoClock places events around the daylight-saving
// changes of America/Santiago in 2024: clocks went back from 00:00 (-03) to
// 23:00 (-04) on 7 April, and forward from 00:00 (-04) to 01:00 (-03) on 8
// September. Each event's bucket depends on the offset in force at that
// instant, which a fixed offset would get wrong.
func TestBucketsFollowSantiagoClock(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	loc, err := time.LoadLocation(santiago)
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	insert(t, conn,
		// 31 March 23:59:59 -03, still summer time: March.
		event("p1", "accrual", 1, utc("2024-04-01T02:59:59Z")),
		// 1 April 00:30 -03: April, though 31 March 23:30 at -04.
		event("p1", "accrual", 10, utc("2024-04-01T03:30:00Z")),
		// 6 April 23:30 -04, after the clocks went back: the 6th, a day of 25 hours.
		event("p1", "accrual", 100, utc("2024-04-07T03:30:00Z")),
		// 31 August 23:30 -04, winter time: August, though 1 September at -03.
		event("p1", "accrual", 1000, utc("2024-09-01T03:30:00Z")),
		// 7 September 23:59:59 -04: the 7th.
		event("p1", "accrual", 10000, utc("2024-09-08T03:59:59Z")),
		// One second later the clocks jump to 01:00 -03 on the 8th, a day of 23 hours.
		event("p1", "accrual", 100000, utc("2024-09-08T04:00:00Z")),
	)

	type bucket struct {
		start  string // local date
		issued int64
	}
	check := func(b reporting.Bucket, from, to time.Time, want []bucket) {
		t.Helper()
		got := flows(t, conn, reporting.FlowQuery{Program: "p1", TimeZone: santiago,
			Bucket: b, From: from, To: to})
		if len(got) != len(want) {
			t.Fatalf("%s buckets %+v; want %+v", b, got, want)
		}
		for i, w := range want {
			g := got[i]
			if g.Start.Format(time.DateOnly) != w.start || g.Issued != w.issued {
				t.Errorf("%s bucket %d: %s issued %d; want %s issued %d", b, i,
					g.Start.Format(time.DateOnly), g.Issued, w.start, w.issued)
			}
			if g.Start.Location().String() != santiago {
				t.Errorf("%s bucket %d in %s; want %s", b, i, g.Start.Location(), santiago)
			}
			checkNet(t, g)
		}
	}

	check(reporting.Month, time.Time{}, time.Time{}, []bucket{
		{"2024-03-01", 1}, {"2024-04-01", 110}, {"2024-08-01", 1000}, {"2024-09-01", 110000},
	})
	check(reporting.Day, time.Time{}, time.Time{}, []bucket{
		{"2024-03-31", 1}, {"2024-04-01", 10}, {"2024-04-06", 100}, {"2024-08-31", 1000},
		{"2024-09-07", 10000}, {"2024-09-08", 100000},
	})
	// Weeks start on Monday: 25 March, 1 April, 26 August, 2 September.
	check(reporting.Week, time.Time{}, time.Time{}, []bucket{
		{"2024-03-25", 1}, {"2024-04-01", 110}, {"2024-08-26", 1000}, {"2024-09-02", 110000},
	})

	// The 8th of September has no midnight: its bucket starts at 01:00 -03.
	got := flows(t, conn, reporting.FlowQuery{Program: "p1", TimeZone: santiago,
		Bucket: reporting.Day, From: utc("2024-09-08T04:00:00Z")})
	if len(got) != 1 || !got[0].Start.Equal(utc("2024-09-08T04:00:00Z")) {
		t.Errorf("8 September: %+v; want one bucket starting 2024-09-08T04:00:00Z", got)
	}

	// From and To cut at local midnights give whole local months.
	april := time.Date(2024, 4, 1, 0, 0, 0, 0, loc)
	may := time.Date(2024, 5, 1, 0, 0, 0, 0, loc)
	check(reporting.Month, april, may, []bucket{{"2024-04-01", 110}})

	// Liability at the first instant of April (local) holds March only.
	if l := liabilities(t, conn, april); l["p1"].Points != 1 {
		t.Errorf("liability at 1 April 00:00 -03: %+v; want 1", l["p1"])
	}
}

func TestFlowsRefuseBadQueries(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	for _, q := range []reporting.FlowQuery{
		{TimeZone: santiago, Bucket: "year"},
		{TimeZone: "", Bucket: reporting.Day},
		{TimeZone: "Local", Bucket: reporting.Day},
		{TimeZone: "Mars/Olympus", Bucket: reporting.Day},
		{TimeZone: "America/Santiago'; DROP TABLE ledger_events; --", Bucket: reporting.Day},
	} {
		if _, err := reporting.PointFlows(t.Context(), conn, q); err == nil {
			t.Errorf("PointFlows(%+v) succeeded; want an error", q)
		}
	}
	if n := rawCount(t, conn); n != 0 {
		t.Errorf("ledger_events has %d rows; want 0", n)
	}
}
