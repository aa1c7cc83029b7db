package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// Attacks on the paths that spend or move points: merges, transfers,
// catalog orders, partner payments and refunds, conversions.

// TestAttack15MergeIntoItselfNamesInto: a merge of a member into
// itself (directly, or through a reference already merged into it) is
// refused about the merge request's field "into" (it used to name "to",
// the field of a transfer, which a merge request does not have).
func TestAttack15MergeIntoItselfNamesInto(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})

	wantRefused(t, f.do(core.KindMerge, "ana", f.txn(), core.Merge{Into: "ana"}),
		core.Invalid, "into")
	f.ok(core.KindMerge, "ana", core.Merge{Into: "ben"})
	// ben into ana, which is ben now.
	wantRefused(t, f.do(core.KindMerge, "ben", f.txn(), core.Merge{Into: "ana"}),
		core.Invalid, "into")
	f.wantBalance("ben", 100, 0, 0)
	f.check()
}

// TestAttack15ConversionTooLargeNamesPoints: a conversion whose
// points are worth more than the ledger's bound in the other program is
// refused as invalid about "points", the field at fault (it used to name
// "amount", a field the conversion request, with external, points and
// account_id, does not have).
func TestAttack15ConversionTooLargeNamesPoints(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 5_000_000, Reason: "seed"})
	ext := airline("big", "")
	ext.Ratio = "1000000"
	f.ok(core.KindExternalUpsert, "big", ext)

	// 2,000,000 points at 1,000,000 miles each: 2e12 miles.
	r := f.do(core.KindConvert, "ana", f.txn(), core.ConvertRequest{External: "big",
		Points: 2_000_000})
	wantRefused(t, r, core.Invalid, "points")
	f.wantBalance("ana", 5_000_000, 0, 0)
	f.check()
}

// TestAttack15PartnerRefundsRaceNeverExceedCapture: eight refunds of 30
// points of one captured payment of 100, each under its own transaction
// id, all at once: three are granted, the rest refused, and the member
// gets back exactly 90, to the lots the capture took.
func TestAttack15PartnerRefundsRaceNeverExceedCapture(t *testing.T) {
	f := newFixture(t, core.Program{})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	lot := f.creditAt("ana", 150, f.now.Add(30*24*time.Hour))
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 100}))
	outcomeOf(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
	f.wantBalance("ana", 50, 0, 0)

	var cmds []bus.Command
	for i := range 8 {
		cmds = append(cmds, f.as(p.source, core.KindPartnerRefund, "ana",
			fmt.Sprintf("%s-r%d", pay, i), core.PartnerRefund{HoldTxnID: pay, Points: 30}))
	}
	ok := 0
	for _, r := range f.parallel(cmds...) {
		if r.Status == bus.StatusOK {
			ok++
			continue
		}
		wantRefused(t, r, core.Invalid, "points")
	}
	if ok != 3 {
		t.Fatalf("%d refunds of 30 granted on a payment of 100, want 3", ok)
	}
	f.wantBalance("ana", 140, 0, 0)
	f.wantLot(lot, 150, 140)
	tx, err := f.l.PartnerTransaction(context.Background(), p.source, pay)
	if err != nil || tx.Refunded != 90 {
		t.Fatalf("transaction %+v %v, want 90 refunded", tx, err)
	}
	f.check()
}

// TestAttack15CancelRacesReverseOfOrder: the cancellation of an order and
// a reversal of its redemption posting race: the points come back once.
func TestAttack15CancelRacesReverseOfOrder(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 300, Reason: "seed"})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		CancelWindowSeconds: 3600})
	for range 3 {
		o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(),
			core.PlaceOrder{Reward: "mug"}))
		f.wantBalance("ana", 200, 0, 0)
		res := f.parallel(
			f.command(core.KindOrderCancel, "ana", f.txn(), core.CancelOrder{OrderID: o.ID}),
			f.command(core.KindReverse, "ana", f.txn(), core.Reverse{PostingID: o.PostingID,
				Reason: "again"}),
			f.command(core.KindOrderCancel, "ana", f.txn(), core.CancelOrder{OrderID: o.ID}))
		ok := 0
		for _, r := range res {
			if r.Status == bus.StatusOK {
				ok++
			}
		}
		if ok != 1 {
			t.Fatalf("%d of a cancel, a reversal and a second cancel succeeded, want 1: %+v",
				ok, res)
		}
		f.wantBalance("ana", 300, 0, 0)
	}
	f.check()
}

// TestAttack15CrossTransfersNeverOverdraw: two members transfer to each
// other and redeem, all at once and many times over: no command fails
// outright (no deadlock left unresolved), no balance goes negative, and the
// points that leave through redemptions are exactly what the two lost.
func TestAttack15CrossTransfersNeverOverdraw(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	f.ok(core.KindCredit, "ben", core.Credit{Points: 100, Reason: "seed"})
	redeemed := core.Points(0)
	for round := range 6 {
		var cmds []bus.Command
		for i := range 3 {
			cmds = append(cmds,
				f.command(core.KindTransfer, "ana", f.txn(), core.Transfer{To: "ben",
					Points: core.Points(40 + i)}),
				f.command(core.KindTransfer, "ben", f.txn(), core.Transfer{To: "ana",
					Points: core.Points(45 + i)}),
				f.command(core.KindRedeem, []string{"ana", "ben"}[(round+i)%2], f.txn(),
					core.Redeem{Points: 7}))
		}
		for i, r := range f.parallel(cmds...) {
			if r.Status == bus.StatusOK {
				if cmds[i].Kind == core.KindRedeem {
					redeemed += 7
				}
				continue
			}
			wantRefused(t, r, core.Insufficient, "points")
		}
		a, b := f.balance("ana").Balance, f.balance("ben").Balance
		if a.Available < 0 || b.Available < 0 || a.Available+b.Available != 200-redeemed {
			t.Fatalf("round %d: ana %d ben %d, redeemed %d of 200", round, a.Available,
				b.Available, redeemed)
		}
	}
	f.check()
}

// TestAttack15ConversionHoldOutlivesItsLot: points held by a pending
// conversion do not expire with their lot, through a sweep or another
// command; when the other program refuses, the released points expire at
// once; when it confirms, the capture takes them. Balances equal postings
// and lots throughout.
func TestAttack15ConversionHoldOutlivesItsLot(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	lot := f.creditAt("ana", 500, f.now.Add(24*time.Hour))
	f.ok(core.KindCredit, "ana", core.Credit{Points: 50, Reason: "no expiry"})
	f.ok(core.KindExternalUpsert, "sky", airline("sky", ""))
	refused := f.convertGaps9("ana", 300)
	confirmed := f.convertGaps9("ana", 150)
	f.wantBalance("ana", 100, 0, 450)

	f.setNow(f.now.Add(48 * time.Hour))
	f.sweep(f.now)
	// 50 of the lot were free and expired; the 450 held stay.
	f.wantBalance("ana", 50, 0, 450)
	f.wantLot(lot, 500, 450)
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 10})
	f.wantBalance("ana", 40, 0, 450)

	settle := func(kind, txn string, payload any) {
		c := f.command(kind, "ana", txn, payload)
		c.Source = core.SourceConversion
		c.Seal()
		if r := f.apply(c); r.Status != bus.StatusOK {
			t.Fatalf("%s %s: %+v", kind, txn, r.Error)
		}
	}
	settle(core.KindRelease, core.ConversionReleaseTxn(refused),
		core.Release{HoldTxnID: core.ConversionHoldTxn(refused)})
	f.wantBalance("ana", 40, 0, 150)
	f.wantLot(lot, 500, 150)
	settle(core.KindCapture, core.ConversionCaptureTxn(confirmed),
		core.Capture{HoldTxnID: core.ConversionHoldTxn(confirmed)})
	f.wantBalance("ana", 40, 0, 0)
	f.wantLot(lot, 500, 0)
	var expired core.Points
	for _, p := range f.postingsOf("ana", core.PostExpiry) {
		expired -= p.Points
	}
	if expired != 350 {
		t.Fatalf("%d points expired, want 350 (50 free at the sweep, 300 on release)", expired)
	}
	f.check()
}

// TestAttack15HugeAndOddAmountsOnSpendPaths: amounts at and beyond the
// bounds on every spending command are refused about the field at fault,
// and nothing moves.
func TestAttack15HugeAndOddAmountsOnSpendPaths(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.enroll("ben")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1000, Reason: "seed"})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "car", Name: "Car",
		Points: core.MaxPoints})
	over := core.MaxPoints + 1
	cases := []struct {
		kind    string
		payload any
		want    core.ErrorKind
		field   string
	}{
		{core.KindRedeem, rawJSON(`{"points":9223372036854775808}`), core.Invalid, "points"},
		{core.KindRedeem, core.Redeem{Points: over}, core.Invalid, "points"},
		{core.KindRedeem, core.Redeem{Points: -5}, core.Invalid, "points"},
		{core.KindRedeem, rawJSON(`{"points":1.5}`), core.Invalid, "points"},
		{core.KindTransfer, core.Transfer{To: "ben", Points: over}, core.Invalid, "points"},
		{core.KindTransfer, core.Transfer{To: "ben", Points: 0}, core.Invalid, "points"},
		{core.KindTransfer, core.Transfer{To: "ana", Points: 1}, core.Invalid, "to"},
		{core.KindTransfer, core.Transfer{To: "bén", Points: 1}, core.Invalid, "to"},
		{core.KindAdjust, core.Adjust{Points: -over, Reason: "x"}, core.Invalid, "points"},
		{core.KindAdjust, core.Adjust{Points: -1001, Reason: "x"}, core.Insufficient, "points"},
		{core.KindAuthorize, core.Authorize{Points: 10, TTLSeconds: -1}, core.Invalid,
			"ttl_seconds"},
		{core.KindOrderPlace, core.PlaceOrder{Reward: "car", Quantity: 2}, core.Invalid,
			"quantity"},
		{core.KindOrderPlace, core.PlaceOrder{Reward: "car", Quantity: -1}, core.Invalid,
			"quantity"},
		{core.KindOrderPlace, core.PlaceOrder{Reward: "car"}, core.Insufficient, "points"},
		{core.KindPartnerClawback, core.PartnerClawback{Amount: "1e9"}, core.Invalid, "amount"},
		{core.KindPartnerClawback, core.PartnerClawback{Amount: "-3"}, core.Invalid, "amount"},
	}
	for _, c := range cases {
		r := f.do(c.kind, "ana", f.txn(), c.payload)
		if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Kind != string(c.want) ||
			r.Error.Field != c.field {
			body, _ := json.Marshal(c.payload)
			t.Errorf("%s %s: want %s about %q, got %s %+v", c.kind, body, c.want, c.field,
				r.Status, r.Error)
		}
	}
	f.wantBalance("ana", 1000, 0, 0)
	f.wantBalance("ben", 0, 0, 0)
	f.check()
}
