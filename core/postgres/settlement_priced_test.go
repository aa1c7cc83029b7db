package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// TestSettlementValuesEachPaymentAtItsPrice: a partner's point value
// changed after a payment does not change what the payment is worth in the
// settlement; a payment placed after the change takes the new price, and a
// capture line names the capture's own transaction id.
func TestSettlementValuesEachPaymentAtItsPrice(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	shop := "priced-" + f.prog
	upsert := func(value string) {
		f.ok(core.KindPartnerUpsert, "", core.Partner{Code: shop, Name: "Shop",
			Currency: "CLP", PointValue: value, CanBurn: true})
	}
	upsert("1")
	p := partnerCmds{f: f, source: core.PartnerSource(shop)}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "seed"})
	from := f.now.Add(-time.Hour)
	outcomeOf(t, p.do(core.KindAuthorize, "ana", f.prog+"-pay1", core.Authorize{Points: 100}))
	upsert("2.5") // renegotiated before the first capture: the hold keeps 1
	outcomeOf(t, p.do(core.KindCapture, "ana", f.prog+"-cap1",
		core.Capture{HoldTxnID: f.prog + "-pay1"}))
	outcomeOf(t, p.do(core.KindAuthorize, "ana", f.prog+"-pay2", core.Authorize{Points: 40}))
	outcomeOf(t, p.do(core.KindCapture, "ana", f.prog+"-cap2",
		core.Capture{HoldTxnID: f.prog + "-pay2"}))
	upsert("7")

	s, err := f.l.Settlement(ctx, f.prog, shop, from, f.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// 100 points at 1 and 40 at 2.5.
	if s.Net != 140 || s.Value != "200" || s.PointValue != "7" {
		t.Fatalf("settlement net %d value %s (point value now %s), want 140 worth 200",
			s.Net, s.Value, s.PointValue)
	}
	if len(s.Lines) != 2 || s.Lines[0].TxnID != f.prog+"-cap1" ||
		s.Lines[0].HoldTxnID != f.prog+"-pay1" || s.Lines[0].Value != "100" ||
		s.Lines[1].Value != "100" {
		t.Fatalf("lines %+v, want cap1 of pay1 worth 100 and cap2 worth 100", s.Lines)
	}
}
