package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// The expiry engine's promises, with the figures a member or an operator
// would check. Sweep and NotifyUpcoming work on the whole database, so none
// of these tests runs in parallel with another.

const day = 24 * time.Hour

// expiryWorld is ten members, each with lots due at the sweep instant and
// one lot that is not, some partly spent, one with a hold past its time.
type expiryWorld struct {
	f    *fixture
	refs []string
	lots map[string][]int64 // each member's lots, in the order they were made
}

func newExpiryWorld(t *testing.T, due, later time.Time) *expiryWorld {
	t.Helper()
	w := &expiryWorld{f: newFixture(t, core.Program{}), lots: map[string][]int64{}}
	for i := range 10 {
		ref := fmt.Sprintf("m%02d", i)
		w.refs = append(w.refs, ref)
		w.f.enroll(ref)
		for j, n := range []core.Points{core.Points(10 * (i + 1)), 5, 7} {
			exp := due.Add(-time.Duration(j) * 30 * time.Second)
			if j == 2 {
				exp = later
			}
			o := w.f.ok(core.KindCredit, ref, core.Credit{Points: n, Reason: "bonus",
				ExpiresAt: &exp})
			w.lots[ref] = append(w.lots[ref], lotOf(t, o))
		}
		if i%3 == 0 {
			w.f.ok(core.KindRedeem, ref, core.Redeem{Points: 3})
		}
		if i == 4 {
			w.f.ok(core.KindAuthorize, ref, core.Authorize{Points: 2})
		}
	}
	return w
}

// expiryOutcome is what a sweep left for one member, with lots named by
// their place in the member's list so that two worlds compare.
type expiryOutcome struct {
	Balance  core.Balance
	Expiries []string
}

func (w *expiryWorld) outcome(t *testing.T) map[string]expiryOutcome {
	t.Helper()
	out := map[string]expiryOutcome{}
	for _, ref := range w.refs {
		o := expiryOutcome{Balance: w.f.balance(ref).Balance}
		for _, p := range w.f.postingsOf(ref, core.PostExpiry) {
			s := fmt.Sprintf("%d pending %d:", p.Points, p.PendingDelta)
			for _, mv := range p.Lots {
				s += fmt.Sprintf(" lot#%d %d", slices.Index(w.lots[ref], mv.LotID), mv.Points)
			}
			o.Expiries = append(o.Expiries, s)
		}
		out[ref] = o
	}
	return out
}

// A sweep stopped after its first batch and started again leaves exactly
// what one uninterrupted sweep leaves.
func TestSweepKilledHalfwayMatchesOneRun(t *testing.T) {
	due := ts("2026-03-20T03:00:00Z")
	later := ts("2026-06-01T04:00:00Z")

	one := newExpiryWorld(t, due, later)
	res, ran, err := one.f.l.Sweep(context.Background(), due, 2)
	if err != nil || !ran {
		t.Fatalf("one run: ran %v, %v", ran, err)
	}
	want := one.outcome(t)

	// The figures of one run, worked out by hand for two members: m00 had
	// 10+5+7 and spent 3 from the lot of 5 (the soonest to expire), so 10+2
	// expire and 7 stay.
	if got := want["m00"]; got.Balance.Available != 7 || len(got.Expiries) != 1 ||
		got.Expiries[0] != "-12 pending 0: lot#0 -10 lot#1 -2" {
		t.Fatalf("one run, m00: %+v", got)
	}
	// m04 had 50+5+7 and a hold of 2 in the lot of 5, released by the sweep
	// (its time passed) before the lot expired.
	if got := want["m04"]; got.Balance.Available != 7 || got.Balance.Held != 0 ||
		len(got.Expiries) != 1 || got.Expiries[0] != "-55 pending 0: lot#0 -50 lot#1 -5" {
		t.Fatalf("one run, m04: %+v", got)
	}
	// Its event, as a subscriber reads it from the outbox.
	var ev bus.Event
	err = one.f.l.Pool().QueryRow(context.Background(), `SELECT body FROM outbox
		WHERE subject = $1 AND body->>'member_ref' = 'm00'`,
		bus.EventSubject(one.f.prog, core.PostExpiry)).Scan(&ev)
	if err != nil || ev.Points != -12 || ev.Source != "puntos.sweep" || ev.PostingID == 0 ||
		!ev.OccurredAt.Equal(due) || ev.TxnID != "" {
		t.Fatalf("m00's expiry event %+v (%v)", ev, err)
	}
	if res.Members < 10 {
		t.Fatalf("one run visited %d members, want at least the world's 10", res.Members)
	}

	// The same world again, its sweep killed after the first batch of two.
	killed := newExpiryWorld(t, due, later)
	ctx, cancel := context.WithCancel(context.Background())
	killed.f.l.afterSweepBatch = func(SweepResult) { cancel() }
	res, ran, err = killed.f.l.Sweep(ctx, due, 2)
	if !ran || !errors.Is(err, context.Canceled) || res.Members != 2 || res.Batches != 1 {
		t.Fatalf("killed sweep: ran %v, %+v, %v; want stopped after one batch of 2",
			ran, res, err)
	}
	half := killed.outcome(t)
	swept := 0
	for _, ref := range killed.refs {
		if len(half[ref].Expiries) > 0 {
			swept++
		}
	}
	if swept != 2 {
		t.Fatalf("after the killed sweep %d members have an expiry, want 2", swept)
	}
	killed.f.check()

	// Started again, it finishes the work and does nothing twice.
	killed.f.l.afterSweepBatch = nil
	res, ran, err = killed.f.l.Sweep(context.Background(), due, 2)
	if err != nil || !ran || res.Members != 8 {
		t.Fatalf("restarted sweep: ran %v, %+v, %v; want the 8 members left", ran, res, err)
	}
	got := killed.outcome(t)
	for _, ref := range killed.refs {
		if fmt.Sprint(got[ref]) != fmt.Sprint(want[ref]) {
			t.Errorf("%s: killed and restarted %+v, one run %+v", ref, got[ref], want[ref])
		}
	}
	killed.f.check()
}

// Two sweeps at once do the work once: the second finds the first at work
// and stands down, and a member spending between two batches expires its
// due points once, before the sweep reaches it.
func TestTwoSweepsAtOnce(t *testing.T) {
	due := ts("2026-03-21T03:00:00Z")
	later := ts("2026-06-02T04:00:00Z")
	w := newExpiryWorld(t, due, later)
	w.f.sweep(due.Add(-time.Minute)) // what other tests left due; nothing of this world
	w.f.setNow(due)

	var second SweepResult
	var secondRan bool
	var secondErr error
	calls := 0
	w.f.l.afterSweepBatch = func(SweepResult) {
		calls++
		if calls != 1 {
			return
		}
		// Mid-sweep: another instance tries, and m09 (last in order) spends.
		other := New(w.f.l.Pool(), w.f.l.log)
		second, secondRan, secondErr = other.Sweep(context.Background(), due, 2)
		w.f.ok(core.KindRedeem, "m09", core.Redeem{Points: 4})
	}
	res, ran, err := w.f.l.Sweep(context.Background(), due, 2)
	if err != nil || !ran || res.Members != 10 {
		t.Fatalf("first sweep: ran %v, %+v, %v", ran, res, err)
	}
	if secondErr != nil || secondRan || second.Members != 0 {
		t.Fatalf("second sweep: ran %v, %+v, %v; want it to stand down", secondRan, second,
			secondErr)
	}

	got := w.outcome(t)
	for i, ref := range w.refs {
		o := got[ref]
		if len(o.Expiries) != 1 {
			t.Fatalf("%s: %d expiry postings, want 1: %+v", ref, len(o.Expiries), o)
		}
		wantAvail := core.Points(7)
		if ref == "m09" {
			wantAvail = 3 // the redeem expired 100+2 first, then took 4 of the 7
		}
		if o.Balance.Available != wantAvail {
			t.Fatalf("%s (#%d): available %d, want %d", ref, i, o.Balance.Available, wantAvail)
		}
	}
	if e := got["m09"].Expiries[0]; e != "-102 pending 0: lot#0 -100 lot#1 -2" {
		t.Fatalf("m09 expiry %s", e)
	}
	w.f.check()
}

// Sweeps missed for months (downtime) are caught up by the next: every lot
// due by then expires at once, each once, in one posting per member.
func TestSweepCatchesUpAfterDowntime(t *testing.T) {
	f := newFixture(t, core.Program{TimeZone: "America/Santiago",
		ExpiryUnit: core.ExpiryMonths, ExpiryLength: 1, ExpiryRound: "day"})
	f.setNow(ts("2026-01-10T15:00:00Z"))
	f.enroll("ana")
	f.enroll("ben")
	var anaLots []int64
	for i, at := range []string{"2026-01-10T15:00:00Z", "2026-02-10T15:00:00Z",
		"2026-03-10T15:00:00Z", "2026-05-20T15:00:00Z"} {
		f.setNow(ts(at))
		o := f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "topup",
			Amount: fmt.Sprint(100 * (i + 1))})
		anaLots = append(anaLots, lotOf(t, o))
		f.ok(core.KindAccrue, "ben", core.Accrue{EventType: "topup", Amount: "10"})
	}
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 250}) // the 2026-05-20 spend
	// Redeeming at 2026-05-20 expired what was due then: lots of January,
	// February and March (100+200+300), before taking 250 of the May lot.
	f.wantBalance("ana", 150, 0, 0)
	exps := f.postingsOf("ana", core.PostExpiry)
	if len(exps) != 1 || exps[0].Points != -600 {
		t.Fatalf("ana's lazy expiry: %+v", exps)
	}

	// No sweep ran since January; ben's lots of January to March are long
	// due. The lot of 20 May lasts through 20 June, Santiago time.
	f.setNow(ts("2026-06-15T12:00:00Z"))
	f.sweep(f.now)
	f.wantBalance("ben", 10, 0, 0)
	exps = f.postingsOf("ben", core.PostExpiry)
	if len(exps) != 1 || exps[0].Points != -30 || len(exps[0].Lots) != 3 {
		t.Fatalf("ben's catch-up expiry: %+v", exps)
	}
	f.wantBalance("ana", 150, 0, 0)

	// Again at the same instant, and later: the May lots go, each once.
	f.sweep(f.now)
	f.setNow(ts("2026-06-21T04:00:00Z")) // Sunday 21 June 00:00 -04
	f.sweep(f.now)
	f.sweep(f.now.Add(90 * day))
	f.wantBalance("ana", 0, 0, 0)
	f.wantBalance("ben", 0, 0, 0)
	if n := len(f.postingsOf("ana", core.PostExpiry)); n != 2 {
		t.Fatalf("ana: %d expiry postings, want 2", n)
	}
	if n := len(f.postingsOf("ben", core.PostExpiry)); n != 2 {
		t.Fatalf("ben: %d expiry postings, want 2", n)
	}
	f.wantLot(anaLots[3], 400, 0)
	var twice int
	err := f.l.Pool().QueryRow(context.Background(), `SELECT count(*) FROM (
			SELECT pl.lot_id FROM posting_lots pl JOIN postings p ON p.id = pl.posting_id
			JOIN members m ON m.id = p.member_id JOIN programs g ON g.id = m.program_id
			WHERE p.kind = 'expiry' AND g.code = $1
			GROUP BY pl.lot_id HAVING count(*) > 1) x`, f.prog).Scan(&twice)
	if err != nil || twice != 0 {
		t.Fatalf("%d lots expired more than once (%v)", twice, err)
	}
	f.check()
}

// notices reads the expiry notices of the fixture's program from the outbox,
// in the order they were written, as "member/threshold: points [lot points]".
func (f *fixture) notices(lotName map[int64]string) []string {
	f.t.Helper()
	rows, err := f.l.Pool().Query(context.Background(), `SELECT body FROM outbox
		WHERE subject = $1 ORDER BY id`, bus.EventSubject(f.prog, core.EventExpiryNotice))
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var ev bus.Event
		if err := rows.Scan(&ev); err != nil {
			f.t.Fatal(err)
		}
		var n core.ExpiryNotice
		if err := json.Unmarshal(ev.Detail, &n); err != nil {
			f.t.Fatalf("notice detail %s: %v", ev.Detail, err)
		}
		if ev.Kind != core.EventExpiryNotice || ev.Points != 0 || ev.Program != f.prog {
			f.t.Fatalf("notice event %+v", ev)
		}
		s := fmt.Sprintf("%s/%d: %d", ev.MemberRef, n.ThresholdDays, n.Points)
		for _, l := range n.Lots {
			s += fmt.Sprintf(" %s=%d", lotName[l.LotID], l.Points)
		}
		if !n.ExpiresAt.Equal(n.Lots[0].ExpiresAt) {
			f.t.Fatalf("notice %s: earliest expiry %v, first lot %v", s, n.ExpiresAt,
				n.Lots[0].ExpiresAt)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func wantNotices(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: notices\n%q\nwant\n%q", what, got, want)
	}
}

// Members are warned of expiring points once per lot and threshold, across
// runs and when two runs race; a lot within several thresholds at once is
// announced under the smallest.
func TestNoticesOncePerLotAndThreshold(t *testing.T) {
	f := newFixture(t, core.Program{})
	t0 := f.now
	thresholds := []int{30, 7, 1}
	f.enroll("ana")
	f.enroll("ben")
	names := map[int64]string{}
	credit := func(ref, name string, n core.Points, life time.Duration) {
		exp := t0.Add(life)
		names[lotOf(t, f.ok(core.KindCredit, ref, core.Credit{Points: n, Reason: "campaign",
			ExpiresAt: &exp}))] = name
	}
	credit("ana", "A1", 100, 20*day)
	credit("ana", "A2", 50, 40*day)
	credit("ana", "A3", 30, 5*day)
	credit("ben", "B1", 70, 25*day)
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 10})       // from A3
	f.ok(core.KindAuthorize, "ben", core.Authorize{Points: 20}) // reserved in B1
	notify := func(at time.Time) NoticeResult {
		t.Helper()
		res, err := f.l.NotifyUpcoming(context.Background(), at, thresholds)
		if err != nil {
			t.Fatalf("notify at %s: %v", at, err)
		}
		return res
	}

	notify(t0)
	first := []string{"ana/30: 100 A1=100", "ana/7: 20 A3=20", "ben/30: 50 B1=50"}
	got := f.notices(names)
	slices.Sort(got)
	wantNotices(t, "first run", got, first...)

	// The same instant again, and a later one inside the same windows.
	notify(t0)
	notify(t0.Add(2 * day))
	got = f.notices(names)
	slices.Sort(got)
	wantNotices(t, "second and third run", got, first...)

	// Two weeks on, A1 is within 7 days and A2 within 30; B1 was announced
	// at 30 already and is not within 7 yet; A3 is past its expiry.
	res := notify(t0.Add(14 * day))
	if res.Events != 2 || res.Lots != 2 {
		t.Fatalf("fourth run: %+v, want 2 events of 1 lot", res)
	}
	got = f.notices(names)[3:]
	slices.Sort(got)
	wantNotices(t, "fourth run", got, "ana/30: 50 A2=50", "ana/7: 100 A1=100")

	// Half a day before B1 expires, two runs race: one notice, at 1 day (a
	// lot within several thresholds gets the smallest, so none at 7). No
	// sweep released ben's stale hold, so 20 points are still reserved.
	at := t0.Add(25*day - 12*time.Hour)
	var wg sync.WaitGroup
	results := make([]NoticeResult, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			results[i], errs[i] = f.l.NotifyUpcoming(context.Background(), at, thresholds)
		})
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("racing runs: %v, %v", errs[0], errs[1])
	}
	if n := results[0].Events + results[1].Events; n != 1 {
		t.Fatalf("racing runs wrote %d notices (%+v), want 1", n, results)
	}
	wantNotices(t, "racing runs", f.notices(names)[5:], "ben/1: 50 B1=50")
	notify(at)
	if n := len(f.notices(names)); n != 6 {
		t.Fatalf("%d notices in all, want 6", n)
	}

	if _, err := f.l.NotifyUpcoming(context.Background(), at, []int{7, 0}); core.KindOf(err) !=
		core.Invalid {
		t.Fatalf("threshold 0: %v, want invalid", err)
	}
	f.check()
}

// The expiring listing shows, per member, the unreserved points expiring
// within the window and the earliest expiry, soonest first, page by page.
func TestExpiringListing(t *testing.T) {
	f := newFixture(t, core.Program{})
	t0 := f.now
	credit := func(ref string, n core.Points, life time.Duration) {
		exp := t0.Add(life)
		f.ok(core.KindCredit, ref, core.Credit{Points: n, Reason: "campaign", ExpiresAt: &exp})
	}
	for _, ref := range []string{"ana", "ben", "cat", "dan"} {
		f.enroll(ref)
	}
	credit("ana", 100, 20*day)
	credit("ana", 40, 3*day)
	credit("ana", 500, 45*day) // outside a 30-day window
	credit("ben", 70, 3*day)   // same earliest expiry as ana: by reference
	f.ok(core.KindAuthorize, "ben", core.Authorize{Points: 30})
	credit("cat", 9, 29*day)
	credit("dan", 8, 31*day)

	page, err := f.l.Expiring(context.Background(), f.prog, 30, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	line := func(p *ExpiringPage) []string {
		var out []string
		for _, m := range p.Members {
			out = append(out, fmt.Sprintf("%s %d %d %d", m.Member, m.Points,
				int(m.EarliestExpiry.Sub(t0)/day), m.Lots))
		}
		return out
	}
	if got := line(page); !slices.Equal(got, []string{"ana 140 3 2", "ben 40 3 1"}) ||
		page.Next == "" || !page.Until.Equal(t0.Add(30*day)) {
		t.Fatalf("first page %q next %q until %v", got, page.Next, page.Until)
	}
	page, err = f.l.Expiring(context.Background(), f.prog, 30, page.Next, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := line(page); !slices.Equal(got, []string{"cat 9 29 1"}) || page.Next != "" {
		t.Fatalf("second page %q next %q", got, page.Next)
	}

	// Later, the 3-day lots are past their expiry: they are no longer
	// "expiring", whether or not a sweep took them yet.
	f.setNow(t0.Add(4 * day))
	page, err = f.l.Expiring(context.Background(), f.prog, 30, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	if got := line(page); !slices.Equal(got, []string{"ana 100 20 1", "cat 9 29 1",
		"dan 8 31 1"}) {
		t.Fatalf("four days later %q", got)
	}

	_, err = f.l.Expiring(context.Background(), f.prog, 30, "bm90IGEgY3Vyc29y", 5)
	if core.KindOf(err) != core.Invalid {
		t.Fatalf("bad cursor: %v, want invalid", err)
	}
	if _, err := f.l.Expiring(context.Background(), f.prog, 0, "", 5); core.KindOf(err) !=
		core.Invalid {
		t.Fatalf("days 0: %v, want invalid", err)
	}
	if _, err := f.l.Expiring(context.Background(), "nope", 30, "", 5); core.KindOf(err) !=
		core.NotFound {
		t.Fatalf("unknown program: %v, want not_found", err)
	}
	f.check()
}

// Campaign points given a fixed last day are usable through the whole of
// that day in the program's time zone, daylight-saving night included.
func TestCreditExpiresOn(t *testing.T) {
	f := newFixture(t, core.Program{TimeZone: "America/Santiago",
		ExpiryUnit: core.ExpiryMonths, ExpiryLength: 24})
	f.enroll("ana")
	lot := lotOf(t, f.ok(core.KindCredit, "ana", core.Credit{Points: 300, Reason: "easter",
		ExpiresOn: "2026-04-04"}))
	// Saturday 4 April 2026 has 25 hours; Sunday begins at 00:00 -04.
	if l := f.lot(lot); l.ExpiresAt == nil || !l.ExpiresAt.Equal(ts("2026-04-05T04:00:00Z")) {
		t.Fatalf("lot expires at %v, want 2026-04-05T04:00:00Z", l.ExpiresAt)
	}

	f.refused(core.KindCredit, "ana", core.Credit{Points: 1, Reason: "x",
		ExpiresOn: "2026-02-30"}, core.Invalid)
	f.refused(core.KindCredit, "ana", core.Credit{Points: 1, Reason: "x",
		ExpiresOn: "2026-03-09"}, core.Invalid) // ended before occurred_at
	exp := ts("2026-05-01T00:00:00Z")
	r := f.do(core.KindCredit, "ana", f.txn(), core.Credit{Points: 1, Reason: "x",
		ExpiresOn: "2026-04-30", ExpiresAt: &exp})
	wantRefused(t, r, core.Invalid, "expires_on")

	f.setNow(ts("2026-04-05T03:59:59Z")) // the last second of the long Saturday
	f.sweep(f.now)
	f.wantBalance("ana", 300, 0, 0)
	f.setNow(ts("2026-04-05T04:00:00Z"))
	f.sweep(f.now)
	f.wantBalance("ana", 0, 0, 0)
	f.wantLot(lot, 300, 0)
	f.check()
}
