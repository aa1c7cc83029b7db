package postgres

import (
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a finance check found (against cf48e4e), now
// mended; the scenario as found:
//
// A credit dated 1926 (a typo for 2026) was posted and spendable, and the
// reporting sink dropped its event (ClickHouse keeps times from 1970): the
// liability report stayed 444 points short of the balances for good. The
// ledger now refuses business times before 1970, naming the field, and
// changes nothing.
func TestLedgerRefusesTimesBefore1970(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("ana")
	typo := time.Date(1926, 11, 5, 4, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		kind    string
		member  string
		payload any
		at      time.Time
	}{
		{core.KindCredit, "ana", core.Credit{Points: 444, Reason: "typo year"}, typo},
		{core.KindAccrue, "ana", core.Accrue{EventType: "bill_paid", Amount: "10"},
			core.Earliest.Add(-time.Second)},
	} {
		cmd := f.command(c.kind, c.member, f.txn(), c.payload)
		cmd.OccurredAt = c.at
		cmd.Seal()
		r := f.apply(cmd)
		if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "occurred_at" {
			t.Fatalf("%s at %s: %s %+v, want refused naming occurred_at", c.kind, c.at,
				r.Status, r.Error)
		}
	}
	old := time.Date(1965, 3, 1, 0, 0, 0, 0, time.UTC)
	r := f.do(core.KindEnroll, "ben", f.txn(), core.Enroll{EnrolledAt: &old})
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "enrolled_at" {
		t.Fatalf("enrolment in 1965: %s %+v, want refused naming enrolled_at", r.Status, r.Error)
	}
	// The first instant of 1970 is taken.
	cmd := f.command(core.KindCredit, "ana", f.txn(), core.Credit{Points: 5, Reason: "epoch"})
	cmd.OccurredAt = core.Earliest
	cmd.Seal()
	if r := f.apply(cmd); r.Status != bus.StatusOK {
		t.Fatalf("credit at 1970-01-01T00:00:00Z: %s %+v", r.Status, r.Error)
	}
	if n := f.count(`SELECT count(*) FROM members m JOIN programs p ON p.id = m.program_id
		WHERE p.code = $1 AND m.customer_ref = 'ben'`, f.prog); n != 0 {
		t.Fatalf("the refused enrolment made %d members", n)
	}
	f.wantBalance("ana", 5, 0, 0)
	f.check()
}
