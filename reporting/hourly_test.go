package reporting_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/reporting"
)

// spread is made-up events of two programs at odd minutes over three days
// around the end of March 2026, with a notice that counts nowhere.
func spread() []bus.Event {
	start := time.Date(2026, 3, 30, 20, 7, 13, 0, time.UTC)
	kinds := []struct {
		kind   string
		points int64
	}{{"accrual", 100}, {"redemption", -30}, {"adjustment", 7}, {"adjustment", -4},
		{"credit", 11}}
	var evs []bus.Event
	for i := range 60 {
		k := kinds[i%len(kinds)]
		program := "p1"
		if i%3 == 0 {
			program = "p2"
		}
		at := start.Add(time.Duration(i) * 71 * time.Minute)
		evs = append(evs, event(program, k.kind, k.points+int64(i), at))
	}
	return append(evs, notice("p1", start.Add(5*time.Hour)))
}

// owedAt sums, per program, the points of the counted events before at.
func owedAt(evs []bus.Event, at time.Time) map[string]int64 {
	out := map[string]int64{}
	for _, ev := range evs {
		if ev.PostingID != 0 && ev.OccurredAt.Before(at.Truncate(time.Second)) {
			out[ev.Program] += ev.Points
		}
	}
	return out
}

// dailyNet sums the counted events of program in [from, to) per local day
// of loc: net points and events.
func dailyNet(evs []bus.Event, program string, loc *time.Location,
	from, to time.Time) map[string][2]int64 {
	out := map[string][2]int64{}
	for _, ev := range evs {
		if ev.Program != program || ev.PostingID == 0 || ev.OccurredAt.Before(from) ||
			!ev.OccurredAt.Before(to) {
			continue
		}
		day := ev.OccurredAt.In(loc).Format(time.DateOnly)
		v := out[day]
		out[day] = [2]int64{v[0] + ev.Points, v[1] + 1}
	}
	return out
}

// TestHourlyFiguresMatchTheEvents checks the reports, which read the
// hourly sums and the events at the ends of a period, against sums of the
// events themselves: for liabilities at instants inside hours, and for
// daily flows over periods cut on and off the hour, in Santiago (whole-hour
// offsets) and Kolkata (+05:30, read from the events).
func TestHourlyFiguresMatchTheEvents(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	evs := spread()
	insert(t, conn, evs...)

	first := evs[0].OccurredAt
	for _, at := range []time.Time{first, first.Add(time.Second), first.Add(50 * time.Minute),
		first.Add(26*time.Hour + 1500*time.Millisecond), first.Add(53 * time.Hour),
		first.Truncate(time.Hour).Add(40 * time.Hour), first.AddDate(0, 0, 10)} {
		want := owedAt(evs, at)
		got := liabilities(t, conn, at)
		if len(got) != len(want) {
			t.Errorf("liabilities at %s: %+v; want %v", at, got, want)
		}
		for p, w := range want {
			if got[p].Points != w {
				t.Errorf("liability of %s at %s: %d; want %d", p, at, got[p].Points, w)
			}
		}
	}

	periods := [][2]time.Time{
		{{}, {}},
		{first.Add(-time.Hour).Truncate(time.Hour), first.Add(60 * time.Hour).Truncate(time.Hour)},
		{first.Add(3*time.Hour + 17*time.Minute), first.Add(40*time.Hour + 3*time.Second)},
		{first.Add(10*time.Hour + 5*time.Minute), first.Add(10*time.Hour + 55*time.Minute)},
		{first.Add(7 * time.Hour), time.Time{}},
	}
	for _, zone := range []string{santiago, "Asia/Kolkata"} {
		loc, _ := time.LoadLocation(zone)
		for _, p := range periods {
			name := fmt.Sprintf("%s %s to %s", zone, p[0].Format(time.RFC3339),
				p[1].Format(time.RFC3339))
			to := p[1]
			if to.IsZero() {
				to = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
			}
			want := dailyNet(evs, "p1", loc, p[0], to)
			got := flows(t, conn, reporting.FlowQuery{Program: "p1", TimeZone: zone,
				Bucket: reporting.Day, From: p[0], To: p[1]})
			if len(got) != len(want) {
				t.Errorf("%s: %d days %+v; want %v", name, len(got), got, want)
				continue
			}
			for _, f := range got {
				w := want[f.Start.Format(time.DateOnly)]
				if f.Net != w[0] || int64(f.Events) != w[1] {
					t.Errorf("%s, %s: net %d over %d events; want %d over %d", name,
						f.Start.Format(time.DateOnly), f.Net, f.Events, w[0], w[1])
				}
				checkNet(t, f)
			}
		}
	}
}

// TestMigrationSumsEarlierEvents plays an upgrade: events stored before the
// hourly tables existed are summed by the migration that makes them, once,
// however often it runs, and events stored afterwards are summed by the
// view.
func TestMigrationSumsEarlierEvents(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	evs := spread()
	insert(t, conn, evs...)
	ctx := t.Context()
	// Back to the schema of migration 0002, with the events in it.
	for _, stmt := range []string{`DROP TABLE flows_hourly_mv`, `DROP TABLE flows_hourly`,
		`DROP TABLE flows_backfill`, `DROP TABLE schema_version`} {
		if err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // the view is made in a later second

	check := func(when string, evs []bus.Event) {
		t.Helper()
		want := owedAt(evs, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
		got := liabilities(t, conn, time.Time{})
		for _, p := range []string{"p1", "p2"} {
			if got[p].Points != want[p] {
				t.Errorf("%s: liability of %s %d; want %d", when, p, got[p].Points, want[p])
			}
		}
	}
	for i := range 2 {
		if err := reporting.Migrate(ctx, conn); err != nil {
			t.Fatalf("Migrate over events: %v", err)
		}
		check(fmt.Sprintf("after migration %d", i+1), evs)
		if err := conn.Exec(ctx, `DROP TABLE schema_version`); err != nil {
			t.Fatal(err)
		}
	}
	late := event("p1", "credit", 5000, time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC))
	insert(t, conn, late)
	if err := reporting.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	check("after a later event and a third migration", append(evs, late))
}
