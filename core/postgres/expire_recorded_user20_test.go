package postgres

import (
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a billing integrator found (against cf48e4e),
// now mended; the scenario as found:
//
// `puntos expire --at T`, run at 04:32:31 with T 04:32:05, wrote its expiry
// posting with recorded_at 04:32:05, before an accrual recorded at 04:32:10
// with a smaller id: the statement's order and its recording times
// disagreed, and a reader by recording time would place the expiry wrongly.
// A sweep as of an earlier instant now records when it wrote: the expiry is
// dated (occurred_at) when the lot ended, and recorded now. The members
// with holds or pending points, which the sweep brings up to date one by
// one, are recorded the same way.
func TestSweepAsOfEarlierRecordsWhenWritten(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", PendingDays: 1})
	f.enroll("ana")
	f.enroll("ben")
	end := f.now.Add(48 * time.Hour)
	f.creditAt("ana", 50, end)
	f.creditAt("ben", 40, end)
	// ben also has points still pending: the sweep refreshes him on his own.
	f.ok(core.KindAccrue, "ben", core.Accrue{EventType: "bill_paid", Amount: "5"})
	written := end.Add(3 * time.Hour)
	f.setNow(written)
	f.sweep(end.Add(time.Minute)) // as of an instant three hours back
	f.wantBalance("ana", 0, 0, 0)
	for _, ref := range []string{"ana", "ben"} {
		ex := f.postingsOf(ref, core.PostExpiry)
		if len(ex) != 1 {
			t.Fatalf("%s: %d expiry postings, want 1", ref, len(ex))
		}
		if !ex[0].OccurredAt.Equal(end) || !ex[0].RecordedAt.Equal(written) {
			t.Fatalf("%s's expiry: occurred %s, recorded %s; want %s and %s", ref,
				ex[0].OccurredAt, ex[0].RecordedAt, end, written)
		}
	}
	f.check()
}
