package postgres

import (
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// A credit that would expire before its points become spendable (the
// program holds new points some days) is refused naming its expiry, and
// moves nothing; one that expires after that is taken.
func TestCreditExpiringWhilePendingIsRefused(t *testing.T) {
	f := newFixture(t, core.Program{PendingDays: 3})
	f.enroll("ana")
	soon := f.now.Add(90 * time.Second)
	r := f.do(core.KindCredit, "ana", f.txn(), core.Credit{Points: 300, Reason: "bonus",
		ExpiresAt: &soon})
	wantRefused(t, r, core.Invalid, "expires_at")
	if !strings.Contains(r.Error.Message, "spendable") {
		t.Fatalf("refusal %q does not say why", r.Error.Message)
	}
	f.wantBalance("ana", 0, 0, 0)

	r = f.do(core.KindCredit, "ana", f.txn(), core.Credit{Points: 300, Reason: "bonus",
		ExpiresOn: f.now.AddDate(0, 0, 2).Format("2006-01-02")})
	wantRefused(t, r, core.Invalid, "expires_on")

	later := f.now.AddDate(0, 0, 4)
	f.ok(core.KindCredit, "ana", core.Credit{Points: 300, Reason: "bonus", ExpiresAt: &later})
	f.wantBalance("ana", 0, 300, 0)
	f.check()
}
