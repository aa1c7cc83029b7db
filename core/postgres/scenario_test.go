package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// The scenarios of the "Ledger" issue, each checked with the exact figures a
// member or an operator would look at.

// outcomeOf decodes the outcome of a command that must have been applied.
func outcomeOf(t tb, r bus.Result) core.Outcome {
	t.Helper()
	if r.Status != bus.StatusOK {
		t.Fatalf("%s %s: want ok, got %s %+v", r.Kind, r.TxnID, r.Status, r.Error)
	}
	var o core.Outcome
	if err := json.Unmarshal(r.Data, &o); err != nil {
		t.Fatalf("%s %s: decode outcome: %v", r.Kind, r.TxnID, err)
	}
	return o
}

// wantRefused fails unless r is a refusal of the given kind about field
// (any field when field is empty).
func wantRefused(t tb, r bus.Result, kind core.ErrorKind, field string) {
	t.Helper()
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Kind != string(kind) ||
		(field != "" && r.Error.Field != field) {
		t.Fatalf("%s %s: want refusal %s about %q, got %s %+v", r.Kind, r.TxnID, kind, field,
			r.Status, r.Error)
	}
}

// parallel applies each command in a batch of its own, all at the same
// moment, and returns the results in the order of cmds.
func (f *fixture) parallel(cmds ...bus.Command) []bus.Result {
	f.t.Helper()
	res := make([]bus.Result, len(cmds))
	errs := make([]error, len(cmds))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cmds {
		wg.Go(func() {
			<-start
			out, err := f.l.ApplyBatch(context.Background(), []bus.Command{cmds[i]})
			if err != nil {
				errs[i] = err
				return
			}
			res[i] = out[0].Result
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			f.t.Fatalf("apply %s %s in parallel: %v", cmds[i].Kind, cmds[i].TxnID, err)
		}
	}
	return res
}

// statement reads every posting of a member, newest first.
func (f *fixture) statement(ref string) []core.Posting {
	f.t.Helper()
	var all []core.Posting
	cursor := ""
	for {
		p, err := f.l.Statement(context.Background(), f.prog, ref, cursor, 500)
		if err != nil {
			f.t.Fatalf("statement %s: %v", ref, err)
		}
		all = append(all, p.Postings...)
		if p.Next == "" {
			return all
		}
		cursor = p.Next
	}
}

// postingsOf returns the member's postings of one kind, newest first.
func (f *fixture) postingsOf(ref, kind string) []core.Posting {
	f.t.Helper()
	var out []core.Posting
	for _, p := range f.statement(ref) {
		if p.Kind == kind {
			out = append(out, p)
		}
	}
	return out
}

// lot reads a lot, spent or not.
func (f *fixture) lot(id int64) core.Lot {
	f.t.Helper()
	var l core.Lot
	err := f.l.Pool().QueryRow(context.Background(), `SELECT id, earned_at, spendable_from,
			expires_at, pending, original, remaining, held FROM lots WHERE id = $1`, id).Scan(
		&l.ID, &l.EarnedAt, &l.SpendableFrom, &l.ExpiresAt, &l.Pending, &l.Original,
		&l.Remaining, &l.Held)
	if err != nil {
		f.t.Fatalf("read lot %d: %v", id, err)
	}
	return l
}

// wantLot checks a lot's original and remaining points.
func (f *fixture) wantLot(id int64, original, remaining core.Points) core.Lot {
	f.t.Helper()
	l := f.lot(id)
	if l.Original != original || l.Remaining != remaining {
		f.t.Fatalf("lot %d: original %d remaining %d, want %d and %d", id, l.Original,
			l.Remaining, original, remaining)
	}
	return l
}

// lotOf is the lot a credit command made.
func lotOf(t tb, o core.Outcome) int64 {
	t.Helper()
	if len(o.Lots) != 1 || o.Lots[0].Points <= 0 {
		t.Fatalf("credit outcome: want one new lot, got %+v", o.Lots)
	}
	return o.Lots[0].LotID
}

// sweep runs the expiry sweep as of at.
func (f *fixture) sweep(at time.Time) SweepResult {
	f.t.Helper()
	res, ran, err := f.l.Sweep(context.Background(), at, 0)
	if err != nil || !ran {
		f.t.Fatalf("sweep at %s: ran %v, %v", at, ran, err)
	}
	return res
}

func wantMoves(t tb, what string, got []core.LotMove, want ...core.LotMove) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: lot moves %+v, want %+v", what, got, want)
	}
}

// sameJSON reports whether two JSON texts hold the same value (PostgreSQL's
// jsonb does not keep the key order or the spacing).
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// 1. A credit whose answer was lost is sent again three times at once: one
// posting, and every replay answers with the first result.
func TestReplayInParallelAfterLostAnswer(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	c := f.command(core.KindCredit, "c1", f.txn(), core.Credit{Points: 250, Reason: "welcome"})
	first := f.apply(c) // the answer the caller never got
	o1 := outcomeOf(t, first)
	if len(o1.PostingIDs) != 1 {
		t.Fatalf("credit made postings %v, want one", o1.PostingIDs)
	}

	for i, r := range f.parallel(c, c, c) {
		o := outcomeOf(t, r)
		if !r.Replayed {
			t.Fatalf("replay %d: not marked as a replay", i)
		}
		if !slices.Equal(o.PostingIDs, o1.PostingIDs) || o.Balance != o1.Balance ||
			o.Points != 250 {
			t.Fatalf("replay %d: %+v, want the first result %+v", i, o, o1)
		}
	}
	f.wantBalance("c1", 250, 0, 0)
	if n := len(f.statement("c1")); n != 1 {
		t.Fatalf("%d postings, want 1", n)
	}
	f.check()
}

// 1b. Three copies of a command the ledger has never seen race for its
// transaction id: one applies it, the others replay its result.
func TestFirstSendRacesItsCopies(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	c := f.command(core.KindCredit, "c1", f.txn(), core.Credit{Points: 40, Reason: "bonus"})
	rs := f.parallel(c, c, c)
	var fresh int
	o0 := outcomeOf(t, rs[0])
	for _, r := range rs {
		o := outcomeOf(t, r)
		if !r.Replayed {
			fresh++
		}
		if !slices.Equal(o.PostingIDs, o0.PostingIDs) || len(o.PostingIDs) != 1 {
			t.Fatalf("results differ: %+v and %+v", o, o0)
		}
	}
	if fresh != 1 {
		t.Fatalf("%d copies applied the command, want 1", fresh)
	}
	f.wantBalance("c1", 40, 0, 0)
	if n := len(f.statement("c1")); n != 1 {
		t.Fatalf("%d postings, want 1", n)
	}
	f.check()
}

// 1c. A command that is refused, sent three times at once: every copy gets
// the same refusal and no batch fails.
func TestRefusalRacesItsCopies(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	f.ok(core.KindCredit, "c1", core.Credit{Points: 100, Reason: "welcome"})
	for round := range 20 {
		c := f.command(core.KindRedeem, "c1", f.txn(), core.Redeem{Points: 500 + core.Points(round)})
		for _, r := range f.parallel(c, c, c) {
			wantRefused(t, r, core.Insufficient, "points")
		}
	}
	f.wantBalance("c1", 100, 0, 0)
	if n := len(f.statement("c1")); n != 1 {
		t.Fatalf("%d postings, want 1", n)
	}
	f.check()
}

// 2. The same transaction id with another payload is a conflict and changes
// nothing; the original can still be replayed.
func TestSameTxnOtherPayloadConflicts(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	txn := f.txn()
	c := f.command(core.KindCredit, "c1", txn, core.Credit{Points: 100, Reason: "welcome"})
	first := outcomeOf(t, f.apply(c))

	wantRefused(t, f.do(core.KindCredit, "c1", txn, core.Credit{Points: 999, Reason: "welcome"}),
		core.Conflict, "txn_id")
	wantRefused(t, f.do(core.KindRedeem, "c1", txn, core.Redeem{Points: 10}),
		core.Conflict, "txn_id")
	wantRefused(t, f.do(core.KindCredit, "c2", txn, core.Credit{Points: 100, Reason: "welcome"}),
		core.Conflict, "txn_id")

	f.wantBalance("c1", 100, 0, 0)
	if n := len(f.statement("c1")); n != 1 {
		t.Fatalf("%d postings, want 1", n)
	}
	again := f.apply(c)
	if o := outcomeOf(t, again); !again.Replayed || !slices.Equal(o.PostingIDs, first.PostingIDs) {
		t.Fatalf("replay after the conflict: %+v, want %+v", o, first)
	}
	f.check()
}

// 3. Two redemptions of the whole balance race: one wins, nothing overdraws.
func TestRacingRedemptionsNeverOverdraw(t *testing.T) {
	f := newFixture(t, core.Program{})
	for round := range 5 {
		ref := fmt.Sprintf("c%d", round)
		f.enroll(ref)
		f.ok(core.KindCredit, ref, core.Credit{Points: 100, Reason: "welcome"})
		rs := f.parallel(
			f.command(core.KindRedeem, ref, f.txn(), core.Redeem{Points: 100}),
			f.command(core.KindRedeem, ref, f.txn(), core.Redeem{Points: 100}))
		var won int
		for _, r := range rs {
			if r.Status == bus.StatusOK {
				won++
				if o := outcomeOf(t, r); o.Balance != (core.Balance{}) {
					t.Fatalf("winner's balance %+v, want zero", o.Balance)
				}
			} else {
				wantRefused(t, r, core.Insufficient, "points")
			}
		}
		if won != 1 {
			t.Fatalf("%d redemptions succeeded, want 1", won)
		}
		f.wantBalance(ref, 0, 0, 0)
		if n := len(f.postingsOf(ref, core.PostRedemption)); n != 1 {
			t.Fatalf("%d redemption postings, want 1", n)
		}
	}
	f.check()
}

// holdStatus reads a hold's status and captured points.
func (f *fixture) holdStatus(txn string) (string, int64) {
	f.t.Helper()
	var status string
	var captured int64
	err := f.l.Pool().QueryRow(context.Background(), `SELECT status, captured FROM holds
		WHERE source = 'test' AND txn_id = $1`, txn).Scan(&status, &captured)
	if err != nil {
		f.t.Fatalf("read hold %s: %v", txn, err)
	}
	return status, captured
}

// 4. Holds count against what is available; a capture never exceeds its
// hold; released and expired holds cannot be captured.
func TestHoldsCaptureRelease(t *testing.T) {
	f := newFixture(t, core.Program{HoldTTLSeconds: 900})
	f.enroll("c1")
	f.ok(core.KindCredit, "c1", core.Credit{Points: 5000, Reason: "welcome"})

	txns := make([]string, 6)
	cmds := make([]bus.Command, 6)
	for i := range cmds {
		txns[i] = f.txn()
		cmds[i] = f.command(core.KindAuthorize, "c1", txns[i], core.Authorize{Points: 1000})
	}
	var approved []string
	var refused string
	for i, r := range f.parallel(cmds...) {
		if r.Status == bus.StatusOK {
			approved = append(approved, txns[i])
			continue
		}
		wantRefused(t, r, core.Insufficient, "points")
		refused = txns[i]
	}
	if len(approved) != 5 || refused == "" {
		t.Fatalf("%d holds approved, want 5 and one refused", len(approved))
	}
	f.wantBalance("c1", 0, 0, 5000)

	// The refused authorization left no hold to capture.
	f.refused(core.KindCapture, "c1", core.Capture{HoldTxnID: refused}, core.NotFound)

	// A partial capture takes 600 and gives the other 400 back.
	a, b, c, d := approved[0], approved[1], approved[2], approved[3]
	o := f.ok(core.KindCapture, "c1", core.Capture{HoldTxnID: a, Points: 600})
	if o.Points != -600 || len(o.PostingIDs) != 2 {
		t.Fatalf("capture outcome %+v, want -600 in a capture and a release posting", o)
	}
	f.wantBalance("c1", 400, 0, 4000)
	if st, n := f.holdStatus(a); st != "captured" || n != 600 {
		t.Fatalf("hold a: %s %d, want captured 600", st, n)
	}
	caps := f.postingsOf("c1", core.PostCapture)
	rels := f.postingsOf("c1", core.PostRelease)
	if len(caps) != 1 || caps[0].Points != 0 || caps[0].HeldDelta != -600 ||
		len(rels) != 1 || rels[0].Points != 400 || rels[0].HeldDelta != -400 {
		t.Fatalf("capture postings %+v, release postings %+v", caps, rels)
	}

	// A capture above its hold is refused; so is a second capture.
	f.refused(core.KindCapture, "c1", core.Capture{HoldTxnID: b, Points: 1001}, core.Invalid)
	f.refused(core.KindCapture, "c1", core.Capture{HoldTxnID: a, Points: 1}, core.Conflict)

	// A released hold cannot be captured.
	f.ok(core.KindRelease, "c1", core.Release{HoldTxnID: b})
	f.wantBalance("c1", 1400, 0, 3000)
	f.refused(core.KindCapture, "c1", core.Capture{HoldTxnID: b}, core.Conflict)
	f.refused(core.KindRelease, "c1", core.Release{HoldTxnID: b}, core.Conflict)

	// Past its time a hold cannot be captured, and its points are available
	// again once the ledger has caught up with the clock.
	f.setNow(f.now.Add(900 * time.Second))
	f.refused(core.KindCapture, "c1", core.Capture{HoldTxnID: c}, core.Conflict)
	f.sweep(f.now)
	f.wantBalance("c1", 4400, 0, 0)
	f.refused(core.KindCapture, "c1", core.Capture{HoldTxnID: d, Points: 10}, core.Conflict)
	for _, h := range approved[2:] {
		if st, n := f.holdStatus(h); st != "expired" || n != 0 {
			t.Fatalf("hold %s: %s %d, want expired 0", h, st, n)
		}
	}
	f.ok(core.KindRedeem, "c1", core.Redeem{Points: 4400})
	f.wantBalance("c1", 0, 0, 0)
	f.check()
}

// 5. A refund of a redemption after one of the lots it took has expired:
// those points come back and expire at once; the others go back to their
// lot with its own expiry.
func TestReverseRedemptionAfterLotExpired(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	t0 := f.now
	expA, expB := t0.Add(48*time.Hour), t0.Add(30*24*time.Hour)
	lotA := lotOf(t, f.ok(core.KindCredit, "c1",
		core.Credit{Points: 100, Reason: "a", ExpiresAt: &expA}))
	lotB := lotOf(t, f.ok(core.KindCredit, "c1",
		core.Credit{Points: 100, Reason: "b", ExpiresAt: &expB}))

	red := f.command(core.KindRedeem, "c1", f.txn(), core.Redeem{Points: 150})
	ro := outcomeOf(t, f.apply(red))
	wantMoves(t, "redemption", ro.Lots, core.LotMove{LotID: lotA, Points: -100},
		core.LotMove{LotID: lotB, Points: -50})

	// A expires with nothing left in it.
	f.setNow(t0.Add(72 * time.Hour))
	f.sweep(f.now)
	f.wantBalance("c1", 50, 0, 0)
	if n := len(f.postingsOf("c1", core.PostExpiry)); n != 0 {
		t.Fatalf("%d expiry postings for an empty lot, want 0", n)
	}

	o := f.ok(core.KindReverse, "c1", core.Reverse{OriginalTxnID: red.TxnID, Reason: "refund"})
	if o.Points != 150 || len(o.PostingIDs) != 2 {
		t.Fatalf("reversal outcome %+v, want 150 in a reversal and an expiry posting", o)
	}
	f.wantBalance("c1", 100, 0, 0)
	f.wantLot(lotA, 100, 0)
	if l := f.wantLot(lotB, 100, 100); l.ExpiresAt == nil || !l.ExpiresAt.Equal(expB) {
		t.Fatalf("lot B expires at %v, want %v", l.ExpiresAt, expB)
	}
	st := f.statement("c1")
	if st[0].Kind != core.PostExpiry || st[0].Points != -100 {
		t.Fatalf("newest posting %+v, want an expiry of 100", st[0])
	}
	wantMoves(t, "expiry", st[0].Lots, core.LotMove{LotID: lotA, Points: -100})
	if st[1].Kind != core.PostReversal || st[1].Points != 150 || st[1].ReversesID != ro.PostingIDs[0] {
		t.Fatalf("posting %+v, want the reversal of %d", st[1], ro.PostingIDs[0])
	}
	wantMoves(t, "reversal", st[1].Lots, core.LotMove{LotID: lotA, Points: 100},
		core.LotMove{LotID: lotB, Points: 50})

	// Nothing is left to expire, now or at A's time.
	f.sweep(f.now)
	if n := len(f.postingsOf("c1", core.PostExpiry)); n != 1 {
		t.Fatalf("%d expiry postings, want 1", n)
	}
	f.wantBalance("c1", 100, 0, 0)

	// B expires at its own time.
	f.setNow(expB)
	f.sweep(expB)
	f.wantBalance("c1", 0, 0, 0)
	f.wantLot(lotB, 100, 0)
	f.check()
}

// 6. A posting is reversed at most once, however many reversals race.
func TestReversalAtMostOnce(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	f.ok(core.KindCredit, "c1", core.Credit{Points: 300, Reason: "welcome"})
	red := f.command(core.KindRedeem, "c1", f.txn(), core.Redeem{Points: 120})
	pid := outcomeOf(t, f.apply(red)).PostingIDs[0]
	f.wantBalance("c1", 180, 0, 0)

	rev := func() bus.Command {
		return f.command(core.KindReverse, "c1", f.txn(),
			core.Reverse{PostingID: pid, Reason: "refund"})
	}
	var ok int
	for _, r := range f.parallel(rev(), rev(), rev()) {
		if r.Status == bus.StatusOK {
			ok++
			continue
		}
		wantRefused(t, r, core.Conflict, "posting_id")
	}
	if ok != 1 {
		t.Fatalf("%d reversals applied, want 1", ok)
	}
	f.refused(core.KindReverse, "c1", core.Reverse{OriginalTxnID: red.TxnID, Reason: "again"},
		core.Conflict)
	f.wantBalance("c1", 300, 0, 0)
	if n := len(f.postingsOf("c1", core.PostReversal)); n != 1 {
		t.Fatalf("%d reversal postings, want 1", n)
	}
	f.check()
}

// 7. A partly spent lot that expires loses only what is left of it, once.
func TestPartlySpentLotExpires(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	exp := f.now.Add(10 * 24 * time.Hour)
	lot := lotOf(t, f.ok(core.KindCredit, "c1",
		core.Credit{Points: 100, Reason: "bonus", ExpiresAt: &exp}))
	f.ok(core.KindRedeem, "c1", core.Redeem{Points: 30})

	f.setNow(exp.Add(-time.Second))
	f.sweep(f.now)
	f.wantBalance("c1", 70, 0, 0)

	f.setNow(exp)
	f.sweep(exp)
	f.wantBalance("c1", 0, 0, 0)
	f.wantLot(lot, 100, 0)
	exps := f.postingsOf("c1", core.PostExpiry)
	if len(exps) != 1 || exps[0].Points != -70 || exps[0].Source != "puntos.sweep" {
		t.Fatalf("expiry postings %+v, want one of -70 by the sweep", exps)
	}
	wantMoves(t, "expiry", exps[0].Lots, core.LotMove{LotID: lot, Points: -70})

	f.sweep(exp)
	f.sweep(exp.Add(24 * time.Hour))
	if n := len(f.postingsOf("c1", core.PostExpiry)); n != 1 {
		t.Fatalf("%d expiry postings after sweeping again, want 1", n)
	}
	f.check()
}

// 8. Expiry follows the program's calendar in America/Santiago, daylight
// saving changes included. In 2026 Chile's clocks go back at the end of
// Saturday 4 April (a 25-hour day) and forward at the end of Saturday
// 5 September (Sunday 6 September has 23 hours and starts at 01:00).
func TestExpiryAcrossDaylightSaving(t *testing.T) {
	f := newFixture(t, core.Program{TimeZone: "America/Santiago",
		ExpiryUnit: core.ExpiryDays, ExpiryLength: 25})
	earn := func(ref string, at time.Time) int64 {
		t.Helper()
		f.setNow(at)
		f.enroll(ref)
		return lotOf(t, f.ok(core.KindAccrue, ref, core.Accrue{EventType: "topup", Amount: "100"}))
	}
	wantExpiry := func(lot int64, want time.Time) {
		t.Helper()
		if l := f.lot(lot); l.ExpiresAt == nil || !l.ExpiresAt.Equal(want) {
			t.Fatalf("lot %d expires at %v, want %v", lot, l.ExpiresAt, want)
		}
	}
	expiries := func(ref string) int {
		t.Helper()
		return len(f.postingsOf(ref, core.PostExpiry))
	}

	// Earned on 10 March: the last day is Saturday 4 April, the long night.
	apr := earn("apr", ts("2026-03-10T15:00:00Z"))
	wantExpiry(apr, ts("2026-04-05T04:00:00Z")) // Sunday 00:00 -04

	f.setNow(ts("2026-04-05T03:30:00Z")) // the second 23:30 of that Saturday
	f.ok(core.KindRedeem, "apr", core.Redeem{Points: 5})
	f.setNow(ts("2026-04-05T03:59:59Z")) // its last second
	f.sweep(f.now)
	f.ok(core.KindRedeem, "apr", core.Redeem{Points: 5})
	f.wantBalance("apr", 90, 0, 0)

	f.setNow(ts("2026-04-05T04:00:00Z"))
	f.refused(core.KindRedeem, "apr", core.Redeem{Points: 1}, core.Insufficient)
	f.sweep(f.now)
	f.sweep(f.now.Add(time.Hour))
	f.wantBalance("apr", 0, 0, 0)
	if n := expiries("apr"); n != 1 {
		t.Fatalf("apr: %d expiry postings, want 1", n)
	}

	// Earned on 11 August: the last day is Saturday 5 September, whose
	// midnight does not exist. Earned on 12 August: the short Sunday.
	sat := earn("sat", ts("2026-08-11T15:00:00Z"))
	sun := earn("sun", ts("2026-08-12T15:00:00Z"))
	wantExpiry(sat, ts("2026-09-06T04:00:00Z")) // Sunday 01:00 -03
	wantExpiry(sun, ts("2026-09-07T03:00:00Z")) // Monday 00:00 -03

	f.setNow(ts("2026-09-06T03:59:59Z"))
	f.sweep(f.now)
	f.ok(core.KindRedeem, "sat", core.Redeem{Points: 1})
	f.setNow(ts("2026-09-06T04:00:00Z"))
	f.sweep(f.now)
	f.wantBalance("sat", 0, 0, 0)
	f.wantBalance("sun", 100, 0, 0)

	f.setNow(ts("2026-09-07T02:59:59Z")) // Sunday 23:59:59 -03
	f.ok(core.KindRedeem, "sun", core.Redeem{Points: 1})
	f.sweep(f.now)
	f.wantBalance("sun", 99, 0, 0)
	f.setNow(ts("2026-09-07T03:00:00Z"))
	f.sweep(f.now)
	f.sweep(f.now)
	f.wantBalance("sun", 0, 0, 0)
	f.wantLot(sat, 100, 0)
	f.wantLot(sun, 100, 0)
	if a, b := expiries("sat"), expiries("sun"); a != 1 || b != 1 {
		t.Fatalf("expiry postings: sat %d, sun %d, want one each", a, b)
	}
	f.check()
}

// 8b. Points of an event that reaches the ledger after their expiry are
// expired at once, not shown as available.
func TestLateAccrualAlreadyExpired(t *testing.T) {
	f := newFixture(t, core.Program{ExpiryUnit: core.ExpiryDays, ExpiryLength: 30})
	f.enroll("c1")
	c := f.command(core.KindAccrue, "c1", f.txn(), core.Accrue{EventType: "topup", Amount: "80"})
	c.OccurredAt = f.now.Add(-60 * 24 * time.Hour)
	c.Seal()
	o := outcomeOf(t, f.apply(c))
	f.wantBalance("c1", 0, 0, 0)
	f.wantLot(lotOf(t, o), 80, 0)
	if n := len(f.postingsOf("c1", core.PostExpiry)); n != 1 {
		t.Fatalf("%d expiry postings, want 1", n)
	}
	f.check()
}

// 9. A reversal of a credit claws back what is left of it, takes what was
// spent from the member's other points, and follows the program's
// negative-balance policy for the rest.
func TestReverseCreditNegativePolicy(t *testing.T) {
	setup := func(t *testing.T, policy string) (*fixture, bus.Command, int64, int64) {
		f := newFixture(t, core.Program{NegativeBalance: policy})
		f.enroll("c1")
		a := f.command(core.KindCredit, "c1", f.txn(), core.Credit{Points: 100, Reason: "a"})
		lotA := lotOf(t, outcomeOf(t, f.apply(a)))
		f.setNow(f.now.Add(time.Minute))
		lotB := lotOf(t, f.ok(core.KindCredit, "c1", core.Credit{Points: 50, Reason: "b"}))
		o := f.ok(core.KindRedeem, "c1", core.Redeem{Points: 60})
		wantMoves(t, "redemption", o.Lots, core.LotMove{LotID: lotA, Points: -60})
		f.wantBalance("c1", 90, 0, 0)
		return f, a, lotA, lotB
	}

	t.Run("forbid", func(t *testing.T) {
		f, a, lotA, lotB := setup(t, core.NegativeForbid)
		o := f.ok(core.KindReverse, "c1", core.Reverse{OriginalTxnID: a.TxnID, Reason: "fraud"})
		if o.Points != -90 || o.Written != 10 {
			t.Fatalf("outcome %+v, want -90 taken and 10 written off", o)
		}
		wantMoves(t, "reversal", o.Lots, core.LotMove{LotID: lotA, Points: -40},
			core.LotMove{LotID: lotB, Points: -50})
		f.wantBalance("c1", 0, 0, 0)
		f.wantLot(lotA, 100, 0)
		f.wantLot(lotB, 50, 0)

		// Nothing was spent: the credit comes back whole.
		f.enroll("c2")
		c := f.command(core.KindCredit, "c2", f.txn(), core.Credit{Points: 70, Reason: "x"})
		outcomeOf(t, f.apply(c))
		o = f.ok(core.KindReverse, "c2", core.Reverse{OriginalTxnID: c.TxnID, Reason: "error"})
		if o.Points != -70 || o.Written != 0 {
			t.Fatalf("outcome %+v, want -70 taken", o)
		}
		f.wantBalance("c2", 0, 0, 0)
		f.check()
	})

	t.Run("allow", func(t *testing.T) {
		f, a, lotA, lotB := setup(t, core.NegativeAllow)
		o := f.ok(core.KindReverse, "c1", core.Reverse{OriginalTxnID: a.TxnID, Reason: "fraud"})
		if o.Points != -100 || o.Written != 0 {
			t.Fatalf("outcome %+v, want -100 taken, nothing written off", o)
		}
		f.wantBalance("c1", -10, 0, 0)
		f.wantLot(lotA, 100, 0)
		f.wantLot(lotB, 50, 0)
		f.refused(core.KindRedeem, "c1", core.Redeem{Points: 1}, core.Insufficient)
		f.check()

		// Later credits repay the debt first.
		c := lotOf(t, f.ok(core.KindCredit, "c1", core.Credit{Points: 4, Reason: "c"}))
		f.wantBalance("c1", -6, 0, 0)
		f.wantLot(c, 4, 0)
		d := lotOf(t, f.ok(core.KindCredit, "c1", core.Credit{Points: 25, Reason: "d"}))
		f.wantBalance("c1", 19, 0, 0)
		f.wantLot(d, 25, 19)
		f.ok(core.KindRedeem, "c1", core.Redeem{Points: 19})
		f.wantBalance("c1", 0, 0, 0)
		f.check()
	})
}

// 10. Points in their holding period are pending: not spendable until the
// period ends and the ledger catches up (a sweep or any spending command).
func TestPendingPoints(t *testing.T) {
	f := newFixture(t, core.Program{PendingDays: 3})
	f.enroll("c1")
	f.enroll("c2")
	l1 := lotOf(t, f.ok(core.KindAccrue, "c1", core.Accrue{EventType: "topup", Amount: "100"}))
	f.ok(core.KindAccrue, "c2", core.Accrue{EventType: "topup", Amount: "100"})
	f.wantBalance("c1", 0, 100, 0)
	lot := f.lot(l1)
	from := ts("2026-03-13T03:00:00Z") // 13 March 00:00 in Santiago (-03)
	if !lot.Pending || !lot.SpendableFrom.Equal(from) {
		t.Fatalf("lot %+v, want pending until %v", lot, from)
	}
	f.refused(core.KindRedeem, "c1", core.Redeem{Points: 1}, core.Insufficient)
	f.refused(core.KindAuthorize, "c1", core.Authorize{Points: 1}, core.Insufficient)

	f.setNow(from.Add(-time.Second))
	f.sweep(f.now)
	f.wantBalance("c1", 0, 100, 0)
	f.refused(core.KindRedeem, "c1", core.Redeem{Points: 1}, core.Insufficient)

	// A spending command brings c2 up to date by itself.
	f.setNow(from)
	f.ok(core.KindRedeem, "c2", core.Redeem{Points: 40})
	f.wantBalance("c2", 60, 0, 0)

	// The sweep does it for c1; a read at this instant already counts the
	// points spendable, as a spend would find them.
	f.wantBalance("c1", 100, 0, 0)
	if ms := f.postingsOf("c1", core.PostMaturation); len(ms) != 0 {
		t.Fatalf("maturation postings %+v before the sweep", ms)
	}
	f.sweep(f.now)
	f.wantBalance("c1", 100, 0, 0)
	if ms := f.postingsOf("c1", core.PostMaturation); len(ms) != 1 || ms[0].Points != 100 ||
		ms[0].PendingDelta != -100 {
		t.Fatalf("maturation postings %+v, want one of 100", ms)
	}
	f.sweep(f.now)
	f.wantBalance("c1", 100, 0, 0)
	f.ok(core.KindRedeem, "c1", core.Redeem{Points: 100})
	f.wantBalance("c1", 0, 0, 0)
	f.check()
}

// 11. Transfers and merges keep the lots' dates; suspended members cannot
// earn or spend; closing forfeits the balance; closed members refuse all.
func TestTransferMergeSuspendClose(t *testing.T) {
	f := newFixture(t, core.Program{})
	for _, ref := range []string{"c1", "c2", "c3"} {
		f.enroll(ref)
	}
	t0 := f.now
	e1, e2, e3 := t0.Add(10*24*time.Hour), t0.Add(40*24*time.Hour), t0.Add(20*24*time.Hour)
	f.ok(core.KindCredit, "c1", core.Credit{Points: 100, Reason: "a", ExpiresAt: &e1})
	f.ok(core.KindCredit, "c1", core.Credit{Points: 100, Reason: "b", ExpiresAt: &e2})

	// Transfer: 100 points expiring at e1 and 50 at e2 change hands.
	o := f.ok(core.KindTransfer, "c1", core.Transfer{To: "c2", Points: 150})
	if o.Points != -150 || len(o.PostingIDs) != 2 {
		t.Fatalf("transfer outcome %+v", o)
	}
	f.wantBalance("c1", 50, 0, 0)
	f.wantBalance("c2", 150, 0, 0)
	wantLots := func(ref string, want ...[2]any) {
		t.Helper()
		lots := f.balance(ref).Lots
		if len(lots) != len(want) {
			t.Fatalf("%s: %d lots, want %d: %+v", ref, len(lots), len(want), lots)
		}
		for i, w := range want {
			exp := w[1].(time.Time)
			if lots[i].Remaining != w[0].(core.Points) || lots[i].ExpiresAt == nil ||
				!lots[i].ExpiresAt.Equal(exp) || !lots[i].EarnedAt.Equal(t0) {
				t.Fatalf("%s lot %d: %+v, want %d expiring %v, earned %v", ref, i, lots[i],
					w[0], exp, t0)
			}
		}
	}
	wantLots("c1", [2]any{core.Points(50), e2})
	wantLots("c2", [2]any{core.Points(100), e1}, [2]any{core.Points(50), e2})
	f.refused(core.KindTransfer, "c1", core.Transfer{To: "c2", Points: 51}, core.Insufficient)
	f.refused(core.KindTransfer, "c1", core.Transfer{To: "c1", Points: 1}, core.Invalid)
	f.refused(core.KindTransfer, "c1", core.Transfer{To: "nobody", Points: 1}, core.NotFound)

	// Merge c3 into c2: its lot keeps its dates; "c3" now means c2.
	f.ok(core.KindCredit, "c3", core.Credit{Points: 70, Reason: "c", ExpiresAt: &e3})
	f.ok(core.KindMerge, "c3", core.Merge{Into: "c2"})
	b := f.balance("c3")
	if b.Member != "c2" || b.Balance.Available != 220 {
		t.Fatalf("balance by the merged reference: %+v, want c2 with 220", b)
	}
	wantLots("c2", [2]any{core.Points(100), e1}, [2]any{core.Points(70), e3},
		[2]any{core.Points(50), e2})
	f.ok(core.KindRedeem, "c3", core.Redeem{Points: 10})
	f.wantBalance("c2", 210, 0, 0)
	if n := len(f.postingsOf("c3", core.PostMergeIn)); n != 1 {
		t.Fatalf("survivor has %d merge_in postings, want 1", n)
	}
	var merged string
	if err := f.l.Pool().QueryRow(context.Background(), `SELECT m.status FROM members m
		JOIN programs p ON p.id = m.program_id WHERE p.code = $1 AND m.customer_ref = 'c3'`,
		f.prog).Scan(&merged); err != nil || merged != "merged" {
		t.Fatalf("c3 status %q, %v", merged, err)
	}

	// Suspended: no earning, no spending; back to normal once reactivated.
	f.ok(core.KindSuspend, "c2", core.StatusChange{Reason: "review"})
	f.refused(core.KindAccrue, "c2", core.Accrue{EventType: "topup", Amount: "10"}, core.Conflict)
	f.refused(core.KindCredit, "c2", core.Credit{Points: 10, Reason: "x"}, core.Conflict)
	f.refused(core.KindRedeem, "c2", core.Redeem{Points: 10}, core.Conflict)
	f.refused(core.KindAuthorize, "c2", core.Authorize{Points: 10}, core.Conflict)
	f.refused(core.KindTransfer, "c2", core.Transfer{To: "c1", Points: 10}, core.Conflict)
	f.refused(core.KindTransfer, "c1", core.Transfer{To: "c2", Points: 10}, core.Conflict)
	f.wantBalance("c2", 210, 0, 0)
	f.ok(core.KindReactivate, "c2", core.StatusChange{Reason: "ok"})
	f.ok(core.KindAccrue, "c2", core.Accrue{EventType: "topup", Amount: "10"})
	f.wantBalance("c2", 220, 0, 0)

	// Closing c1 with an open hold is refused (the partner's capture would
	// fail); once the hold is released everything it has left is forfeited,
	// within the bound the close gives.
	hold := f.command(core.KindAuthorize, "c1", f.txn(), core.Authorize{Points: 20})
	outcomeOf(t, f.apply(hold))
	f.wantBalance("c1", 30, 0, 20)
	f.refused(core.KindClose, "c1", core.StatusChange{Reason: "customer left"}, core.Conflict)
	f.wantBalance("c1", 30, 0, 20)
	f.ok(core.KindRelease, "c1", core.Release{HoldTxnID: hold.TxnID})
	bound := core.Points(49)
	f.refused(core.KindClose, "c1", core.StatusChange{Reason: "customer left",
		MaxForfeit: &bound}, core.Conflict)
	bound = 50
	f.ok(core.KindClose, "c1", core.StatusChange{Reason: "customer left", MaxForfeit: &bound})
	f.wantBalance("c1", 0, 0, 0)
	ff := f.postingsOf("c1", core.PostForfeit)
	if len(ff) != 1 || ff[0].Points != -50 {
		t.Fatalf("forfeit postings %+v, want one of -50", ff)
	}
	before := len(f.statement("c1"))

	refusals := []struct {
		kind    string
		payload any
	}{
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "10"}},
		{core.KindCredit, core.Credit{Points: 10, Reason: "x"}},
		{core.KindRedeem, core.Redeem{Points: 1}},
		{core.KindAuthorize, core.Authorize{Points: 1}},
		{core.KindCapture, core.Capture{HoldTxnID: hold.TxnID}},
		{core.KindRelease, core.Release{HoldTxnID: hold.TxnID}},
		{core.KindReverse, core.Reverse{PostingID: ff[0].ID, Reason: "x"}},
		{core.KindAdjust, core.Adjust{Points: 10, Reason: "x"}},
		{core.KindAdjust, core.Adjust{Points: -10, Reason: "x"}},
		{core.KindTransfer, core.Transfer{To: "c2", Points: 1}},
		{core.KindMerge, core.Merge{Into: "c2"}},
		{core.KindSuspend, core.StatusChange{Reason: "x"}},
		{core.KindReactivate, core.StatusChange{Reason: "x"}},
		{core.KindClose, core.StatusChange{Reason: "x"}},
	}
	for _, r := range refusals {
		f.refused(r.kind, "c1", r.payload, core.Conflict)
	}
	f.refused(core.KindTransfer, "c2", core.Transfer{To: "c1", Points: 1}, core.Conflict)
	f.refused(core.KindMerge, "c2", core.Merge{Into: "c1"}, core.Conflict)
	if n := len(f.statement("c1")); n != before {
		t.Fatalf("closed member got %d new postings", n-before)
	}
	f.wantBalance("c1", 0, 0, 0)
	f.wantBalance("c2", 220, 0, 0)
	f.check()
}

// 12. A manual adjustment names why and who; it cannot take more than is
// available.
func TestManualAdjustment(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	f.refused(core.KindAdjust, "c1", core.Adjust{Points: 50}, core.Invalid)
	f.refused(core.KindAdjust, "c1", core.Adjust{Points: 50, Reason: "  "}, core.Invalid)
	c := f.command(core.KindAdjust, "c1", f.txn(), core.Adjust{Points: 50, Reason: "goodwill"})
	c.Actor = ""
	c.Seal()
	wantRefused(t, f.apply(c), core.Invalid, "actor")

	o := f.ok(core.KindAdjust, "c1", core.Adjust{Points: 50, Reason: "goodwill"})
	if o.Points != 50 {
		t.Fatalf("outcome %+v", o)
	}
	f.refused(core.KindAdjust, "c1", core.Adjust{Points: -51, Reason: "error"}, core.Insufficient)
	f.ok(core.KindAdjust, "c1", core.Adjust{Points: -20, Reason: "error"})
	f.wantBalance("c1", 30, 0, 0)
	adj := f.postingsOf("c1", core.PostAdjustment)
	if len(adj) != 2 || adj[0].Points != -20 || adj[1].Points != 50 ||
		adj[0].Actor != "tester" || adj[0].Reason != "error" {
		t.Fatalf("adjustment postings %+v", adj)
	}
	f.check()
}

// 13. Bad input is refused as invalid, naming the field, and posts nothing;
// large amounts never wrap.
func TestBadInputAndOverflow(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	f.ok(core.KindCredit, "c1", core.Credit{Points: 1000, Reason: "welcome"})
	hold := f.command(core.KindAuthorize, "c1", f.txn(), core.Authorize{Points: 10})
	outcomeOf(t, f.apply(hold))
	before := len(f.statement("c1"))

	raw := func(s string) rawJSON { return rawJSON(s) }
	cases := []struct {
		kind    string
		payload any
		field   string
	}{
		{core.KindCredit, core.Credit{Points: 0, Reason: "x"}, "points"},
		{core.KindCredit, core.Credit{Points: -5, Reason: "x"}, "points"},
		{core.KindCredit, core.Credit{Points: core.MaxPoints + 1, Reason: "x"}, "points"},
		{core.KindCredit, core.Credit{Points: 5}, "reason"},
		{core.KindCredit, raw(`{"points":1e5,"reason":"x"}`), "points"},
		{core.KindCredit, raw(`{"points":12.5,"reason":"x"}`), "points"},
		{core.KindCredit, raw(`{"points":"100","reason":"x"}`), "points"},
		{core.KindCredit, raw(`{"points":99999999999999999999,"reason":"x"}`), "points"},
		{core.KindCredit, raw(`{"points":10,"reason":"x","bonus":5}`), "bonus"},
		{core.KindRedeem, core.Redeem{Points: 0}, "points"},
		{core.KindRedeem, core.Redeem{Points: -1}, "points"},
		{core.KindRedeem, core.Redeem{Points: core.MaxPoints + 1}, "points"},
		{core.KindRedeem, raw(`{"points":10,"sku":"tv"}`), "sku"},
		{core.KindAuthorize, core.Authorize{Points: 0}, "points"},
		{core.KindAuthorize, core.Authorize{Points: 10, TTLSeconds: -1}, "ttl_seconds"},
		{core.KindCapture, core.Capture{HoldTxnID: hold.TxnID, Points: -1}, "points"},
		{core.KindCapture, core.Capture{HoldTxnID: hold.TxnID, Points: core.MaxPoints + 1},
			"points"},
		{core.KindCapture, core.Capture{}, "hold_txn_id"},
		{core.KindTransfer, core.Transfer{To: "c1", Points: 0}, "points"},
		{core.KindTransfer, core.Transfer{To: "", Points: 5}, "to"},
		{core.KindAdjust, core.Adjust{Points: 0, Reason: "x"}, "points"},
		{core.KindAdjust, core.Adjust{Points: -core.MaxPoints - 1, Reason: "x"}, "points"},
		{core.KindAdjust, core.Adjust{Points: core.MaxPoints + 1, Reason: "x"}, "points"},
		{core.KindReverse, core.Reverse{Reason: "x"}, "posting_id"},
		{core.KindReverse, core.Reverse{PostingID: 1}, "reason"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "1e5"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "12,5"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "NaN"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "Inf"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: ""}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "-5"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "0x10"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "1.1234567"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "9999999999999999"}, "amount"},
		{core.KindAccrue, core.Accrue{EventType: "topup", Amount: "10", Currency: "USD"},
			"currency"},
		{core.KindAccrue, core.Accrue{Amount: "10"}, "event_type"},
		{core.KindAccrue, raw(`{"event_type":"topup","amount":10}`), "amount"},
		{core.KindAccrue, raw(`{"event_type":"topup","amount":"10","points":99}`), "points"},
		{core.KindAccrue, raw(`{"event_type":"topup","amount":"10"} {}`), "payload"},
		{core.KindAccrue, raw(`[1]`), "payload"},
		{"points.gift", core.Credit{Points: 10, Reason: "x"}, "kind"},
	}
	for _, c := range cases {
		r := f.do(c.kind, "c1", f.txn(), c.payload)
		wantRefused(t, r, core.Invalid, c.field)
	}
	if n := len(f.statement("c1")); n != before {
		t.Fatalf("bad input made %d postings", n-before)
	}
	f.wantBalance("c1", 990, 0, 10)

	// An accrual that would convert to more than MaxPoints is refused.
	g := newFixture(t, core.Program{PointsPerUnit: "1000000"})
	g.enroll("c1")
	wantRefused(t, g.do(core.KindAccrue, "c1", g.txn(),
		core.Accrue{EventType: "topup", Amount: "999999999999999.999999"}), core.Invalid, "amount")
	o := g.ok(core.KindAccrue, "c1", core.Accrue{EventType: "topup", Amount: "1000000"})
	if o.Points != core.MaxPoints {
		t.Fatalf("accrued %d, want %d", o.Points, core.MaxPoints)
	}

	// Credits of MaxPoints add up exactly, far from int64's limits.
	f.enroll("big")
	for range 7 {
		f.ok(core.KindCredit, "big", core.Credit{Points: core.MaxPoints, Reason: "big"})
	}
	f.wantBalance("big", 7*core.MaxPoints, 0, 0)
	f.ok(core.KindRedeem, "big", core.Redeem{Points: core.MaxPoints})
	f.ok(core.KindAdjust, "big", core.Adjust{Points: -core.MaxPoints, Reason: "x"})
	f.wantBalance("big", 5*core.MaxPoints, 0, 0)
	f.check()
	g.check()
}

// 14. A statement pages newest first through an opaque cursor.
func TestStatementPaging(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	cmds := make([]bus.Command, 120)
	for i := range cmds {
		cmds[i] = f.command(core.KindCredit, "c1", f.txn(),
			core.Credit{Points: core.Points(i + 1), Reason: "x"})
	}
	if _, err := f.l.ApplyBatch(context.Background(), cmds); err != nil {
		t.Fatal(err)
	}
	f.wantBalance("c1", 120*121/2, 0, 0)

	seen := map[int64]bool{}
	var sizes []int
	last := int64(1<<63 - 1)
	cursor := ""
	for page := 0; ; page++ {
		if page > 3 {
			t.Fatal("too many pages")
		}
		p, err := f.l.Statement(context.Background(), f.prog, "c1", cursor, 50)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(p.Postings))
		for _, ps := range p.Postings {
			if seen[ps.ID] || ps.ID >= last {
				t.Fatalf("posting %d repeated or out of order (after %d)", ps.ID, last)
			}
			seen[ps.ID], last = true, ps.ID
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if !slices.Equal(sizes, []int{50, 50, 20}) || len(seen) != 120 {
		t.Fatalf("pages of %v with %d postings, want 50, 50, 20", sizes, len(seen))
	}
	first, _ := f.l.Statement(context.Background(), f.prog, "c1", "", 1)
	if first.Postings[0].Points != 120 {
		t.Fatalf("newest posting %+v, want the credit of 120", first.Postings[0])
	}
	_, err := f.l.Statement(context.Background(), f.prog, "c1", "not a cursor!", 50)
	if core.KindOf(err) != core.Invalid {
		t.Fatalf("bad cursor: %v, want invalid", err)
	}
}

// A batch applies its good commands and refuses only the bad one; each
// result names only the postings its own command made.
func TestBatchWithOneBadCommand(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("c1")
	f.enroll("c2")
	cmds := []bus.Command{
		f.command(core.KindCredit, "c1", f.txn(), core.Credit{Points: 100, Reason: "a"}),
		f.command(core.KindCredit, "c2", f.txn(), core.Credit{Points: 50, Reason: "b"}),
		f.command(core.KindRedeem, "c1", f.txn(), core.Redeem{Points: 500}),
		f.command(core.KindCredit, "c1", f.txn(), core.Credit{Points: 0, Reason: "c"}),
		f.command(core.KindRedeem, "c1", f.txn(), core.Redeem{Points: 30}),
		f.command(core.KindCredit, "nobody", f.txn(), core.Credit{Points: 5, Reason: "d"}),
		f.command(core.KindTransfer, "c2", f.txn(), core.Transfer{To: "c1", Points: 20}),
	}
	out, err := f.l.ApplyBatch(context.Background(), cmds)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, out[2].Result, core.Insufficient, "points")
	wantRefused(t, out[3].Result, core.Invalid, "points")
	wantRefused(t, out[5].Result, core.NotFound, "member")
	if out[2].Dead != "" || out[3].Dead == "" || out[5].Dead == "" {
		t.Fatalf("dead-letter reasons %q %q %q", out[2].Dead, out[3].Dead, out[5].Dead)
	}
	seen := map[int64]bool{}
	for i, want := range map[int]int{0: 1, 1: 1, 4: 1, 6: 2} {
		o := outcomeOf(t, out[i].Result)
		if len(o.PostingIDs) != want {
			t.Fatalf("command %d: postings %v, want %d of its own", i, o.PostingIDs, want)
		}
		for _, id := range o.PostingIDs {
			if seen[id] {
				t.Fatalf("posting %d named by two results", id)
			}
			seen[id] = true
		}
	}
	f.wantBalance("c1", 90, 0, 0)
	f.wantBalance("c2", 30, 0, 0)
	if a, b := len(f.statement("c1")), len(f.statement("c2")); a != 3 || b != 2 {
		t.Fatalf("postings: c1 %d, c2 %d, want 3 and 2", a, b)
	}

	// Replaying the whole batch changes nothing and answers the same.
	again, err := f.l.ApplyBatch(context.Background(), cmds)
	if err != nil {
		t.Fatal(err)
	}
	for i := range out {
		a, b := out[i].Result, again[i].Result
		if a.Status != b.Status || !sameJSON(a.Data, b.Data) ||
			(a.Error == nil) != (b.Error == nil) || (a.Error != nil && *a.Error != *b.Error) {
			t.Fatalf("replay of command %d: %+v, want %+v", i, b, a)
		}
	}
	f.wantBalance("c1", 90, 0, 0)
	f.check()
}

// Points that leave a pending lot before it matures (a reversal, a forfeit)
// leave nothing for the sweep: it does not come back for that member.
func TestSweepLeavesNothingDue(t *testing.T) {
	f := newFixture(t, core.Program{PendingDays: 3})
	f.enroll("c1")
	f.enroll("c2")
	a := f.command(core.KindAccrue, "c1", f.txn(), core.Accrue{EventType: "topup", Amount: "50"})
	outcomeOf(t, f.apply(a))
	f.ok(core.KindAccrue, "c2", core.Accrue{EventType: "topup", Amount: "70"})
	f.wantBalance("c1", 0, 50, 0)
	f.ok(core.KindReverse, "c1", core.Reverse{OriginalTxnID: a.TxnID, Reason: "refund"})
	f.ok(core.KindClose, "c2", core.StatusChange{Reason: "left"})
	f.wantBalance("c1", 0, 0, 0)
	f.wantBalance("c2", 0, 0, 0)

	f.setNow(f.now.Add(4 * 24 * time.Hour))
	f.sweep(f.now)
	if res := f.sweep(f.now); res.Members != 0 {
		t.Fatalf("a second sweep at the same instant visited %d members", res.Members)
	}
	f.check()
}

// With negative_balance "allow", points a released hold frees repay the
// member's debt first, as any other points that come back do.
func TestReleaseRepaysDebt(t *testing.T) {
	f := newFixture(t, core.Program{NegativeBalance: core.NegativeAllow})
	f.enroll("c1")
	a := f.command(core.KindCredit, "c1", f.txn(), core.Credit{Points: 100, Reason: "a"})
	lotA := lotOf(t, outcomeOf(t, f.apply(a)))
	f.setNow(f.now.Add(time.Minute))
	lotB := lotOf(t, f.ok(core.KindCredit, "c1", core.Credit{Points: 100, Reason: "b"}))
	f.ok(core.KindRedeem, "c1", core.Redeem{Points: 100}) // all of A
	hold := f.command(core.KindAuthorize, "c1", f.txn(), core.Authorize{Points: 100})
	outcomeOf(t, f.apply(hold)) // all of B
	f.wantBalance("c1", 0, 0, 100)

	// A's 100 were spent and nothing is free: the member owes 100.
	o := f.ok(core.KindReverse, "c1", core.Reverse{OriginalTxnID: a.TxnID, Reason: "fraud"})
	if o.Points != -100 || o.Written != 0 {
		t.Fatalf("reversal outcome %+v", o)
	}
	f.wantBalance("c1", -100, 0, 100)
	f.check()

	// Releasing the hold pays the debt off with B's points.
	f.ok(core.KindRelease, "c1", core.Release{HoldTxnID: hold.TxnID})
	f.wantBalance("c1", 0, 0, 0)
	f.wantLot(lotA, 100, 0)
	f.wantLot(lotB, 100, 0)
	f.check()
}

// A credit whose points are reserved by an open hold cannot be reversed
// until the hold settles: writing the reserved part off would let a later
// release hand the same points out again.
func TestReverseCreditWithHeldPoints(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("h1")
	credit := f.ok(core.KindCredit, "h1", core.Credit{Points: 100, Reason: "bonus"})
	f.ok(core.KindAuthorize, "h1", core.Authorize{Points: 60})
	holdTxn := fmt.Sprintf("%s-t%d", f.prog, f.seq)

	f.refused(core.KindReverse, "h1", core.Reverse{PostingID: credit.PostingIDs[0],
		Reason: "fraud"}, core.Conflict)
	f.wantBalance("h1", 40, 0, 60)

	f.ok(core.KindRelease, "h1", core.Release{HoldTxnID: holdTxn})
	out := f.ok(core.KindReverse, "h1", core.Reverse{PostingID: credit.PostingIDs[0],
		Reason: "fraud"})
	if out.Points != -100 || out.Written != 0 {
		t.Fatalf("reversal took %d, wrote off %d; want -100 and 0", out.Points, out.Written)
	}
	f.wantBalance("h1", 0, 0, 0)
	f.check()
}

// A reversal limited to one kind refuses any other: cancelling a
// "redemption" by the id of an accrual must not claw the accrual back.
func TestReverseOnlyKind(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("k1")
	credit := f.ok(core.KindCredit, "k1", core.Credit{Points: 100, Reason: "bonus"})
	f.refused(core.KindReverse, "k1", core.Reverse{PostingID: credit.PostingIDs[0],
		Reason: "cancel", OnlyKind: core.PostRedemption}, core.NotFound)
	redeem := f.ok(core.KindRedeem, "k1", core.Redeem{Points: 40})
	f.ok(core.KindReverse, "k1", core.Reverse{PostingID: redeem.PostingIDs[0],
		Reason: "cancel", OnlyKind: core.PostRedemption})
	f.wantBalance("k1", 100, 0, 0)
	f.check()
}

// An invalid request does not use up its transaction id: the same request
// again gets the stored refusal, a corrected one with the same id is applied,
// and after that the id is taken like any other.
func TestCorrectedRequestReusesInvalidID(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("v1")
	bad := f.do(core.KindCredit, "v1", "fix-1", core.Credit{Points: 50})
	if bad.Status != bus.StatusRejected || bad.Error.Kind != string(core.Invalid) ||
		bad.Error.Field != "reason" {
		t.Fatalf("credit without reason: %+v %+v", bad, bad.Error)
	}
	again := f.do(core.KindCredit, "v1", "fix-1", core.Credit{Points: 50})
	if !again.Replayed || again.Error == nil || again.Error.Field != "reason" {
		t.Fatalf("same invalid request again: %+v", again)
	}
	good := f.do(core.KindCredit, "v1", "fix-1", core.Credit{Points: 50, Reason: "bonus"})
	if good.Status != bus.StatusOK {
		t.Fatalf("corrected request: %+v %+v", good, good.Error)
	}
	f.wantBalance("v1", 50, 0, 0)
	other := f.do(core.KindCredit, "v1", "fix-1", core.Credit{Points: 70, Reason: "bonus"})
	if other.Error == nil || other.Error.Kind != string(core.Conflict) {
		t.Fatalf("a third request with the used id: %+v", other)
	}
	f.wantBalance("v1", 50, 0, 0)
	f.check()
}
