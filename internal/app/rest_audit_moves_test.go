package app

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A person's moves of a member's points or standing made over REST are in
// the audit log beside the back office's: the action, program/member, the
// system with X-Actor, and the member before and after with the request.
// A refused move leaves no entry; a credit (a system's routine) none.
func TestRESTMemberMovesAreAudited(t *testing.T) {
	cfg := testConfig(t)
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	as := []string{"X-Actor", "pedro"}
	p := "/v1/programs/telco/members"
	c.must(201, "POST", p, "enr-1", map[string]any{"customer_ref": "m-1"})
	c.must(201, "POST", p+"/m-1/credits", "cr-1", map[string]any{"points": 100, "reason": "bill"})
	c.must(201, "POST", p+"/m-1/adjustments", "adj-1",
		map[string]any{"points": 50000, "reason": "goodwill, ticket 88"}, as...)
	c.must(422, "POST", p+"/m-1/adjustments", "adj-2",
		map[string]any{"points": -90000, "reason": "too much"}, as...)
	c.must(201, "POST", p+"/m-1/suspend", "sus-1", map[string]any{"reason": "fraud check"}, as...)

	conn, err := pgx.Connect(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT actor, action, target, before, after
		FROM bo_audit ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type state struct {
		Status  string `json:"status"`
		Balance struct {
			Available int64 `json:"available"`
		} `json:"balance"`
		TxnID   string `json:"txn_id"`
		Request struct {
			Points int64  `json:"points"`
			Reason string `json:"reason"`
		} `json:"request"`
	}
	type entry struct {
		actor, action, target string
		before, after         state
	}
	var got []entry
	for rows.Next() {
		var e entry
		var before, after []byte
		if err := rows.Scan(&e.actor, &e.action, &e.target, &before, &after); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(before, &e.before)
		_ = json.Unmarshal(after, &e.after)
		if e.target == "telco" {
			continue // the program's creation (setupProgram)
		}
		if e.before.TxnID != "" || e.before.Request.Reason != "" {
			t.Errorf("%s: the before holds the request: %s", e.action, before)
		}
		got = append(got, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d audit entries, want 2 (the adjustment and the suspension): %+v", len(got), got)
	}
	adj, sus := got[0], got[1]
	if adj.action != "adjustment.applied" || adj.target != "telco/m-1" ||
		adj.actor != "api:billing (pedro)" || adj.before.Balance.Available != 100 ||
		adj.after.Balance.Available != 50100 || adj.after.Request.Points != 50000 ||
		adj.after.Request.Reason != "goodwill, ticket 88" || adj.after.TxnID != "adj-1" {
		t.Fatalf("adjustment entry %+v", adj)
	}
	if sus.action != "member.suspended" || sus.before.Status != "active" ||
		sus.after.Status != "suspended" || sus.after.Request.Reason != "fraud check" {
		t.Fatalf("suspension entry %+v", sus)
	}
}
