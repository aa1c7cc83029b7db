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

// Transfers and merges name the other member in fields of their own: "to"
// of a transfer, "into" of a merge. A refusal about that member names the
// request's field, not "member", which is the path's own member.
func TestTransferAndMergeNameTheirOwnField(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})

	wantRefused(t, f.do(core.KindTransfer, "ana", f.txn(),
		core.Transfer{To: "nobody", Points: 10}), core.NotFound, "to")
	wantRefused(t, f.do(core.KindTransfer, "ana", f.txn(),
		core.Transfer{To: "ana", Points: 10}), core.Invalid, "to")
	wantRefused(t, f.do(core.KindMerge, "ana", f.txn(), core.Merge{Into: "nobody"}),
		core.NotFound, "into")
	// The path's own member, unknown, is still the member.
	wantRefused(t, f.do(core.KindTransfer, "nobody", f.txn(),
		core.Transfer{To: "ana", Points: 10}), core.NotFound, "member")
	wantRefused(t, f.do(core.KindMerge, "nobody", f.txn(), core.Merge{Into: "ana"}),
		core.NotFound, "member")
	f.wantBalance("ana", 100, 0, 0)
	f.wantBalance("ben", 0, 0, 0)
	f.check()
}

// A partner's refund of a payment whose capture the operator reversed says
// so, about the payment's hold_txn_id; the member keeps what the reversal
// gave back, once.
func TestPartnerRefundAfterOperatorReversalSaysSo(t *testing.T) {
	f := newFixture(t, core.Program{})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 60}))
	outcomeOf(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
	capture := f.postingsOf("ana", core.PostCapture)[0]
	f.ok(core.KindReverse, "ana", core.Reverse{PostingID: capture.ID, Reason: "goodwill"})

	// In full (points 0) as in part.
	for i, n := range []core.Points{0, 10} {
		r := p.do(core.KindPartnerRefund, "ana", pay+"-r"+string(rune('a'+i)),
			core.PartnerRefund{HoldTxnID: pay, Points: n})
		wantRefused(t, r, core.Conflict, "hold_txn_id")
		if !strings.Contains(r.Error.Message, "reversed by the operator") {
			t.Fatalf("refund of %d points: the refusal %q does not say the operator "+
				"reversed the payment", n, r.Error.Message)
		}
	}
	f.wantBalance("ana", 100, 0, 0)
	f.check()
}

// A close answers the points it forfeited, as its forfeit posting took
// them: spendable (held ones released first) and pending, negative.
// Suspending and reactivating move none.
func TestCloseAnswersThePointsForfeited(t *testing.T) {
	f := newFixture(t, core.Program{PendingDays: 3})
	f.enroll("ana")
	f.enroll("ben")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 300, Reason: "seed"})
	// The credit matures; a later accrual is still pending at the close.
	f.setNow(f.now.Add(5 * 24 * time.Hour))
	f.sweep(f.now)
	f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "topup", Amount: "100"})
	hold := f.command(core.KindAuthorize, "ana", f.txn(), core.Authorize{Points: 50})
	outcomeOf(t, f.apply(hold))
	f.wantBalance("ana", 250, 100, 50)

	if o := f.ok(core.KindSuspend, "ana", core.StatusChange{Reason: "check"}); o.Points != 0 {
		t.Fatalf("suspend answered points %d, want 0", o.Points)
	}
	if o := f.ok(core.KindReactivate, "ana", core.StatusChange{Reason: "ok"}); o.Points != 0 {
		t.Fatalf("reactivate answered points %d, want 0", o.Points)
	}
	// A close waits for the open hold: released, its points are forfeited too.
	f.refused(core.KindClose, "ana", core.StatusChange{Reason: "customer left"}, core.Conflict)
	f.ok(core.KindRelease, "ana", core.Release{HoldTxnID: hold.TxnID})
	o := f.ok(core.KindClose, "ana", core.StatusChange{Reason: "customer left"})
	ff := f.postingsOf("ana", core.PostForfeit)
	if len(ff) != 1 || ff[0].Points != -300 || ff[0].PendingDelta != -100 {
		t.Fatalf("forfeit postings %+v, want one of -300 spendable and -100 pending", ff)
	}
	if o.Points != -400 || o.Status != "closed" {
		t.Fatalf("close answered points %d, status %q; want -400 (the points forfeited), "+
			"closed", o.Points, o.Status)
	}
	f.wantBalance("ana", 0, 0, 0)

	// A member with nothing to forfeit answers 0.
	if o := f.ok(core.KindClose, "ben", core.StatusChange{}); o.Points != 0 {
		t.Fatalf("close of an empty member answered points %d, want 0", o.Points)
	}
	f.check()
}

// A partner's refund takes back no more than that partner's purchases gave
// the member, less its earlier refunds and the operator's reversals: an
// amount of any size never reaches points earned elsewhere.
func TestPartnerRefundTakesBackOnlyWhatItsPurchasesGave(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	other := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "welcome"})
	buy := func(p partnerCmds, amount string) string {
		t.Helper()
		txn := f.txn()
		r := p.do(core.KindAccrue, "ana", txn, core.Accrue{EventType: "partner_purchase",
			Amount: amount, Partner: partnerOf(p.source)})
		if r.Status != bus.StatusOK {
			t.Fatalf("purchase of %s: %+v", amount, r.Error)
		}
		return txn
	}
	refund := func(p partnerCmds, amount string) core.Outcome {
		t.Helper()
		r := p.do(core.KindPartnerClawback, "ana", f.txn(), core.PartnerClawback{Amount: amount})
		if r.Status != bus.StatusOK {
			t.Fatalf("refund of %s: %+v", amount, r.Error)
		}
		var o core.Outcome
		if err := json.Unmarshal(r.Data, &o); err != nil {
			t.Fatal(err)
		}
		return o
	}

	// A refund by a partner that gave nothing takes nothing.
	if o := refund(shop, "10000"); o.Points != 0 || o.Written != 0 {
		t.Fatalf("refund before any purchase: %+v, want nothing taken", o)
	}
	f.wantBalance("ana", 1000, 0, 0)

	buy(shop, "450")
	cafe := buy(other, "200")
	f.wantBalance("ana", 1650, 0, 0)
	if o := refund(shop, "99999"); o.Points != -450 || o.Written != 0 {
		t.Fatalf("refund of 99999 after purchases worth 450: %+v, want -450", o)
	}
	if o := refund(shop, "10"); o.Points != 0 {
		t.Fatalf("a second refund: %+v, want nothing left to take", o)
	}
	f.wantBalance("ana", 1200, 0, 0)

	// The operator reversed the cafe's purchase: the cafe has nothing left
	// to take back.
	var posting int64
	err := f.l.Pool().QueryRow(context.Background(), `SELECT id FROM postings
		WHERE source = $1 AND txn_id = $2`, other.source, cafe).Scan(&posting)
	if err != nil {
		t.Fatal(err)
	}
	f.ok(core.KindReverse, "ana", core.Reverse{PostingID: posting, Reason: "wrong till"})
	f.wantBalance("ana", 1000, 0, 0)
	if o := refund(other, "200"); o.Points != 0 {
		t.Fatalf("the cafe's refund after the operator's reversal: %+v, want nothing", o)
	}
	f.wantBalance("ana", 1000, 0, 0)
	f.check()
}
