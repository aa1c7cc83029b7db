package reporting_test

import (
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/reporting"
)

// Regression test of a defect an attack found (against 4d57008), now
// mended; the scenario as found:
//
// 16 points issued at 1970-01-01T00:00:00Z (the earliest time the ledger
// takes) and expired in 1972: flows from 1960 to 2030 lost the 16 issued
// and kept the 16 expired, and the liability at 2300 read 9 points instead
// of every point outstanding. ClickHouse read the bounds outside 1970-2106
// as other times. A bound beyond either end is now no bound.
func TestReportBoundsBeyondClickHouseRange(t *testing.T) {
	conn := migrated(t)
	epoch := time.Unix(0, 0).UTC()
	insert(t, conn,
		event("p", "accrual", 16, epoch),
		event("p", "expiry", -16, time.Date(1972, 1, 1, 0, 0, 0, 0, time.UTC)),
		event("p", "accrual", 40, time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)))

	sum := func(rows []reporting.Flows) (issued, expired int64) {
		for _, r := range rows {
			issued += r.Issued
			expired += r.Expired
		}
		return issued, expired
	}
	for _, c := range []struct {
		from, to        time.Time
		issued, expired int64
	}{
		{time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
			56, 16},
		{epoch, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), 56, 16},
		{time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC),
			0, 0},
		{time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC),
			0, 0},
	} {
		for _, bucket := range []reporting.Bucket{"day", "month"} {
			got := flows(t, conn, reporting.FlowQuery{Program: "p", TimeZone: "UTC",
				Bucket: bucket, From: c.from, To: c.to})
			if issued, expired := sum(got); issued != c.issued || expired != c.expired {
				t.Errorf("flows by %s from %s to %s: issued %d, expired %d; want %d and %d",
					bucket, c.from, c.to, issued, expired, c.issued, c.expired)
			}
		}
	}
	for _, at := range []time.Time{time.Date(2105, 12, 31, 0, 0, 0, 0, time.UTC),
		time.Date(2106, 2, 7, 7, 0, 0, 0, time.UTC), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if got := liabilities(t, conn, at)["p"].Points; got != 40 {
			t.Errorf("liability at %s: %d points, want 40", at, got)
		}
	}
	if got := liabilities(t, conn, time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC))["p"].Points; got != 0 {
		t.Errorf("liability at 1960: %d points, want 0", got)
	}
}
