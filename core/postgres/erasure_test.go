package postgres

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// ledgerSums are a member's posting and lot totals, which erasure must keep.
type ledgerSums struct {
	postings, points, held, pending, lotsRemaining int64
}

func (f *fixture) sums(memberID string) ledgerSums {
	f.t.Helper()
	var s ledgerSums
	err := f.l.Pool().QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM postings WHERE member_id = $1),
			(SELECT coalesce(sum(points), 0)::bigint FROM postings WHERE member_id = $1),
			(SELECT coalesce(sum(held_delta), 0)::bigint FROM postings WHERE member_id = $1),
			(SELECT coalesce(sum(pending_delta), 0)::bigint FROM postings WHERE member_id = $1),
			(SELECT coalesce(sum(remaining), 0)::bigint FROM lots WHERE member_id = $1)`,
		memberID).Scan(&s.postings, &s.points, &s.held, &s.pending, &s.lotsRemaining)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// count runs a count query and returns its answer.
func (f *fixture) count(sql string, args ...any) int64 {
	f.t.Helper()
	var n int64
	if err := f.l.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestEraseKeepsLedgerAndRemovesPersonalData(t *testing.T) {
	f := newFixture(t, core.Program{})
	ctx := context.Background()
	pool := f.l.Pool()
	const ref = "cl-16.555.123-4"

	// A member with attributes, a history and an open hold; and a bystander.
	f.ok(core.KindEnroll, ref, core.Enroll{Channel: "web", Attributes: &core.MemberAttributes{
		Plan: "postpago-max", Contract: "K-99812", PaymentMethod: "visa-4412",
		Segments: []string{"vip"}}})
	f.enroll("bystander")
	f.ok(core.KindCredit, ref, core.Credit{Points: 1000, Reason: "welcome"})
	f.ok(core.KindCredit, "bystander", core.Credit{Points: 500, Reason: "welcome"})
	f.ok(core.KindRedeem, ref, core.Redeem{Points: 300, Reason: "gift"})
	holdTxn := f.txn()
	if r := f.do(core.KindAuthorize, ref, holdTxn, core.Authorize{Points: 100}); r.Status !=
		bus.StatusOK {
		t.Fatalf("authorize: %+v", r.Error)
	}

	// Copies of the reference beside the ledger: a bulk file line and a
	// conversion to another program's account.
	var memberID, progID string
	if err := pool.QueryRow(ctx, `SELECT m.id, m.program_id FROM members m
		JOIN programs p ON p.id = m.program_id WHERE p.code = $1 AND m.customer_ref = $2`,
		f.prog, ref).Scan(&memberID, &progID); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(ctx, `INSERT INTO bulk_batches (id, program, checksum, file_name,
			stored_path, size_bytes, charset, uploaded_by, channel)
		VALUES (gen_random_uuid(), $1, 'sum-'||$1, 'f.csv', '/dev/null', 10, 'utf-8', 'op', 'sftp');
		`, f.prog)
	if err == nil {
		_, err = pool.Exec(ctx, `INSERT INTO bulk_lines (batch_id, line, member, points, status)
			SELECT id, 2, $2, 40, 'posted' FROM bulk_batches WHERE program = $1`, f.prog, ref)
	}
	if err == nil {
		_, err = pool.Exec(ctx, `INSERT INTO external_programs (program_id, code, name, ratio,
				rounding, min_points, max_points, identify, flavour)
			VALUES ($1, 'air', 'Air', 1, 'down', 1, 1000, 'account_id', 'file')`, progID)
	}
	if err == nil {
		_, err = pool.Exec(ctx, `INSERT INTO conversions (id, program_id, member_id, member_ref,
				external_code, points, amount, account_id, source, txn_id, hold_txn_id, status,
				next_attempt_at, requested_at)
			VALUES (gen_random_uuid(), $1, $2, $3, 'air', 50, 50, 'AIR-7731', 'test', 'c1',
				'h1', 'confirmed', now(), now())`, progID, memberID, ref)
	}
	if err == nil {
		// An adjustment someone made alone in the back office.
		_, err = pool.Exec(ctx, `INSERT INTO bo_adjusted_alone (person, program, member,
			points, txn_id, at) VALUES ('olga', $1, $2, 25, $3, now())`, f.prog, ref, f.txn())
	}
	if err != nil {
		t.Fatalf("seed side tables: %v", err)
	}

	// Erasure waits for open holds.
	f.refused(core.KindErase, ref, core.Erase{Reason: "art. 12 request"}, core.Conflict)
	f.ok(core.KindRelease, ref, core.Release{HoldTxnID: holdTxn})
	f.refused(core.KindErase, ref, core.Erase{}, core.Invalid)
	f.wantBalance(ref, 700, 0, 0)
	before := f.sums(memberID)

	eraseTxn := f.txn()
	r := f.do(core.KindErase, ref, eraseTxn, core.Erase{Reason: "art. 12 request"})
	if r.Status != bus.StatusOK {
		t.Fatalf("erase: %s %+v", r.Status, r.Error)
	}
	var e core.Erasure
	if err := json.Unmarshal(r.Data, &e); err != nil {
		t.Fatal(err)
	}
	pseudo := "erased-" + memberID
	if e.MemberID != memberID || e.Pseudonym != pseudo || e.ErasedBy != "tester" ||
		e.Reason != "art. 12 request" || !e.ErasedAt.Equal(f.now) || e.Balance.Available != 700 {
		t.Fatalf("erasure = %+v", e)
	}

	// The ledger is as it was; only the name changed.
	if after := f.sums(memberID); after != before {
		t.Fatalf("sums after erasure %+v, before %+v", after, before)
	}
	if before != (ledgerSums{postings: 4, points: 700, held: 0, pending: 0,
		lotsRemaining: 700}) {
		t.Fatalf("sums = %+v", before)
	}
	f.check()
	if _, err := f.l.Balance(ctx, f.prog, ref); core.KindOf(err) != core.NotFound {
		t.Fatalf("balance by the old reference: %v, want not found", err)
	}
	f.wantBalance(pseudo, 700, 0, 0)
	f.wantBalance("bystander", 500, 0, 0)

	// Personal data is gone from every table that held it.
	var channel, attrs, erasedBy string
	if err := pool.QueryRow(ctx, `SELECT channel, attributes::text, erased_by FROM members
		WHERE id = $1 AND erased_at IS NOT NULL`, memberID).Scan(&channel, &attrs,
		&erasedBy); err != nil {
		t.Fatal(err)
	}
	if channel != "" || attrs != "{}" || erasedBy != "tester" {
		t.Fatalf("member row: channel %q attributes %s erased_by %q", channel, attrs, erasedBy)
	}
	like := "%" + ref + "%"
	for _, q := range []string{
		`SELECT count(*) FROM members WHERE customer_ref LIKE $1`,
		`SELECT count(*) FROM bulk_lines WHERE member LIKE $1`,
		`SELECT count(*) FROM conversions WHERE member_ref LIKE $1 OR account_id = 'AIR-7731'`,
		`SELECT count(*) FROM outbox WHERE body::text LIKE $1`,
		`SELECT count(*) FROM commands WHERE result::text LIKE $1`,
		`SELECT count(*) FROM members WHERE attributes::text LIKE '%K-99812%' OR channel LIKE $1`,
		`SELECT count(*) FROM bo_adjusted_alone WHERE member LIKE $1`,
	} {
		if n := f.count(q, like); n != 0 {
			t.Errorf("%s: %d rows still hold the reference", q, n)
		}
	}
	if n := f.count(`SELECT count(*) FROM bulk_lines WHERE member = $1 AND points = 40`,
		pseudo); n != 1 {
		t.Errorf("bulk line under the pseudonym: %d, want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM conversions WHERE member_ref = $1 AND points = 50
		AND amount = 50 AND account_id = ''`, pseudo); n != 1 {
		t.Errorf("conversion under the pseudonym: %d, want 1", n)
	}
	if n := f.count(`SELECT count(*) FROM outbox WHERE body->>'member' = $1
		AND body->>'member_ref' = $2 AND body->>'kind' != $3`, memberID, pseudo,
		core.EventMemberErased); n != 4 {
		t.Errorf("outbox events under the pseudonym: %d, want 4", n)
	}
	// One member_erased event tells the reporting sink to rewrite its copies.
	if n := f.count(`SELECT count(*) FROM outbox WHERE body->>'member' = $1
		AND body->>'member_ref' = $2 AND body->>'kind' = $3 AND (body->>'points')::int = 0`,
		memberID, pseudo, core.EventMemberErased); n != 1 {
		t.Errorf("member_erased events: %d, want 1", n)
	}

	// The same request replays; erasing again by the pseudonym changes nothing.
	again := f.do(core.KindErase, ref, eraseTxn, core.Erase{Reason: "art. 12 request"})
	if again.Status != bus.StatusOK || !again.Replayed {
		t.Fatalf("replay: %+v", again)
	}
	f.setNow(f.now.AddDate(0, 0, 1))
	f.refused(core.KindErase, ref, core.Erase{Reason: "again"}, core.NotFound)
	var e2 core.Erasure
	r2 := f.do(core.KindErase, pseudo, f.txn(), core.Erase{Reason: "repeat"})
	if r2.Status != bus.StatusOK || r2.Replayed {
		t.Fatalf("second erasure: %+v", r2)
	}
	if err := json.Unmarshal(r2.Data, &e2); err != nil {
		t.Fatal(err)
	}
	if e2.ErasedAt != e.ErasedAt || e2.Reason != "art. 12 request" || e2.Pseudonym != pseudo {
		t.Fatalf("second erasure = %+v, want the first one %+v", e2, e)
	}
	f.wantBalance(pseudo, 700, 0, 0)
	f.check()
}

// TestEraseTakesTheMergedAccounts: erasing a member erases the accounts
// merged into it (directly or through another), which are the same
// person's: their references stop leading to the survivor, each gets a
// pseudonym, and the ledger's sums stay.
func TestEraseTakesTheMergedAccounts(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	for _, ref := range []string{"ana-main", "ana-old", "ana-older", "bea"} {
		f.enroll(ref)
		f.ok(core.KindCredit, ref, core.Credit{Points: 100, Reason: "welcome"})
	}
	f.ok(core.KindMerge, "ana-older", core.Merge{Into: "ana-old"})
	f.ok(core.KindMerge, "ana-old", core.Merge{Into: "ana-main"})
	main, err := f.l.Member(ctx, f.prog, "ana-main")
	if err != nil {
		t.Fatal(err)
	}
	before := f.sums(main.ID)

	r := f.do(core.KindErase, "ana-main", f.txn(), core.Erase{Reason: "art. 17 request"})
	var e core.Erasure
	if err := json.Unmarshal(r.Data, &e); r.Status != bus.StatusOK || err != nil {
		t.Fatalf("erase: %s %+v", r.Status, r.Error)
	}
	if len(e.Merged) != 2 {
		t.Fatalf("merged accounts erased %v, want the two of ana", e.Merged)
	}
	for _, ref := range []string{"ana-main", "ana-old", "ana-older"} {
		if _, err := f.l.Member(ctx, f.prog, ref); core.KindOf(err) != core.NotFound {
			t.Fatalf("%s still leads somewhere after the erasure: %v", ref, err)
		}
	}
	if n := f.count(`SELECT count(*) FROM members WHERE customer_ref LIKE 'ana-%'`); n != 0 {
		t.Fatalf("%d members still named ana-…", n)
	}
	if n := f.count(`SELECT count(*) FROM bo_audit WHERE action = 'member.erased'
		AND target LIKE $1`, f.prog+"/erased-%"); n != 3 {
		t.Fatalf("%d erasure audit entries, want 3", n)
	}
	if after := f.sums(main.ID); after != before {
		t.Fatalf("ledger sums moved: %+v to %+v", before, after)
	}
	b, err := f.l.Balance(ctx, f.prog, e.Pseudonym)
	if err != nil || b.Balance.Available != 300 {
		t.Fatalf("the pseudonym's balance %+v (%v), want the 300 of the three accounts", b, err)
	}
	f.wantBalance("bea", 100, 0, 0)

	// Erasing again, by the pseudonym, answers the first erasure whole.
	r = f.do(core.KindErase, e.Pseudonym, f.txn(), core.Erase{Reason: "asked again"})
	var again core.Erasure
	if err := json.Unmarshal(r.Data, &again); r.Status != bus.StatusOK || err != nil {
		t.Fatalf("erase again: %s %+v", r.Status, r.Error)
	}
	if !slices.Equal(again.Merged, e.Merged) || again.Reason != "art. 17 request" {
		t.Fatalf("the second erasure answers merged %v (%q), want %v (%q)", again.Merged,
			again.Reason, e.Merged, "art. 17 request")
	}
	f.check()
}

// audited applies a command carrying an audit note, as the REST gateway
// sends a person's moves.
func (f *fixture) audited(kind, member string, payload any, action, target string) bus.Result {
	f.t.Helper()
	c := f.command(kind, member, f.txn(), payload)
	c.Audit = &bus.Audit{Action: action, Target: target, Actor: "api:test (bob)"}
	return f.apply(c)
}

// TestEraseRewritesOnlyTheMembersAuditEntries: erasing a member whose
// reference is also a reward's code leaves the reward's audit entries
// alone, and rewrites the reference where other members' entries name it
// (a transfer's recipient, a merge's survivor).
func TestEraseRewritesOnlyTheMembersAuditEntries(t *testing.T) {
	f := newFixture(t, core.Program{})
	if r := f.audited(core.KindRewardUpsert, "", core.Reward{Code: "vip", Name: "VIP",
		Points: 100}, "reward.saved", f.prog+"/vip"); r.Status != bus.StatusOK {
		t.Fatalf("reward: %+v", r.Error)
	}
	for _, ref := range []string{"vip", "vip-old", "bea"} {
		f.enroll(ref)
		f.ok(core.KindCredit, ref, core.Credit{Points: 100, Reason: "welcome"})
	}
	if r := f.audited(core.KindTransfer, "bea", core.Transfer{To: "vip", Points: 10,
		Reason: "gift"}, "points.transferred", f.prog+"/bea"); r.Status != bus.StatusOK {
		t.Fatalf("transfer: %+v", r.Error)
	}
	if r := f.audited(core.KindMerge, "vip-old", core.Merge{Into: "vip"}, "member.merged",
		f.prog+"/vip-old"); r.Status != bus.StatusOK {
		t.Fatalf("merge: %+v", r.Error)
	}
	// The back office's close of a member, asked for and approved.
	for _, action := range []string{"close.requested", "close.approved"} {
		if _, err := f.l.Pool().Exec(context.Background(), `INSERT INTO bo_audit (at, actor,
			action, target, after) VALUES (now(), 'olga', $1, $2, '{"points": -100}')`,
			action, f.prog+"/vip"); err != nil {
			t.Fatal(err)
		}
	}
	wantRefused(t, f.do(core.KindErase, "vip", f.txn(), core.Erase{Reason: "art. 17 \u202e"}),
		core.Invalid, "reason")
	f.ok(core.KindErase, "vip", core.Erase{Reason: "art. 17"})

	if n := f.count(`SELECT count(*) FROM bo_audit WHERE action = 'reward.saved'
		AND target = $1`, f.prog+"/vip"); n != 1 {
		t.Fatalf("the reward's audit entry was renamed by the member's erasure (%d left)", n)
	}
	if n := f.count(`SELECT count(*) FROM bo_audit WHERE left(target, length($1) + 1) = $1 || '/'
		AND action <> 'reward.saved' AND (target = $1 || '/vip' OR after::text LIKE '%"vip"%')`,
		f.prog); n != 0 {
		t.Fatalf("%d members' audit entries still name vip", n)
	}
	if n := f.count(`SELECT count(*) FROM bo_audit WHERE target = $1
		AND after->'request'->>'to' LIKE 'erased-%'`, f.prog+"/bea"); n != 1 {
		t.Fatalf("the transfer's entry does not name the recipient's pseudonym")
	}
}

// TestEraseFindsTheMemberHoweverTheRequestSpeltIt: a transfer whose request
// spelt its recipient's key in capitals, and a back-office dead-letter entry
// naming the member, no longer name it after its erasure.
func TestEraseFindsTheMemberHoweverTheRequestSpeltIt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Program{})
	for _, ref := range []string{"vip", "bea"} {
		f.enroll(ref)
		f.ok(core.KindCredit, ref, core.Credit{Points: 100, Reason: "welcome"})
	}
	c := f.command(core.KindTransfer, "bea", f.txn(), nil)
	c.Payload = []byte(`{"To":"vip","Points":10,"Reason":"gift"}`)
	c.Audit = &bus.Audit{Action: "points.transferred", Target: f.prog + "/bea",
		Actor: "api:test (bob)"}
	c.Seal()
	if r := f.apply(c); r.Status != bus.StatusOK {
		t.Fatalf("transfer: %+v", r.Error)
	}
	f.wantBalance("vip", 110, 0, 0)
	if _, err := f.l.Pool().Exec(ctx, insertAudit, f.now, "olga", "deadletter.discarded",
		"billing/t-9", map[string]any{"seq": 9, "program": f.prog, "member": "vip"},
		map[string]any{"done": "dropped"}); err != nil {
		t.Fatal(err)
	}
	f.ok(core.KindErase, "vip", core.Erase{Reason: "art. 17"})
	if n := f.count(`SELECT count(*) FROM bo_audit WHERE (target = $1 || '/bea'
			AND after::text LIKE '%"vip"%')
		OR (action = 'deadletter.discarded' AND before->>'program' = $1
			AND before->>'member' = 'vip')`, f.prog); n != 0 {
		t.Fatalf("%d audit entries still name the erased vip", n)
	}
}
