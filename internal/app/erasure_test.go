package app

import (
	"context"
	"testing"
)

// TestEraseEndToEnd erases a member over REST: the old reference stops
// resolving, the pseudonym finds the same balance, the ledger is untouched
// and the personal data is gone from PostgreSQL.
func TestEraseEndToEnd(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{
		"customer_ref": "cl-13.444.555-k", "channel": "store",
		"attributes": map[string]any{"plan": "postpago", "payment_method": "card-9981"}})
	c.must(201, "POST", "/v1/programs/telco/members/cl-13.444.555-k/credits", "cr-1",
		map[string]any{"points": 500, "reason": "welcome"})
	c.must(201, "POST", "/v1/programs/telco/members/cl-13.444.555-k/redemptions", "rd-1",
		map[string]any{"points": 120, "reason": "gift"})
	// An adjustment, which the audit log names by the reference.
	c.must(201, "POST", "/v1/programs/telco/members/cl-13.444.555-k/adjustments", "ad-1",
		map[string]any{"points": 20, "reason": "goodwill"}, "X-Actor", "ana")

	path := "/v1/programs/telco/members/cl-13.444.555-k/erase"
	body := map[string]any{"reason": "request 2026-118"}
	c.must(400, "POST", path, "er-0", body)
	r := c.must(201, "POST", path, "er-1", body, "X-Actor", "dpo@operator")
	var memberID string
	if err := a.Ledger.Pool().QueryRow(context.Background(), `SELECT id::text FROM members
		WHERE erased_at IS NOT NULL AND erased_by = 'dpo@operator'`).Scan(&memberID); err != nil {
		t.Fatal(err)
	}
	pseudo := "erased-" + memberID
	if got := r.body["data"].(map[string]any)["pseudonym"]; got != pseudo {
		t.Fatalf("pseudonym %v, want %s", got, pseudo)
	}
	if got := jnum(t, r, "data.balance.available"); got != 400 {
		t.Fatalf("available at erasure %d, want 400", got)
	}

	// The same request again replays; the old reference is gone.
	again := c.must(201, "POST", path, "er-1", body, "X-Actor", "dpo@operator")
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay without the header: %s", again.raw)
	}
	c.must(404, "GET", "/v1/programs/telco/members/cl-13.444.555-k", "", nil)
	c.must(404, "GET", "/v1/programs/telco/members/cl-13.444.555-k/balance", "", nil)
	m := c.must(200, "GET", "/v1/programs/telco/members/"+pseudo, "", nil)
	if m.body["customer_ref"] != pseudo || m.body["channel"] != nil {
		t.Fatalf("member by pseudonym: %s", m.raw)
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/"+pseudo+"/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 400 {
		t.Fatalf("available %d, want 400", got)
	}

	// Postings are whole; personal data is nowhere in the tables that held it.
	var n, sum int64
	var attrs string
	err := a.Ledger.Pool().QueryRow(context.Background(), `SELECT count(*), sum(p.points),
			min(m.attributes::text)
		FROM postings p JOIN members m ON m.id = p.member_id WHERE m.id = $1`,
		memberID).Scan(&n, &sum, &attrs)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || sum != 400 || attrs != "{}" {
		t.Fatalf("postings %d summing %d, attributes %s; want 3, 400, {}", n, sum, attrs)
	}
	err = a.Ledger.Pool().QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM members WHERE customer_ref LIKE '%13.444.555%'
				OR channel = 'store' OR attributes::text LIKE '%card-9981%')
			+ (SELECT count(*) FROM commands WHERE result::text LIKE '%13.444.555%')
			+ (SELECT count(*) FROM outbox WHERE body::text LIKE '%13.444.555%')
			+ (SELECT count(*) FROM bo_audit WHERE target LIKE '%13.444.555%')`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d rows still hold the member's personal data", n)
	}
	// The audit entries stay, under the pseudonym.
	if err := a.Ledger.Pool().QueryRow(context.Background(), `SELECT count(*) FROM bo_audit
		WHERE target = $1 AND action = 'adjustment.applied'`,
		"telco/"+pseudo).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d audit entries under the pseudonym (%v), want the adjustment", n, err)
	}
	// And the erasure is there itself, once (the replay wrote nothing more).
	var actor, why string
	if err := a.Ledger.Pool().QueryRow(context.Background(), `SELECT actor,
			after->>'reason', count(*) OVER () FROM bo_audit
		WHERE target = $1 AND action = 'member.erased'`, "telco/"+pseudo).Scan(&actor,
		&why, &n); err != nil || n != 1 || actor != "api:billing (dpo@operator)" ||
		why != "request 2026-118" {
		t.Fatalf("erasure audit entry: %q %q, %d of them (%v)", actor, why, n, err)
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %v %+v", err, v)
	}
}
