package app

import (
	"net/url"
	"testing"
)

// TestRulesEndToEnd drives the rules engine through REST: a rule saved,
// refused, simulated, posted, updated and retired.
func TestRulesEndToEnd(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	p := "/v1/programs/telco"
	c.must(201, "POST", p+"/members", "enr-1", map[string]any{"customer_ref": "7590-VHVEG",
		"attributes": map[string]any{"contract": "month_to_month"}})

	// A condition with a typo is refused at the gateway, naming the field.
	r := c.must(400, "POST", p+"/rules", "rule-bad", map[string]any{"code": "two-year",
		"event_type": "bill_paid", "condition": `member.contrat == "two_year"`,
		"formula": map[string]any{"kind": "fixed", "points": 100}})
	if r.body["field"] != "condition" {
		t.Fatalf("refusal names %v: %s", r.body["field"], r.raw)
	}
	c.must(201, "POST", p+"/rules", "rule-1", map[string]any{"code": "base",
		"event_type": "bill_paid", "formula": map[string]any{"kind": "per_unit", "rate": "2"}})
	c.must(201, "POST", p+"/rules", "rule-2", map[string]any{"code": "two-year",
		"event_type": "bill_paid", "condition": `member.contract == "two_year"`, "priority": 5,
		"formula": map[string]any{"kind": "fixed", "points": 100}})
	c.must(409, "POST", p+"/rules", "rule-3", map[string]any{"code": "base",
		"event_type": "bill_paid", "formula": map[string]any{"kind": "fixed", "points": 1}})
	c.must(201, "PUT", p+"/members/7590-VHVEG/attributes", "attr-1",
		map[string]any{"contract": "two_year"})

	q := url.Values{"member": {"7590-VHVEG"}, "type": {"bill_paid"}, "amount": {"29.85"},
		"occurred_at": {"2026-11-05T12:00:00-03:00"}}
	sim := c.must(200, "GET", p+"/simulate?"+q.Encode(), "", nil)
	if jnum(t, sim, "points") != 159 ||
		sim.body["rule_version"] != "rule:two-year@v1+rule:base@v1" {
		t.Fatalf("simulation: %s", sim.raw)
	}
	posted := c.must(201, "POST", p+"/members/7590-VHVEG/events", "bill-1", map[string]any{
		"type": "bill_paid", "amount": "29.85", "occurred_at": "2026-11-05T12:00:00-03:00"})
	if jnum(t, posted, "data.points") != 159 {
		t.Fatalf("posted: %s", posted.raw)
	}

	// Version 2 from now on; the list shows it, the rule keeps both.
	c.must(201, "PUT", p+"/rules/base", "rule-4", map[string]any{"event_type": "bill_paid",
		"formula": map[string]any{"kind": "per_unit", "rate": "3"}})
	got := c.must(200, "GET", p+"/rules/base", "", nil)
	if vs, _ := got.body["versions"].([]any); len(vs) != 2 || jnum(t, got, "rule.version") != 2 {
		t.Fatalf("versions: %s", got.raw)
	}
	list := c.must(200, "GET", p+"/rules", "", nil)
	if rs, _ := list.body["rules"].([]any); len(rs) != 2 {
		t.Fatalf("list: %s", list.raw)
	}
	// The back-dated bill above still simulates by version 1.
	if sim := c.must(200, "GET", p+"/simulate?"+q.Encode(), "", nil); jnum(t, sim,
		"points") != 159 {
		t.Fatalf("back-dated simulation: %s", sim.raw)
	}
	c.must(201, "DELETE", p+"/rules/two-year", "rule-5", nil)
	c.must(409, "DELETE", p+"/rules/two-year", "rule-6", nil)
	c.must(404, "PUT", p+"/rules/nope", "rule-7", map[string]any{"event_type": "bill_paid",
		"formula": map[string]any{"kind": "fixed", "points": 1}})
	now := c.must(201, "POST", p+"/members/7590-VHVEG/events", "bill-2", map[string]any{
		"type": "bill_paid", "amount": "10"})
	if jnum(t, now, "data.points") != 30 {
		t.Fatalf("after the update and the retirement: %s", now.raw)
	}
	bal := c.must(200, "GET", p+"/members/7590-VHVEG/balance", "", nil)
	if jnum(t, bal, "balance.available") != 189 {
		t.Fatalf("balance: %s", bal.raw)
	}
}
