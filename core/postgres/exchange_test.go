package postgres

import (
	"context"
	"encoding/json"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// as returns the command of kind sent by source rather than the fixture's.
func (f *fixture) as(source, kind, member, txn string, payload any) bus.Command {
	f.t.Helper()
	c := f.command(kind, member, txn, payload)
	c.Source = source
	c.Seal()
	return c
}

// creditAt credits points expiring at exp and returns the new lot.
func (f *fixture) creditAt(ref string, n core.Points, exp time.Time) int64 {
	f.t.Helper()
	return lotOf(f.t, f.ok(core.KindCredit, ref, core.Credit{Points: n, Reason: "seed",
		ExpiresAt: &exp}))
}

func orderOf(t tb, r bus.Result) core.Order {
	t.Helper()
	if r.Status != bus.StatusOK {
		t.Fatalf("%s %s: want ok, got %s %+v", r.Kind, r.TxnID, r.Status, r.Error)
	}
	var o core.Order
	if err := json.Unmarshal(r.Data, &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func (f *fixture) reward(code string) *core.Reward {
	f.t.Helper()
	r, err := f.l.Reward(context.Background(), f.prog, code)
	if err != nil {
		f.t.Fatalf("reward %s: %v", code, err)
	}
	return r
}

func ptr[T any](v T) *T { return &v }

var voucherRE = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){4}$`)

// Two members race for the last unit of a reward: one order wins, the other
// is refused as out of stock and debits nothing. Cancelling the winner's
// order inside its window gives its points back to the same lots and the
// unit back to the stock, once.
func TestOrderLastUnitRace(t *testing.T) {
	f := newFixture(t, core.Program{})
	exp1 := f.now.Add(30 * 24 * time.Hour)
	exp2 := f.now.Add(60 * 24 * time.Hour)
	lots := map[string][2]int64{}
	for _, ref := range []string{"ana", "ben"} {
		f.enroll(ref)
		lots[ref] = [2]int64{f.creditAt(ref, 300, exp1), f.creditAt(ref, 500, exp2)}
	}
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "cinema", Name: "Cinema ticket",
		Points: 450, Stock: ptr(int64(1)), CancelWindowSeconds: 3600})

	res := f.parallel(
		f.command(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "cinema"}),
		f.command(core.KindOrderPlace, "ben", f.txn(), core.PlaceOrder{Reward: "cinema"}))
	winner, loser, w := "ana", "ben", res[0]
	if res[0].Status != bus.StatusOK {
		winner, loser, w = "ben", "ana", res[1]
		wantRefused(t, res[0], core.Conflict, "reward")
	} else {
		wantRefused(t, res[1], core.Conflict, "reward")
	}
	o := orderOf(t, w)
	if o.Points != 450 || o.Quantity != 1 || !voucherRE.MatchString(o.Voucher) ||
		o.Status != core.OrderPlaced {
		t.Fatalf("order %+v", o)
	}
	f.wantBalance(winner, 350, 0, 0)
	f.wantBalance(loser, 800, 0, 0)
	// FIFO: the lot expiring first goes first.
	f.wantLot(lots[winner][0], 300, 0)
	f.wantLot(lots[winner][1], 500, 350)
	if r := f.reward("cinema"); *r.Stock != 0 || r.Redeemed != 1 {
		t.Fatalf("stock %d redeemed %d, want 0 and 1", *r.Stock, r.Redeemed)
	}
	f.refused(core.KindOrderPlace, loser, core.PlaceOrder{Reward: "cinema"}, core.Conflict)

	// Cancel within the window: points back to their lots, the unit back.
	cancel := core.CancelOrder{OrderID: o.ID}
	out := f.ok(core.KindOrderCancel, winner, cancel)
	if out.Points != 450 {
		t.Fatalf("cancel gave back %d, want 450", out.Points)
	}
	f.wantBalance(winner, 800, 0, 0)
	f.wantLot(lots[winner][0], 300, 300)
	f.wantLot(lots[winner][1], 500, 500)
	if r := f.reward("cinema"); *r.Stock != 1 || r.Redeemed != 0 {
		t.Fatalf("after cancel: stock %d redeemed %d, want 1 and 0", *r.Stock, r.Redeemed)
	}
	f.refused(core.KindOrderCancel, winner, cancel, core.Conflict)
	f.wantBalance(winner, 800, 0, 0)
	if r := f.reward("cinema"); *r.Stock != 1 {
		t.Fatalf("a second cancel changed the stock to %d", *r.Stock)
	}
	got, err := f.l.Order(context.Background(), f.prog, winner, o.ID)
	if err != nil || got.Status != core.OrderCancelled || got.CancelledAt == nil {
		t.Fatalf("order after cancel: %+v %v", got, err)
	}

	// The loser gets the unit now; past the window the order stays.
	o2 := orderOf(t, f.do(core.KindOrderPlace, loser, f.txn(), core.PlaceOrder{Reward: "cinema"}))
	f.setNow(f.now.Add(2 * time.Hour))
	f.refused(core.KindOrderCancel, loser, core.CancelOrder{OrderID: o2.ID}, core.Conflict)
	f.wantBalance(loser, 350, 0, 0)
	// Another member cannot cancel someone else's order.
	f.refused(core.KindOrderCancel, winner, core.CancelOrder{OrderID: o2.ID}, core.NotFound)
	f.check()
}

// Limits, the validity window, the points-plus-money price and a
// shortfall each refuse an order or price it exactly, and a refusal
// debits nothing and takes no stock.
func TestOrderLimitsAndPrices(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	// Everyone reaches silver; gold takes 1,000 points of accruals (credits
	// do not qualify).
	f.ok(core.KindTiersSet, "", core.Tiers{WindowDays: 30, Levels: []core.TierLevel{
		{Code: "silver", MinPoints: 0, Multiplier: "1"},
		{Code: "gold", MinPoints: 1000, Multiplier: "1"}}})
	f.enroll("ana")
	f.enroll("ben")
	f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "bill_paid", Amount: "1000"})
	f.ok(core.KindAccrue, "ben", core.Accrue{EventType: "bill_paid", Amount: "1000"})
	f.ok(core.KindRedeem, "ben", core.Redeem{Points: 950, Reason: "spent"})
	from, until := f.now.Add(-time.Hour), f.now.Add(24*time.Hour)
	shop := "mugshop-" + f.prog
	f.ok(core.KindPartnerUpsert, "", core.Partner{Code: shop, Name: "Mug shop", Currency: "CLP",
		PointValue: "1"})
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		MoneyPoints: 40, MoneyAmount: "2.50", Stock: ptr(int64(10)), ValidFrom: &from,
		ValidUntil: &until, PerMemberLimit: ptr(int64(2)), ProgramLimit: ptr(int64(3)),
		Tiers: []string{"gold"}, Partner: shop})

	// A member whose tier is not listed may not redeem it.
	f.enroll("cid")
	f.ok(core.KindCredit, "cid", core.Credit{Points: 500, Reason: "seed"})
	f.refused(core.KindOrderPlace, "cid", core.PlaceOrder{Reward: "mug"}, core.Conflict)
	f.wantBalance("cid", 500, 0, 0)
	// A tier the program does not have is refused on the reward.
	r := f.do(core.KindRewardUpsert, "", f.txn(), core.Reward{Code: "cup", Name: "Cup",
		Points: 10, Tiers: []string{"platinum"}})
	wantRefused(t, r, core.Invalid, "tiers")

	// Quantity 2 at points plus money: 80 points and 5.00.
	o := orderOf(t, f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug",
		Quantity: 2, Price: core.PricePointsPlusMoney}))
	if o.Points != 80 || o.MoneyAmount != "5" || o.Balance.Available != 920 {
		t.Fatalf("order %+v", o)
	}
	// The per-member limit (2) is reached: one more would pass it.
	r = f.do(core.KindOrderPlace, "ana", f.txn(), core.PlaceOrder{Reward: "mug"})
	wantRefused(t, r, core.Conflict, "reward")
	if want := "1 more would pass the limit of 2 per member (2 redeemed, 0 left)"; r.Error.Message != want {
		t.Fatalf("refusal %q, want %q", r.Error.Message, want)
	}
	// Ben has too few points for one (100), then buys one: the program limit (3).
	f.refused(core.KindOrderPlace, "ben", core.PlaceOrder{Reward: "mug"}, core.Insufficient)
	f.ok(core.KindCredit, "ben", core.Credit{Points: 250, Reason: "seed"})
	f.ok(core.KindOrderPlace, "ben", core.PlaceOrder{Reward: "mug"})
	r = f.do(core.KindOrderPlace, "ben", f.txn(), core.PlaceOrder{Reward: "mug"})
	wantRefused(t, r, core.Conflict, "reward")
	if want := "1 more would pass the program-wide limit of 3 (3 redeemed, 0 left)"; r.Error.Message != want {
		t.Fatalf("refusal %q, want %q", r.Error.Message, want)
	}
	f.wantBalance("ana", 920, 0, 0)
	f.wantBalance("ben", 200, 0, 0)
	if r := f.reward("mug"); *r.Stock != 7 || r.Redeemed != 3 {
		t.Fatalf("stock %d redeemed %d, want 7 and 3", *r.Stock, r.Redeemed)
	}
	// Past the window the reward is off offer.
	f.setNow(until.Add(time.Second))
	f.ok(core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100,
		Stock: ptr(int64(7)), ValidUntil: &until})
	f.refused(core.KindOrderPlace, "ben", core.PlaceOrder{Reward: "mug"}, core.Conflict)
	f.refused(core.KindOrderPlace, "ben", core.PlaceOrder{Reward: "nope"}, core.NotFound)
	f.wantBalance("ben", 200, 0, 0)
	f.check()
}

// partnerCmds builds the commands a partner sends.
type partnerCmds struct {
	f      *fixture
	source string
}

func (p partnerCmds) do(kind, member, txn string, payload any) bus.Result {
	p.f.t.Helper()
	return p.f.apply(p.f.as(p.source, kind, member, txn, payload))
}

// Two partners authorize against the same 100 points at the same moment:
// one hold of 70 is granted, the other refused; nothing is overdrawn.
func TestPartnersRaceForOneBalance(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	res := f.parallel(
		f.as("partner:shop-a", core.KindAuthorize, "ana", f.prog+"-pay-1",
			core.Authorize{Points: 70}),
		f.as("partner:shop-b", core.KindAuthorize, "ana", f.prog+"-pay-1",
			core.Authorize{Points: 70}))
	won := 0
	for _, r := range res {
		if r.Status == bus.StatusOK {
			won++
		} else {
			wantRefused(t, r, core.Insufficient, "points")
		}
	}
	if won != 1 {
		t.Fatalf("%d holds granted, want 1", won)
	}
	f.wantBalance("ana", 30, 0, 70)
	f.check()
}

// A partial capture, then refunds: part, too much, the rest, once more.
func TestPartnerPartialCaptureThenRefund(t *testing.T) {
	f := newFixture(t, core.Program{})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	lot1 := f.creditAt("ana", 60, f.now.Add(10*24*time.Hour))
	lot2 := f.creditAt("ana", 40, f.now.Add(20*24*time.Hour))
	pay := f.prog + "-pay"

	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 80}))
	f.wantBalance("ana", 20, 0, 80)
	// Capture 50 of the 80: the rest (30) is released.
	outcomeOf(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay,
		Points: 50}))
	f.wantBalance("ana", 50, 0, 0)
	f.wantLot(lot1, 60, 10)
	f.wantLot(lot2, 40, 40)

	// Refund 20 of the 50.
	o := outcomeOf(t, p.do(core.KindPartnerRefund, "ana", pay+"-r1",
		core.PartnerRefund{HoldTxnID: pay, Points: 20}))
	if o.Points != 20 || o.Balance.Available != 70 {
		t.Fatalf("refund outcome %+v", o)
	}
	f.wantLot(lot1, 60, 30)
	// 40 is more than the 30 left.
	wantRefused(t, p.do(core.KindPartnerRefund, "ana", pay+"-r2",
		core.PartnerRefund{HoldTxnID: pay, Points: 40}), core.Invalid, "points")
	// The rest (points 0), then nothing is left.
	o = outcomeOf(t, p.do(core.KindPartnerRefund, "ana", pay+"-r3",
		core.PartnerRefund{HoldTxnID: pay}))
	if o.Points != 30 {
		t.Fatalf("refund of the rest gave %d, want 30", o.Points)
	}
	f.wantBalance("ana", 100, 0, 0)
	f.wantLot(lot1, 60, 60)
	wantRefused(t, p.do(core.KindPartnerRefund, "ana", pay+"-r4",
		core.PartnerRefund{HoldTxnID: pay, Points: 1}), core.Conflict, "hold_txn_id")
	// The capture cannot be reversed whole on top of its refunds.
	capture := f.postingsOf("ana", core.PostCapture)[0]
	f.refused(core.KindReverse, "ana", core.Reverse{PostingID: capture.ID, Reason: "again"},
		core.Conflict)
	// Another partner does not see this payment.
	other := partnerCmds{f: f, source: "partner:other-" + f.prog}
	wantRefused(t, other.do(core.KindPartnerRefund, "ana", pay+"-x",
		core.PartnerRefund{HoldTxnID: pay, Points: 1}), core.NotFound, "hold_txn_id")

	tx, err := f.l.PartnerTransaction(context.Background(), p.source, pay)
	if err != nil || tx.Captured != 50 || tx.Refunded != 50 || tx.Status != "captured" {
		t.Fatalf("transaction %+v %v", tx, err)
	}
	if _, err := f.l.PartnerTransaction(context.Background(), other.source,
		pay); core.KindOf(err) != core.NotFound {
		t.Fatalf("another partner's view: %v, want not_found", err)
	}
	f.check()
}

// The same refund sent twice is applied once: the retry gets the first
// result back.
func TestPartnerRefundAskedTwice(t *testing.T) {
	f := newFixture(t, core.Program{})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 60}))
	outcomeOf(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}))
	f.wantBalance("ana", 40, 0, 0)

	refund := core.PartnerRefund{HoldTxnID: pay, Points: 25}
	first := p.do(core.KindPartnerRefund, "ana", pay+"-r", refund)
	again := p.do(core.KindPartnerRefund, "ana", pay+"-r", refund)
	if !again.Replayed || !reflect.DeepEqual(outcomeOf(t, again), outcomeOf(t, first)) {
		t.Fatalf("retry: replayed %v data %s, want the first result %s", again.Replayed,
			again.Data, first.Data)
	}
	f.wantBalance("ana", 65, 0, 0)
	if n := len(f.postingsOf("ana", core.PostReversal)); n != 1 {
		t.Fatalf("%d refund postings, want 1", n)
	}
	// The same id with another amount is a conflict and changes nothing.
	wantRefused(t, p.do(core.KindPartnerRefund, "ana", pay+"-r",
		core.PartnerRefund{HoldTxnID: pay, Points: 35}), core.Conflict, "txn_id")
	f.wantBalance("ana", 65, 0, 0)
	f.check()
}

// A partner's hold that is neither captured nor voided releases itself
// when its time is up; a late capture is refused.
func TestPartnerHoldExpires(t *testing.T) {
	f := newFixture(t, core.Program{HoldTTLSeconds: 900})
	p := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	pay := f.prog + "-pay"
	outcomeOf(t, p.do(core.KindAuthorize, "ana", pay, core.Authorize{Points: 90,
		TTLSeconds: 120}))
	f.wantBalance("ana", 10, 0, 90)

	f.setNow(f.now.Add(3 * time.Minute))
	tx, err := f.l.PartnerTransaction(context.Background(), p.source, pay)
	if err != nil || tx.Status != "expired" {
		t.Fatalf("transaction past its time: %+v %v", tx, err)
	}
	f.sweep(f.now)
	f.wantBalance("ana", 100, 0, 0)
	wantRefused(t, p.do(core.KindCapture, "ana", pay+"-c", core.Capture{HoldTxnID: pay}),
		core.Conflict, "hold_txn_id")
	f.wantBalance("ana", 100, 0, 0)
	f.check()
}
