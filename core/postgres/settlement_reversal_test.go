package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// A capture the operator reverses gives the member the points back, so the
// partner's settlement lists the reversal, negative, and pays nothing for
// it; the partner's view of the payment says what was reversed. The same
// holds when the payer was merged into another member before the reversal.
func TestSettlementTakesOffOperatorReversals(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	shop := "shop-" + f.prog
	f.ok(core.KindPartnerUpsert, "", core.Partner{Code: shop, Name: "Shop", Currency: "CLP",
		PointValue: "2", CanBurn: true})
	p := partnerCmds{f: f, source: core.PartnerSource(shop)}
	for _, ref := range []string{"ana", "ben", "carl"} {
		f.enroll(ref)
		f.ok(core.KindCredit, ref, core.Credit{Points: 100, Reason: "seed"})
	}
	from := f.now.Add(-time.Hour)
	pay := func(ref, txn string, points core.Points) int64 {
		outcomeOf(t, p.do(core.KindAuthorize, ref, txn, core.Authorize{Points: points}))
		outcomeOf(t, p.do(core.KindCapture, ref, txn+"-c", core.Capture{HoldTxnID: txn}))
		caps := f.postingsOf(ref, core.PostCapture)
		return caps[len(caps)-1].ID
	}
	pay("ana", f.prog+"-a", 30)
	benCapture := pay("ben", f.prog+"-b", 40)
	carlCapture := pay("carl", f.prog+"-c", 25)

	f.ok(core.KindReverse, "ben", core.Reverse{PostingID: benCapture, Reason: "dispute"})
	f.wantBalance("ben", 100, 0, 0)
	// Carl is merged into ana; the operator then reverses carl's capture
	// through ana, who gets the 25 points.
	f.ok(core.KindMerge, "carl", core.Merge{Into: "ana"})
	f.ok(core.KindReverse, "ana", core.Reverse{PostingID: carlCapture, Reason: "dispute"})
	f.wantBalance("ana", 70+75+25, 0, 0)

	st, err := f.l.Settlement(ctx, f.prog, shop, from, f.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.Captured != 95 || st.Refunded != 0 || st.Reversed != 65 || st.Net != 30 ||
		st.Value != "60" {
		t.Fatalf("settlement captured %d refunded %d reversed %d net %d value %s; "+
			"want 95, 0, 65, 30 and 60", st.Captured, st.Refunded, st.Reversed, st.Net,
			st.Value)
	}
	var sum core.Points
	reversals := map[string]core.Points{}
	for _, ln := range st.Lines {
		sum += ln.Points
		if ln.Type == "reversal" {
			reversals[ln.HoldTxnID] = ln.Points
		}
	}
	if sum != st.Net || len(st.Lines) != 5 || reversals[f.prog+"-b"] != -40 ||
		reversals[f.prog+"-c"] != -25 {
		t.Fatalf("lines %+v: want 3 captures and 2 reversals adding up to the net", st.Lines)
	}
	// A period after the reversals lists none of them.
	later, err := f.l.Settlement(ctx, f.prog, shop, f.now.Add(time.Hour),
		f.now.Add(2*time.Hour))
	if err != nil || later.Net != 0 || len(later.Lines) != 0 {
		t.Fatalf("later settlement %+v %v: want empty", later, err)
	}

	x, err := f.l.PartnerTransaction(ctx, p.source, f.prog+"-b")
	if err != nil || x.Captured != 40 || x.Reversed != 40 || x.Refunded != 0 {
		t.Fatalf("ben's payment %+v %v: want 40 captured and reversed", x, err)
	}
	x, err = f.l.PartnerTransaction(ctx, p.source, f.prog+"-a")
	if err != nil || x.Captured != 30 || x.Reversed != 0 {
		t.Fatalf("ana's payment %+v %v: want 30 captured, none reversed", x, err)
	}
	f.check()
}

// A posting of a member merged into another is the survivor's to reverse:
// a debit comes back to the survivor; a credit is refused with the way to
// take its points back, since the merge moved them into lots that nothing
// ties to it. A member outside the merge still does not find the posting.
func TestReverseThroughTheSurvivor(t *testing.T) {
	f := newFixture(t, core.Program{})
	for _, ref := range []string{"ana", "ben", "eve"} {
		f.enroll(ref)
	}
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	credit := f.postingsOf("ana", core.PostCredit)[0]
	f.ok(core.KindAdjust, "ana", core.Adjust{Points: -30, Reason: "fix"})
	debit := f.postingsOf("ana", core.PostAdjustment)[0]
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.wantBalance("ben", 70, 0, 0)

	f.refused(core.KindReverse, "eve", core.Reverse{PostingID: debit.ID, Reason: "x"},
		core.NotFound)
	f.refused(core.KindReverse, "ben", core.Reverse{PostingID: credit.ID, Reason: "x"},
		core.Conflict)
	f.wantBalance("ben", 70, 0, 0)
	f.ok(core.KindReverse, "ben", core.Reverse{PostingID: debit.ID, Reason: "undo fix"})
	f.wantBalance("ben", 100, 0, 0)
	f.wantBalance("eve", 0, 0, 0)
	// Once only.
	f.refused(core.KindReverse, "ben", core.Reverse{PostingID: debit.ID, Reason: "again"},
		core.Conflict)
	f.wantBalance("ben", 100, 0, 0)
	f.check()
}

// A reversal naming a transaction id that the member's posting got from
// another caller says which posting that is and how to name it.
func TestReverseByAnotherCallersTxnSaysHowToNameIt(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	soap := f.command(core.KindCredit, "ana", f.prog+"-soap-1", core.Credit{Points: 40,
		Reason: "goodwill"})
	soap.Source = "soap:billing"
	soap.Seal()
	outcomeOf(t, f.apply(soap))
	r := f.do(core.KindReverse, "ana", f.txn(), core.Reverse{OriginalTxnID: f.prog + "-soap-1",
		Reason: "mistake"})
	wantRefused(t, r, core.NotFound, "original_txn_id")
	credit := f.postingsOf("ana", core.PostCredit)[0]
	if !strings.Contains(r.Error.Message, "soap:billing") ||
		!strings.Contains(r.Error.Message, fmt.Sprint(credit.ID)) {
		t.Fatalf("the refusal %q names neither the other caller nor posting %d",
			r.Error.Message, credit.ID)
	}
	f.ok(core.KindReverse, "ana", core.Reverse{PostingID: credit.ID, Reason: "mistake"})
	f.wantBalance("ana", 0, 0, 0)
	f.check()
}
