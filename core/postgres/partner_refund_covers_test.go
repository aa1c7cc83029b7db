package postgres

import (
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// Regression tests of an attack on the debt mends: a partner's refund
// left covers alone, so the points of a payment that spent a reversed
// credit stayed on that credit's lot. After a chain of covers (the
// covering credit reversed too, its points written off) a program that
// forbids debt gave the member those points for nothing; with a plain
// cover the covering lot's points stayed on the reversed lot, with its
// earlier expiry. A refund now follows covers as other undos do.
func TestPartnerRefundFollowsCovers(t *testing.T) {
	for _, policy := range []string{core.NegativeAllow, core.NegativeForbid} {
		t.Run(policy+"/chain", func(t *testing.T) {
			f := newFixture(t, core.Program{NegativeBalance: policy})
			bar := partnerCmds{f: f, source: core.PartnerSource("bar-" + f.prog)}
			f.enroll("ana")
			f.creditAt("ana", 500, f.now.AddDate(1, 0, 0))
			aTxn := f.lastTxn()
			f.creditAt("ana", 500, f.now.AddDate(2, 0, 0))
			bTxn := f.lastTxn()
			pay := f.prog + "-pay"
			outcomeOf(t, bar.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 500}))
			outcomeOf(t, bar.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: aTxn, Reason: "a"})
			f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: bTxn, Reason: "b"})
			outcomeOf(t, bar.do(core.KindPartnerRefund, "ana", f.txn(),
				core.PartnerRefund{HoldTxnID: pay}))
			f.wantBalance("ana", 0, 0, 0)
			f.check()
		})
		for _, parts := range [][]core.Points{{0}, {400, 0}} {
			t.Run(policy+"/cover", func(t *testing.T) {
				f := newFixture(t, core.Program{NegativeBalance: policy})
				bar := partnerCmds{f: f, source: core.PartnerSource("bar-" + f.prog)}
				f.enroll("ana")
				bill := f.creditAt("ana", 1000, f.now.AddDate(1, 0, 0))
				billTxn := f.lastTxn()
				other := f.creditAt("ana", 200, f.now.AddDate(2, 0, 0))
				pay := f.prog + "-pay"
				outcomeOf(t, bar.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 1000}))
				outcomeOf(t, bar.do(core.KindCapture, "ana", pay+"-c",
					core.Capture{HoldTxnID: pay}))
				f.ok(core.KindReverse, "ana", core.Reverse{OriginalTxnID: billTxn, Reason: "bill"})
				for _, n := range parts {
					outcomeOf(t, bar.do(core.KindPartnerRefund, "ana", f.txn(),
						core.PartnerRefund{HoldTxnID: pay, Points: n}))
					f.check()
				}
				f.wantBalance("ana", 200, 0, 0)
				f.wantLot(other, 200, 200)
				f.wantLot(bill, 1000, 0)
			})
		}
	}
}
