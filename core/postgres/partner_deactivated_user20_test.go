package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a partner's attack found (against cf48e4e),
// now mended; the scenario as found:
//
// A partner held all 100 of a member's points for 90 days and was then
// deactivated: it could no longer void (403), the operator could not
// release another source's hold, and the member could not spend, be closed
// or merged until the hold ran out three months later. Deactivating a
// partner now ends its open holds: the points are free at once, the sweep
// releases the holds, and the partner's capture is refused.
func TestDeactivatedPartnerHoldsRunOut(t *testing.T) {
	f := newFixture(t, core.Program{})
	shop := "shop-" + f.prog
	partner := core.Partner{Code: shop, Name: "Shop", Currency: "CLP", PointValue: "1",
		CanBurn: true}
	f.ok(core.KindPartnerUpsert, "", partner)
	p := partnerCmds{f: f, source: core.PartnerSource(shop)}
	other := partnerCmds{f: f, source: core.PartnerSource("other-" + f.prog)}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 60,
		TTLSeconds: 90 * 24 * 3600}))
	kept := f.prog + "-kept"
	outcomeOf(t, other.do(core.KindAuthorize, "ana", kept, core.Authorize{Points: 30,
		TTLSeconds: 3600}))
	f.wantBalance("ana", 10, 0, 90)

	inactive := false
	partner.Active = &inactive
	f.setNow(f.now.Add(time.Minute))
	f.ok(core.KindPartnerUpsert, "", partner)
	// Free at once for the member; the other partner's hold stands.
	f.wantBalance("ana", 70, 0, 30)
	f.sweep(f.now)
	f.wantBalance("ana", 70, 0, 30)
	var status string
	if err := f.l.Pool().QueryRow(context.Background(), `SELECT status FROM holds
		WHERE source = $1 AND txn_id = $2`, p.source, pay).Scan(&status); err != nil ||
		status != "expired" {
		t.Fatalf("the deactivated partner's hold is %q (%v), want expired", status, err)
	}
	r := p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay})
	if r.Status != bus.StatusRejected {
		t.Fatalf("capture after the deactivation: %s, want refused", r.Status)
	}
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 70, Reason: "spent"})
	f.wantBalance("ana", 0, 0, 30)
	f.check()
}
