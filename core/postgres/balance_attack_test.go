package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// refBalance works out, with plain queries, the view Balance should give
// for ref: the member the merges lead to (followed to the end), its figures
// and its live lots, at most 1000, soonest expiry first.
func refBalance(t *testing.T, f *fixture, ref string) *BalanceView {
	t.Helper()
	ctx := context.Background()
	pool := f.l.Pool()
	var id string
	var merged *string
	err := pool.QueryRow(ctx, `SELECT m.id, m.merged_into FROM members m
		JOIN programs p ON p.id = m.program_id WHERE p.code = $1 AND m.customer_ref = $2`,
		f.prog, ref).Scan(&id, &merged)
	if err != nil {
		t.Fatalf("reference member %s: %v", ref, err)
	}
	for merged != nil {
		id = *merged
		if err := pool.QueryRow(ctx, `SELECT merged_into FROM members WHERE id = $1`,
			id).Scan(&merged); err != nil {
			t.Fatal(err)
		}
	}
	v := &BalanceView{Program: f.prog, Lots: []core.Lot{}, NextExpiries: []ExpiryBucket{}}
	if err := pool.QueryRow(ctx, `SELECT customer_ref, status, available, pending, held
		FROM members WHERE id = $1`, id).Scan(&v.Member, &v.Status, &v.Balance.Available,
		&v.Balance.Pending, &v.Balance.Held); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `SELECT id, earned_at, spendable_from, expires_at, pending,
			original, remaining, held
		FROM lots WHERE member_id = $1 AND remaining > 0
		ORDER BY expires_at NULLS LAST, earned_at, id LIMIT 1000`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var l core.Lot
		if err := rows.Scan(&l.ID, &l.EarnedAt, &l.SpendableFrom, &l.ExpiresAt, &l.Pending,
			&l.Original, &l.Remaining, &l.Held); err != nil {
			t.Fatal(err)
		}
		// The view answers the figures at its instant: a holding period
		// ended counts as matured, an expiry passed as expired, before the
		// sweep posts them.
		at := f.l.Clock()
		lapsed := l.ExpiresAt != nil && !l.ExpiresAt.After(at)
		switch {
		case l.Pending && lapsed:
			v.Balance.Pending -= l.Remaining
		case l.Pending && !l.SpendableFrom.After(at):
			v.Balance.Pending -= l.Remaining
			v.Balance.Available += l.Remaining
		case lapsed:
			v.Balance.Available -= l.Remaining - l.Held
		}
		if l.Pending && !l.SpendableFrom.After(at) {
			l.Pending = false
		}
		v.Lots = append(v.Lots, l)
		free := l.Remaining - l.Held
		if l.ExpiresAt == nil || free == 0 || lapsed {
			continue
		}
		n := len(v.NextExpiries)
		if n > 0 && v.NextExpiries[n-1].ExpiresAt.Equal(*l.ExpiresAt) {
			v.NextExpiries[n-1].Points += free
		} else if n < 12 {
			v.NextExpiries = append(v.NextExpiries, ExpiryBucket{ExpiresAt: *l.ExpiresAt,
				Points: free})
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) > 1000 FROM lots
		WHERE member_id = $1 AND remaining > 0`, id).Scan(&v.LotsTruncated); err != nil {
		t.Fatal(err)
	}
	return v
}

// wantView reads ref's balance and checks it against refBalance, and its
// hand-written JSON against encoding/json's.
func wantView(t *testing.T, f *fixture, ref string) *BalanceView {
	t.Helper()
	got, err := f.l.Balance(context.Background(), f.prog, ref)
	if err != nil {
		t.Fatalf("balance %s: %v", ref, err)
	}
	if got == nil {
		t.Fatalf("balance %s: no view and no error", ref)
	}
	want := refBalance(t, f, ref)
	want.AsOf = got.AsOf
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Fatalf("balance %s:\n got %s\nwant %s", ref, gj, wj)
	}
	hand, err := got.AppendJSON(nil)
	if err != nil || !bytes.Equal(hand, gj) {
		t.Fatalf("balance %s by hand (%v):\n%s\nencoding/json:\n%s", ref, err, hand, gj)
	}
	// The summary is the same view without the lots, its expiries added up
	// by PostgreSQL instead of from the lots.
	sum, err := f.l.BalanceSummary(context.Background(), f.prog, ref)
	if err != nil {
		t.Fatalf("balance summary %s: %v", ref, err)
	}
	want.Lots, want.LotsTruncated, want.AsOf = nil, false, sum.AsOf
	sj, _ := json.Marshal(sum)
	wj, _ = json.Marshal(want)
	if sum.Lots != nil || !bytes.Equal(sj, wj) {
		t.Fatalf("balance summary %s:\n got %s\nwant %s", ref, sj, wj)
	}
	if hand, err := sum.AppendJSON(nil); err != nil || !bytes.Equal(hand, sj) {
		t.Fatalf("balance summary %s by hand (%v):\n%s\nencoding/json:\n%s", ref, err, hand, sj)
	}
	return got
}

// Merged chains, a survivor closed and then erased, pending and held
// points, lots without expiry, a member with no lots and a reference with
// every punctuation a reference may hold: the balance is the survivor's,
// as plain queries find it, and its JSON is encoding/json's.
func TestBalanceAcrossMergesAndOddMembers(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", PendingDays: 3,
		ExpiryUnit: core.ExpiryMonths, ExpiryLength: 12})
	odd := "o'&(x)*+,;=:@!$~._-"
	for _, ref := range []string{"a", "b", "c", "empty", odd} {
		f.enroll(ref)
	}
	exp := f.now.AddDate(0, 2, 0)
	f.ok(core.KindAccrue, "a", core.Accrue{EventType: "purchase", Amount: "30"})
	f.ok(core.KindCredit, "a", core.Credit{Points: 40, Reason: "bonus", ExpiresAt: &exp})
	f.ok(core.KindCredit, "b", core.Credit{Points: 25, Reason: "bonus"})
	f.ok(core.KindAccrue, "c", core.Accrue{EventType: "purchase", Amount: "11"})
	f.ok(core.KindCredit, odd, core.Credit{Points: 9, Reason: "odd"})
	f.enroll("held")
	exp2 := exp.AddDate(0, 1, 0)
	f.ok(core.KindCredit, "held", core.Credit{Points: 6, Reason: "first", ExpiresAt: &exp})
	f.ok(core.KindCredit, "held", core.Credit{Points: 5, Reason: "second", ExpiresAt: &exp2})
	f.setNow(f.now.Add(4 * 24 * time.Hour)) // past the pending days of the points so far
	f.ok(core.KindAccrue, "c", core.Accrue{EventType: "purchase", Amount: "8"})
	f.ok(core.KindAuthorize, odd, core.Authorize{Points: 4})

	wantView(t, f, "empty")
	// A lot held whole frees nothing to expire: its instant has no bucket.
	f.ok(core.KindAuthorize, "held", core.Authorize{Points: 6})
	if v := wantView(t, f, "held"); len(v.NextExpiries) != 1 ||
		!v.NextExpiries[0].ExpiresAt.Equal(exp2) || v.NextExpiries[0].Points != 5 {
		t.Fatalf("held member's next expiries %+v, want 5 points at %s", v.NextExpiries, exp2)
	}
	if v := wantView(t, f, odd); v.Balance.Held != 4 || v.Member != odd {
		t.Fatalf("odd member: %+v", v)
	}
	f.ok(core.KindMerge, "a", core.Merge{Into: "b"})
	f.ok(core.KindMerge, "b", core.Merge{Into: "c"})
	for _, ref := range []string{"a", "b", "c"} {
		v := wantView(t, f, ref)
		if b := v.Balance; v.Member != "c" || b.Available+b.Pending != 114 || b.Pending < 8 {
			t.Fatalf("balance of %s after merges: %s %+v, want c with 114, 8 pending or more",
				ref, v.Member, b)
		}
	}
	f.ok(core.KindClose, "c", core.StatusChange{Reason: "left"})
	if v := wantView(t, f, "a"); v.Status != "closed" {
		t.Fatalf("survivor closed, balance of a says %q", v.Status)
	}
	// Erasing the survivor erases the accounts merged into it: none of the
	// three references leads anywhere.
	f.ok(core.KindErase, "c", core.Erase{Reason: "art. 17"})

	for _, q := range [][2]string{{f.prog, "nobody"}, {"no-such-program", "a"},
		{f.prog, "c"}, {f.prog, "a"}, {f.prog, "b"}} {
		for _, read := range []func(context.Context, string, string) (*BalanceView, error){
			f.l.Balance, f.l.BalanceSummary} {
			v, err := read(context.Background(), q[0], q[1])
			var ce *core.Error
			if !errors.As(err, &ce) || ce.Kind != core.NotFound || v != nil {
				t.Fatalf("balance %s/%s: %+v, %v; want not_found", q[0], q[1], v, err)
			}
		}
	}
	f.check()
}

// A member with more than 1000 live lots shows the 1000 that expire first,
// and its figures count them all.
func TestBalanceOfAMemberWithManyLots(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("many")
	cmds := make([]bus.Command, 1003)
	for i := range cmds {
		exp := f.now.Add(time.Duration(i%50+1) * time.Hour)
		cr := core.Credit{Points: 1, Reason: "lot"}
		if i%7 != 0 {
			cr.ExpiresAt = &exp
		}
		cmds[i] = f.command(core.KindCredit, "many", f.txn(), cr)
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
	v := wantView(t, f, "many")
	if len(v.Lots) != 1000 || v.Balance.Available != 1003 || len(v.NextExpiries) != 12 ||
		!v.LotsTruncated {
		t.Fatalf("%d lots, %d available, %d expiry buckets, truncated %t; want 1000, 1003, "+
			"12, true", len(v.Lots), v.Balance.Available, len(v.NextExpiries), v.LotsTruncated)
	}
	// With exactly 1,000 lots the list is whole, and says nothing.
	f.enroll("thousand")
	for i := range cmds[:1000] {
		cmds[i] = f.command(core.KindCredit, "thousand", f.txn(), core.Credit{Points: 1,
			Reason: "lot"})
	}
	if _, err := f.l.ApplyBatch(context.Background(), cmds[:1000]); err != nil {
		t.Fatal(err)
	}
	if w := wantView(t, f, "thousand"); len(w.Lots) != 1000 || w.LotsTruncated {
		t.Fatalf("1000 lots: %d listed, truncated %t; want all, not truncated", len(w.Lots),
			w.LotsTruncated)
	}
	f.check()
}

// Merges chained further than the merge walk goes (16 steps): the balance
// read answers with a view or an error, as Member does, and never with
// neither.
func TestBalanceOfALongMergeChain(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	const n = 18
	for i := range n {
		f.enroll(fmt.Sprintf("m%d", i))
	}
	f.ok(core.KindCredit, "m0", core.Credit{Points: 5, Reason: "seed"})
	for i := range n - 1 {
		f.ok(core.KindMerge, fmt.Sprintf("m%d", i), core.Merge{Into: fmt.Sprintf("m%d", i+1)})
	}
	ctx := context.Background()
	m, merr := f.l.Member(ctx, f.prog, "m0")
	for _, read := range []func(context.Context, string, string) (*BalanceView, error){
		f.l.Balance, f.l.BalanceSummary} {
		v, err := read(ctx, f.prog, "m0")
		if v == nil && err == nil {
			t.Fatal("balance of m0: no view and no error")
		}
		if (err == nil) != (merr == nil) || (v != nil && m != nil && v.Member != m.CustomerRef) {
			t.Fatalf("balance of m0: %+v, %v; member: %+v, %v", v, err, m, merr)
		}
	}
	// A chain within the walk reads the survivor.
	if v := wantView(t, f, "m2"); v.Member != "m17" || v.Balance.Available != 5 {
		t.Fatalf("balance of m2: %+v", v)
	}
	f.check()
}
