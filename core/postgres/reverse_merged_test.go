package postgres

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// A bill cancelled after the customer's two accounts were merged is taken
// back as it would be without the merge: its points, still pending, leave
// the survivor's copy of the lot, and never mature into spendable points.
func TestReverseCreditOfMergedMemberStillPending(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", PendingDays: 3})
	f.enroll("ana")
	f.enroll("ben")
	if r := f.do(core.KindAccrue, "ana", "bill-1", core.Accrue{EventType: "bill_paid",
		Amount: "100"}); r.Status != bus.StatusOK {
		t.Fatalf("accrual: %s %+v", r.Status, r.Error)
	}
	f.ok(core.KindCredit, "ben", core.Credit{Points: 50, Reason: "welcome"})
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.wantBalance("ben", 0, 150, 0) // the program holds credits too

	out := f.ok(core.KindReverse, "ben", core.Reverse{OriginalTxnID: "bill-1",
		Reason: "bill cancelled"})
	if out.Points != -100 {
		t.Fatalf("reversal took %d points, want -100", out.Points)
	}
	f.wantBalance("ben", 0, 50, 0)
	f.refused(core.KindReverse, "ben", core.Reverse{OriginalTxnID: "bill-1",
		Reason: "again"}, core.Conflict)

	// Past the pending days nothing matures: the survivor keeps its own 50.
	f.setNow(f.now.Add(5 * 24 * time.Hour))
	f.wantBalance("ben", 50, 0, 0)
	f.check()
}

// A credit of a member merged twice over is found through both copies, and
// a part that expired is not owed back.
func TestReverseCreditOfMemberMergedTwice(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	for _, ref := range []string{"ana", "ben", "cal"} {
		f.enroll(ref)
	}
	credit := f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "bonus"})
	f.ok(core.KindCredit, "cal", core.Credit{Points: 20, Reason: "welcome"})
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.ok(core.KindMerge, "ben", core.Merge{Into: "cal"})
	f.wantBalance("cal", 120, 0, 0)

	out := f.ok(core.KindReverse, "cal", core.Reverse{PostingID: credit.PostingIDs[0],
		Reason: "granted in error"})
	if out.Points != -100 {
		t.Fatalf("reversal took %d points, want -100", out.Points)
	}
	f.wantBalance("cal", 20, 0, 0)
	for _, l := range f.balance("cal").Lots {
		if l.Remaining != 0 && l.Remaining != 20 {
			t.Fatalf("cal's lots after the reversal: %+v; only the own 20 left", l)
		}
	}
	f.check()
}

// A merged member's credit of which some points were spent, before the
// merge or after it, is refused, and the refusal says how many points are
// left to take back: nothing moves.
func TestReverseSpentCreditOfMergedMemberRefused(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run(when, func(t *testing.T) {
			f := newFixture(t, core.Program{PointsPerUnit: "1"})
			f.enroll("ana")
			f.enroll("ben")
			credit := f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "bonus"})
			if when == "before" {
				f.ok(core.KindRedeem, "ana", core.Redeem{Points: 30})
			}
			f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
			if when == "after" {
				f.ok(core.KindRedeem, "ben", core.Redeem{Points: 30})
			}
			r := f.do(core.KindReverse, "ben", f.txn(), core.Reverse{
				PostingID: credit.PostingIDs[0], Reason: "granted in error"})
			if r.Status != bus.StatusRejected || r.Error == nil ||
				r.Error.Kind != string(core.Conflict) ||
				!strings.Contains(r.Error.Message, "30 of its 100 points were spent") ||
				!strings.Contains(r.Error.Message, "the 70 points left") {
				raw, _ := json.Marshal(r)
				t.Fatalf("a partly spent merged credit: %s", raw)
			}
			f.wantBalance("ben", 70, 0, 0)
			f.check()
		})
	}
}

// A second reversal of a merged member's credit is told it was reversed
// already (it was told 100 of its points were spent).
func TestReverseMergedCreditTwice(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("ana")
	f.enroll("ben")
	credit := f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "bonus"})
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.ok(core.KindReverse, "ben", core.Reverse{PostingID: credit.PostingIDs[0], Reason: "error"})
	r := f.do(core.KindReverse, "ben", f.txn(), core.Reverse{PostingID: credit.PostingIDs[0],
		Reason: "again"})
	if r.Status != bus.StatusRejected || r.Error == nil ||
		!strings.Contains(r.Error.Message, "already reversed") {
		t.Fatalf("second reversal: %s %+v; want already reversed", r.Status, r.Error)
	}
	f.wantBalance("ben", 0, 0, 0)
	f.check()
}

// Points of the credit that expired on a member merged on the way (ana into
// ben, ben's copy expires, ben into cal) are gone, not spent: the reversal
// applies and takes nothing more.
func TestReverseMergedCreditExpiredOnTheWay(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	for _, ref := range []string{"ana", "ben", "cal"} {
		f.enroll(ref)
	}
	expires := f.now.Add(48 * time.Hour)
	credit := f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "bonus",
		ExpiresAt: &expires})
	f.ok(core.KindCredit, "cal", core.Credit{Points: 20, Reason: "welcome"})
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	f.setNow(f.now.Add(72 * time.Hour))
	if _, _, err := f.l.Sweep(context.Background(), f.now, 0); err != nil {
		t.Fatal(err)
	}
	f.ok(core.KindMerge, "ben", core.Merge{Into: "cal"})
	f.wantBalance("cal", 20, 0, 0)
	out := f.ok(core.KindReverse, "cal", core.Reverse{PostingID: credit.PostingIDs[0],
		Reason: "granted in error"})
	if out.Points != 0 {
		t.Fatalf("the reversal took %d points; the credit's had all expired", out.Points)
	}
	f.wantBalance("cal", 20, 0, 0)
	f.check()
}

// A partner's refund took 40 of a merged member's purchase (ana's, the newer,
// from ben's copy of its lot): reversing that purchase takes the 60 left,
// the 40 are not "spent", and reversing ben's own purchase too leaves ben
// nothing of the 200.
func TestReverseMergedPurchasePartlyRefunded(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	cafe := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
	f.enroll("ana")
	f.enroll("ben")
	buy := func(who string) int64 {
		r := cafe.do(core.KindAccrue, who, f.txn(), core.Accrue{EventType: "partner_purchase",
			Amount: "100", Partner: partnerOf(cafe.source)})
		return outcomeOf(t, r).PostingIDs[0]
	}
	pb := buy("ben")
	f.setNow(f.now.Add(time.Hour))
	pa := buy("ana")
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	outcomeOf(t, cafe.do(core.KindPartnerClawback, "ben", f.txn(),
		core.PartnerClawback{Amount: "40"}))
	f.wantBalance("ben", 160, 0, 0)
	out := f.ok(core.KindReverse, "ben", core.Reverse{PostingID: pa, Reason: "ana's bill"})
	if out.Points != -60 {
		t.Fatalf("reversal of ana's purchase took %d; want the 60 left", out.Points)
	}
	f.ok(core.KindReverse, "ben", core.Reverse{PostingID: pb, Reason: "ben's bill"})
	f.wantBalance("ben", 0, 0, 0)
	f.check()
}
