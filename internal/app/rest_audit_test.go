package app

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Parameter changes sent over REST are in the audit log as the back
// office's are: the action, what it names, the calling system with the
// person of X-Actor, and the parameter before and after. A retry of the
// same request is one entry; points moved are not parameter changes.
func TestRESTParameterChangesAreAudited(t *testing.T) {
	cfg := testConfig(t)
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	as := []string{"X-Actor", "ana"}
	p := "/v1/programs/telco"
	c.must(201, "PUT", p, "prog-1", map[string]any{"name": "Telco", "currency": "USD",
		"points_per_unit": "1"}, as...)
	c.must(201, "PUT", p, "prog-2", map[string]any{"name": "Telco Chile", "currency": "USD",
		"points_per_unit": "2"}, as...)
	c.must(201, "PUT", p, "prog-2", map[string]any{"name": "Telco Chile", "currency": "USD",
		"points_per_unit": "2"}, as...) // a retry
	c.must(201, "POST", p+"/rules", "rule-1", map[string]any{"code": "base",
		"event_type": "bill_paid", "formula": map[string]any{"kind": "per_unit", "rate": "2"}})
	c.must(201, "POST", p+"/rewards", "rw-1", map[string]any{"code": "mug", "name": "Mug",
		"points": 100}, as...)
	c.must(201, "POST", p+"/partners", "pa-1", map[string]any{"code": "shop", "name": "Shop",
		"currency": "USD", "point_value": "1", "can_burn": true}, as...)
	r := c.must(201, "POST", p+"/partners/shop/keys", "key-1",
		map[string]any{"scopes": []string{"balance"}}, as...)
	key := jstr(t, r, "key")
	c.must(201, "POST", p+"/members", "enr-1", map[string]any{"customer_ref": "m-1"}, as...)
	c.must(201, "POST", p+"/members/m-1/credits", "cr-1",
		map[string]any{"points": 50, "reason": "welcome"}, as...)

	conn, err := pgx.Connect(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT actor, action, target,
			coalesce(before::text, ''), coalesce(after::text, '')
		FROM bo_audit ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct{ actor, action, target, before, after string }
	var got []entry
	for rows.Next() {
		var e entry
		if err := rows.Scan(&e.actor, &e.action, &e.target, &e.before, &e.after); err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []entry{
		{actor: "api:billing (ana)", action: "program.created", target: "telco"},
		{actor: "api:billing (ana)", action: "program.updated", target: "telco"},
		{actor: "api:billing", action: "rule.created", target: "telco/base"},
		{actor: "api:billing (ana)", action: "reward.saved", target: "telco/mug"},
		{actor: "api:billing (ana)", action: "partner.saved", target: "telco/shop"},
		{actor: "api:billing (ana)", action: "partner.key_issued", target: "telco/shop"},
	}
	if len(got) != len(want) {
		t.Fatalf("audit log %+v\nwant %d entries: %+v", got, len(want), want)
	}
	for i, e := range got {
		if e.actor != want[i].actor || e.action != want[i].action || e.target != want[i].target {
			t.Errorf("entry %d: %s %s %s; want %s %s %s", i, e.actor, e.action, e.target,
				want[i].actor, want[i].action, want[i].target)
		}
	}
	// The second program change shows the name before and after; the first
	// had nothing before.
	if got[0].before != "" || !strings.Contains(got[0].after, `"Telco"`) {
		t.Errorf("first program entry before %q after %q", got[0].before, got[0].after)
	}
	if !strings.Contains(got[1].before, `"Telco"`) || !strings.Contains(got[1].after,
		`"Telco Chile"`) {
		t.Errorf("second program entry before %q after %q", got[1].before, got[1].after)
	}
	// A key's secret is never in the log, only what the partner shows.
	for _, e := range got {
		if strings.Contains(e.before+e.after, key) {
			t.Fatalf("the partner key is in the audit entry %s", e.action)
		}
	}
}
