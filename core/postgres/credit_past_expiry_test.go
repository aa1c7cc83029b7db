package postgres

import (
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// TestCreditEndingInThePastIsRefused: a back-dated credit whose expires_at
// (or expires_on) is already over is refused naming the field, instead of
// answering +n and expiring the points in the same transaction.
func TestCreditEndingInThePastIsRefused(t *testing.T) {
	f := newFixture(t, core.Program{TimeZone: "America/Santiago"})
	f.enroll("m")
	// Back-dated a month (the fault it makes good happened then).
	backDated := func(in core.Credit) bus.Result {
		c := f.command(core.KindCredit, "m", f.txn(), in)
		c.OccurredAt = f.now.AddDate(0, -1, 0)
		c.Seal()
		return f.apply(c)
	}
	past := f.now.Add(-time.Hour)
	r := backDated(core.Credit{Points: 300, Reason: "compensation", ExpiresAt: &past})
	wantRefused(t, r, core.Invalid, "expires_at")
	if !strings.Contains(r.Error.Message, "in the past") {
		t.Fatalf("refusal %q does not say the end is past", r.Error.Message)
	}
	yesterday := f.now.Add(-36 * time.Hour).Format(time.DateOnly)
	r = backDated(core.Credit{Points: 300, Reason: "compensation", ExpiresOn: yesterday})
	wantRefused(t, r, core.Invalid, "expires_on")
	f.wantBalance("m", 0, 0, 0)

	// An end still ahead, even by a minute, is credited whole.
	soon := f.now.Add(time.Minute)
	if r := backDated(core.Credit{Points: 300, Reason: "compensation",
		ExpiresAt: &soon}); r.Status != bus.StatusOK {
		t.Fatalf("credit ending in a minute: %+v", r.Error)
	}
	f.wantBalance("m", 300, 0, 0)
	f.check()
}
