package postgres

import (
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A partner's payment is the partner's: its hold, capture, release and
// refund postings name the partner, and so does the operator's reversal
// of a capture, so that flows broken down by partner show the points
// spent at that partner.
func TestPartnerPaymentPostingsNameThePartner(t *testing.T) {
	f := newFixture(t, core.Program{})
	shop := "shop-" + f.prog
	p := partnerCmds{f: f, source: core.PartnerSource(shop)}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 500, Reason: "seed"})
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 300}))
	outcomeOf(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay,
		Points: 250}))
	outcomeOf(t, p.do(core.KindPartnerRefund, "ana", pay+"-r",
		core.PartnerRefund{HoldTxnID: pay, Points: 10}))
	// A second payment, captured whole and reversed by the operator.
	pay2 := f.prog + "-pay2"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay2, core.Authorize{Points: 50}))
	outcomeOf(t, p.do(core.KindCapture, "ana", pay2+"-c", core.Capture{HoldTxnID: pay2}))
	caps := f.postingsOf("ana", core.PostCapture) // newest first
	f.ok(core.KindReverse, "ana", core.Reverse{PostingID: caps[0].ID, Reason: "dispute"})

	want := map[string]int{core.PostHold: 2, core.PostCapture: 2, core.PostRelease: 1,
		core.PostReversal: 2}
	for kind, n := range want {
		ps := f.postingsOf("ana", kind)
		if len(ps) != n {
			t.Fatalf("%d postings of kind %s, want %d", len(ps), kind, n)
		}
		for _, x := range ps {
			if x.Partner != shop {
				t.Errorf("%s posting %d: partner %q, want %q", kind, x.ID, x.Partner, shop)
			}
		}
	}
	f.wantBalance("ana", 260, 0, 0)
	f.check()
}

// The operator cannot reverse a capture the partner refunded in part (the
// partner's first refund undid it): the refusal says so, naming the
// refund, rather than that someone reversed the posting; nothing moves.
func TestReversalOfAPartlyRefundedCaptureSaysWhy(t *testing.T) {
	f := newFixture(t, core.Program{})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 100}))
	outcomeOf(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
	outcomeOf(t, p.do(core.KindPartnerRefund, "ana", pay+"-r",
		core.PartnerRefund{HoldTxnID: pay, Points: 40}))
	capture := f.postingsOf("ana", core.PostCapture)[0]
	r := f.do(core.KindReverse, "ana", f.txn(), core.Reverse{PostingID: capture.ID,
		Reason: "disputed by the customer"})
	wantRefused(t, r, core.Conflict, "posting_id")
	if !strings.Contains(r.Error.Message, "refunded 40 of this capture's 100") {
		t.Fatalf("the refusal %q does not name the partner's refund", r.Error.Message)
	}
	f.wantBalance("ana", 40, 0, 0)
	f.check()
}
