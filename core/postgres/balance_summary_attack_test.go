package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// survivorOf is the id of the member ref ends up in after every merge.
func survivorOf(t *testing.T, f *fixture, ref string) string {
	t.Helper()
	ctx := context.Background()
	var id string
	var merged *string
	if err := f.l.Pool().QueryRow(ctx, `SELECT m.id, m.merged_into FROM members m
		JOIN programs p ON p.id = m.program_id WHERE p.code = $1 AND m.customer_ref = $2`,
		f.prog, ref).Scan(&id, &merged); err != nil {
		t.Fatalf("member %s: %v", ref, err)
	}
	for merged != nil {
		id = *merged
		if err := f.l.Pool().QueryRow(ctx, `SELECT merged_into FROM members WHERE id = $1`,
			id).Scan(&merged); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// lotStats describes the survivor's lots, for the tests to know which
// states they reached.
type lotStats struct {
	live, heldWhole, heldPart, pending, noExpiry, spent, instants int
}

// allExpiries adds up, in Go and over every live lot of the member (no limit
// of 1000), the free points (remaining less held) at each expiry instant,
// and returns the first twelve instants that have any, soonest first.
func allExpiries(t *testing.T, f *fixture, id string) ([]ExpiryBucket, lotStats) {
	t.Helper()
	rows, err := f.l.Pool().Query(context.Background(), `SELECT expires_at, pending,
			remaining, held FROM lots WHERE member_id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var st lotStats
	sums := map[int64]core.Points{} // by Unix microsecond
	for rows.Next() {
		var exp *time.Time
		var pending bool
		var remaining, held core.Points
		if err := rows.Scan(&exp, &pending, &remaining, &held); err != nil {
			t.Fatal(err)
		}
		if remaining == 0 {
			st.spent++
			continue
		}
		st.live++
		switch {
		case held == remaining:
			st.heldWhole++
		case held > 0:
			st.heldPart++
		}
		if pending {
			st.pending++
		}
		if exp == nil {
			st.noExpiry++
			continue
		}
		sums[exp.UnixMicro()] += remaining - held
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	st.instants = len(sums)
	var keys []int64
	for k, p := range sums {
		if p != 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := []ExpiryBucket{}
	for _, k := range keys[:min(12, len(keys))] {
		out = append(out, ExpiryBucket{ExpiresAt: time.UnixMicro(k), Points: sums[k]})
	}
	return out, st
}

// wantSummary reads ref's summary and holds it to the member's figures and
// to the expiries added up from all its lots; its JSON must be
// encoding/json's and carry no lots. Where the member has at most 1000 live
// lots, the full view (wantView) must agree with it too.
func wantSummary(t *testing.T, f *fixture, ref string) (*BalanceView, lotStats) {
	t.Helper()
	sum, err := f.l.BalanceSummary(context.Background(), f.prog, ref)
	if err != nil || sum == nil {
		t.Fatalf("balance summary %s: %+v, %v", ref, sum, err)
	}
	want := refBalance(t, f, ref)
	exp, st := allExpiries(t, f, survivorOf(t, f, ref))
	if sum.Lots != nil {
		t.Fatalf("balance summary %s carries %d lots", ref, len(sum.Lots))
	}
	if len(sum.NextExpiries) != len(exp) {
		t.Fatalf("balance summary %s: %d expiry instants, want %d\n got %+v\nwant %+v", ref,
			len(sum.NextExpiries), len(exp), sum.NextExpiries, exp)
	}
	for i, e := range sum.NextExpiries {
		if !e.ExpiresAt.Equal(exp[i].ExpiresAt) || e.Points != exp[i].Points {
			t.Fatalf("balance summary %s: expiry %d is %d at %s, want %d at %s", ref, i,
				e.Points, e.ExpiresAt, exp[i].Points, exp[i].ExpiresAt)
		}
	}
	sj, _ := json.Marshal(sum)
	if bytes.Contains(sj, []byte(`"lots"`)) {
		t.Fatalf("balance summary %s: lots in its JSON: %s", ref, sj)
	}
	hand, err := sum.AppendJSON(nil)
	if err != nil || !bytes.Equal(hand, sj) {
		t.Fatalf("balance summary %s by hand (%v):\n%s\nencoding/json:\n%s", ref, err, hand, sj)
	}
	if sum.Member != want.Member || sum.Status != want.Status || sum.Balance != want.Balance ||
		sum.Program != f.prog {
		t.Fatalf("balance summary %s: %s %s %s %+v, want %s %s %s %+v", ref, sum.Member,
			sum.Program, sum.Status, sum.Balance, want.Member, f.prog, want.Status, want.Balance)
	}
	if st.live <= 1000 {
		full := wantView(t, f, ref) // also compares the summary with the full view
		fj, _ := json.Marshal(full.NextExpiries)
		nj, _ := json.Marshal(sum.NextExpiries)
		if !bytes.Equal(fj, nj) {
			t.Fatalf("balance %s: expiries with lots %s, without %s", ref, fj, nj)
		}
	}
	return sum, st
}

// TestBalanceSummaryUnderRandomWork drives members through credits (some
// on the same instant written in another zone, some without expiry),
// pending accruals, redemptions, holds (captured in part, released, left
// to lapse), transfers, reversals of spent credits into a negative balance,
// merges into chains and sweeps that mature, expire and release; after
// every step each member's summary must equal the expiries added up from
// its lots, and the full view's. One program expires points by months in
// a zone far from UTC; the other keeps them unless a credit says otherwise.
func TestBalanceSummaryUnderRandomWork(t *testing.T) {
	l := isolatedLedger(t)
	var all coverage
	for i, prog := range []core.Program{
		{PointsPerUnit: "1", PendingDays: 2, ExpiryUnit: core.ExpiryMonths, ExpiryLength: 3,
			ExpiryRound: "month", TimeZone: "Asia/Kathmandu", NegativeBalance: core.NegativeAllow,
			HoldTTLSeconds: 3600},
		{PointsPerUnit: "1", PendingDays: 1, TimeZone: "America/Santiago",
			NegativeBalance: core.NegativeAllow, HoldTTLSeconds: 3600},
	} {
		t.Run(fmt.Sprint(prog.TimeZone), func(t *testing.T) {
			c := randomWork(t, newFixtureOn(t, l, prog), rand.New(rand.NewPCG(7, uint64(11+i))))
			all.add(c)
		})
	}
	s := all.seen
	if s.heldWhole == 0 || s.heldPart == 0 || s.pending == 0 || s.spent == 0 ||
		s.noExpiry == 0 || s.instants <= 12 || !all.twelve || !all.negative || all.merges < 2 {
		t.Fatalf("the walks missed states they are meant to cover: %+v", all)
	}
}

// coverage is what a random walk reached: the most of each kind of lot a
// member held at once, and whether a member was in debt, had twelve
// expiry instants, and how many merges went through.
type coverage struct {
	seen             lotStats
	negative, twelve bool
	merges           int
}

func (c *coverage) add(o coverage) {
	c.seen.heldWhole = max(c.seen.heldWhole, o.seen.heldWhole)
	c.seen.heldPart = max(c.seen.heldPart, o.seen.heldPart)
	c.seen.pending = max(c.seen.pending, o.seen.pending)
	c.seen.noExpiry = max(c.seen.noExpiry, o.seen.noExpiry)
	c.seen.spent = max(c.seen.spent, o.seen.spent)
	c.seen.instants = max(c.seen.instants, o.seen.instants)
	c.negative = c.negative || o.negative
	c.twelve = c.twelve || o.twelve
	c.merges += o.merges
}

func randomWork(t *testing.T, f *fixture, rng *rand.Rand) coverage {
	refs := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
	for _, r := range refs {
		f.enroll(r)
	}
	other := time.FixedZone("+0545", 5*3600+45*60)
	// 24 instants, written in UTC or in +05:45 at random: the same instant
	// written in two zones is one bucket.
	var instants []time.Time
	for i := range 24 {
		instants = append(instants, f.now.Add(time.Duration(20+i*7)*24*time.Hour).Truncate(time.Hour))
	}
	type txn struct{ ref, txn string }
	var holds, credits []txn
	merges := 0
	var cov coverage
	ctx := context.Background()
	do := func(kind, ref string, payload any) (string, bool) {
		t.Helper()
		id := f.txn()
		r := f.do(kind, ref, id, payload)
		if r.Status != bus.StatusOK && r.Status != bus.StatusRejected {
			t.Fatalf("%s %s: %s %+v", kind, ref, r.Status, r.Error)
		}
		return id, r.Status == bus.StatusOK
	}
	available := func(ref string) core.Points {
		m, err := f.l.Member(ctx, f.prog, ref)
		if err != nil {
			t.Fatal(err)
		}
		return m.Balance.Available
	}
	for step := range 240 {
		ref := refs[rng.IntN(len(refs))]
		switch op := rng.IntN(14); {
		case op < 4:
			cr := core.Credit{Points: core.Points(1 + rng.IntN(40)), Reason: "step"}
			switch rng.IntN(5) {
			case 0: // the program's expiry, if any
			case 1:
				cr.ExpiresOn = instants[rng.IntN(len(instants))].In(other).Format(time.DateOnly)
			default:
				at := instants[rng.IntN(len(instants))]
				if rng.IntN(2) == 0 {
					at = at.In(other)
				}
				cr.ExpiresAt = &at
			}
			if id, ok := do(core.KindCredit, ref, cr); ok {
				credits = append(credits, txn{ref, id})
			}
		case op < 6:
			do(core.KindAccrue, ref, core.Accrue{EventType: "purchase",
				Amount: fmt.Sprint(1 + rng.IntN(60))})
		case op == 6:
			if n := available(ref); n > 0 {
				do(core.KindRedeem, ref, core.Redeem{Points: 1 + core.Points(rng.Int64N(int64(n)))/3})
			}
		case op == 7:
			if n := available(ref); n > 0 {
				// Now and then the whole balance, so lots are held whole.
				if rng.IntN(4) != 0 {
					n = 1 + core.Points(rng.Int64N(int64(n)))
				}
				if id, ok := do(core.KindAuthorize, ref, core.Authorize{Points: n}); ok {
					holds = append(holds, txn{ref, id})
				}
			}
		case op == 8 && len(holds) > 0:
			i := rng.IntN(len(holds))
			h := holds[i]
			holds = slices.Delete(holds, i, i+1)
			if rng.IntN(2) == 0 {
				do(core.KindRelease, h.ref, core.Release{HoldTxnID: h.txn})
			} else {
				do(core.KindCapture, h.ref, core.Capture{HoldTxnID: h.txn, Points: 1})
			}
		case op == 9:
			do(core.KindTransfer, ref, core.Transfer{To: refs[rng.IntN(len(refs))],
				Points: core.Points(1 + rng.IntN(30))})
		case op == 10 && len(credits) > 0:
			c := credits[rng.IntN(len(credits))]
			do(core.KindReverse, c.ref, core.Reverse{OriginalTxnID: c.txn, Reason: "undo"})
		case op == 11:
			// Into debt: spend everything, then claw back a credit of the
			// member that was spent.
			if n := available(ref); n > 0 {
				do(core.KindRedeem, ref, core.Redeem{Points: n})
			}
			for _, c := range slices.Backward(credits) {
				if c.ref == ref {
					do(core.KindReverse, ref, core.Reverse{OriginalTxnID: c.txn, Reason: "undo"})
					break
				}
			}
		case op == 12 && merges < 4 && step > 80:
			if _, ok := do(core.KindMerge, ref, core.Merge{Into: refs[rng.IntN(len(refs))]}); ok {
				merges++
			}
		case op == 13:
			f.setNow(f.now.Add(time.Duration(1+rng.IntN(96)) * time.Hour))
			if _, ran, err := f.l.Sweep(ctx, f.now, 100); err != nil || !ran {
				t.Fatalf("sweep: ran %v, %v", ran, err)
			}
		}
		for _, r := range refs {
			v, st := wantSummary(t, f, r)
			cov.add(coverage{seen: st, negative: v.Balance.Available < 0,
				twelve: len(v.NextExpiries) == 12})
		}
	}
	cov.merges = merges
	t.Logf("reached: %+v", cov)
	f.check()
	return cov
}

// wantFullAgrees reads ref's full view and holds it to 1000 lots and to the
// summary's expiries and figures.
func wantFullAgrees(t *testing.T, f *fixture, ref string, sum *BalanceView) {
	t.Helper()
	full := f.balance(ref)
	fj, _ := json.Marshal(full.NextExpiries)
	sj, _ := json.Marshal(sum.NextExpiries)
	if len(full.Lots) != 1000 || !bytes.Equal(fj, sj) || full.Balance != sum.Balance {
		t.Fatalf("full view of %s: %d lots, expiries %s, %+v; want 1000 lots and the "+
			"summary's %s, %+v", ref, len(full.Lots), fj, full.Balance, sj, sum.Balance)
	}
}

// creditLots gives ref n lots of one point, expiring at exp, in one batch.
func creditLots(t *testing.T, f *fixture, ref string, n int, exp time.Time) {
	t.Helper()
	cmds := make([]bus.Command, n)
	for i := range cmds {
		cmds[i] = f.command(core.KindCredit, ref, f.txn(),
			core.Credit{Points: 1, Reason: "lot", ExpiresAt: &exp})
	}
	out, err := f.l.ApplyBatch(context.Background(), cmds)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range out {
		if a.Result.Status != bus.StatusOK {
			t.Fatalf("credit %d: %+v", i, a.Result.Error)
		}
	}
}

// Beyond 1000 live lots the full view lists the 1000 that expire first,
// and its expiries, like the summary's, add up every lot: all 1005 points
// of the first instant and the instant after it, which the listed lots do
// not reach; they add up to the member's available balance.
func TestBalanceSummaryCountsLotsBeyondTheThousand(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("crowd")
	e1, e2 := f.now.Add(48*time.Hour), f.now.Add(96*time.Hour)
	creditLots(t, f, "crowd", 1005, e1)
	creditLots(t, f, "crowd", 3, e2)
	sum, st := wantSummary(t, f, "crowd")
	if st.live != 1008 || len(sum.NextExpiries) != 2 || sum.NextExpiries[0].Points != 1005 ||
		sum.NextExpiries[1].Points != 3 || sum.Balance.Available != 1008 {
		t.Fatalf("summary %+v over %d lots; want 1005 at %s and 3 at %s of 1008", sum,
			st.live, e1, e2)
	}
	wantFullAgrees(t, f, "crowd", sum)
}

// 1000 lots held whole fill the full view's 1000 rows; the free points
// behind them expire later, and both views show them.
func TestBalanceSummaryPastAThousandHeldLots(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", HoldTTLSeconds: 3600})
	f.enroll("held")
	e1, e2 := f.now.Add(48*time.Hour), f.now.Add(96*time.Hour)
	creditLots(t, f, "held", 1000, e1)
	f.ok(core.KindAuthorize, "held", core.Authorize{Points: 1000})
	creditLots(t, f, "held", 7, e2)
	sum, st := wantSummary(t, f, "held")
	if st.heldWhole != 1000 || len(sum.NextExpiries) != 1 || sum.NextExpiries[0].Points != 7 ||
		!sum.NextExpiries[0].ExpiresAt.Equal(e2) {
		t.Fatalf("summary %+v (%+v); want 7 points at %s", sum.NextExpiries, st, e2)
	}
	wantFullAgrees(t, f, "held", sum)
}

// Thirteen instants, the twelfth and the thirteenth a microsecond apart,
// three lots on each, a part of the first held: the summary stops at the
// twelfth, and its figures are the full view's.
func TestBalanceSummaryTwelfthInstant(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", HoldTTLSeconds: 3600})
	f.enroll("edge")
	base := f.now.Add(24 * time.Hour)
	for i := range 13 {
		at := base.Add(time.Duration(i) * time.Hour)
		if i == 12 {
			at = base.Add(11*time.Hour + time.Microsecond)
		}
		for range 3 {
			f.ok(core.KindCredit, "edge", core.Credit{Points: core.Points(i + 1), Reason: "x",
				ExpiresAt: &at})
		}
	}
	f.ok(core.KindAuthorize, "edge", core.Authorize{Points: 2}) // the first instant's, in part
	sum, _ := wantSummary(t, f, "edge")
	if len(sum.NextExpiries) != 12 || sum.NextExpiries[0].Points != 1 ||
		!sum.NextExpiries[11].ExpiresAt.Equal(base.Add(11*time.Hour)) ||
		sum.NextExpiries[11].Points != 36 {
		t.Fatalf("summary %+v; want 12 instants, 1 free at the first, 36 at the twelfth",
			sum.NextExpiries)
	}
}
