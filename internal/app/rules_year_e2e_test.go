package app

import (
	"testing"
)

// TestRulesYearCapAndSpendTiersEndToEnd drives a per-year cap and tiers
// qualified by spend through REST: the JSON names, the cap's cut, the tier
// that money paid reaches and the spend the member's tier reports.
func TestRulesYearCapAndSpendTiersEndToEnd(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	p := "/v1/programs/telco"
	c.must(201, "POST", p+"/members", "enr-1", map[string]any{"customer_ref": "7590-VHVEG"})

	c.must(201, "POST", p+"/rules", "rule-1", map[string]any{"code": "base",
		"event_type": "bill_paid", "formula": map[string]any{"kind": "per_unit", "rate": "1"},
		"caps": map[string]any{"per_year": 100}})
	got := c.must(200, "GET", p+"/rules/base", "", nil)
	if jnum(t, got, "rule.caps.per_year") != 100 {
		t.Fatalf("stored rule: %s", got.raw)
	}
	c.must(400, "POST", p+"/rules", "rule-2", map[string]any{"code": "neg",
		"event_type": "bill_paid", "formula": map[string]any{"kind": "per_unit", "rate": "1"},
		"caps": map[string]any{"per_year": -5}})
	c.must(201, "PUT", p+"/tiers", "tiers-1", map[string]any{"window_days": 365,
		"basis": "spend", "levels": []map[string]any{
			{"code": "blue", "min_spend": "0", "multiplier": "1"},
			{"code": "gold", "min_spend": "100.50", "multiplier": "1"}}})

	// Both bills occur now, so in one program year, and in the tier window.
	for i, s := range []struct {
		amount string
		want   int64
	}{{"60.25", 60}, {"60.25", 40}} {
		r := c.must(201, "POST", p+"/members/7590-VHVEG/events", "bill-"+string(rune('a'+i)),
			map[string]any{"type": "bill_paid", "amount": s.amount})
		if jnum(t, r, "data.points") != s.want {
			t.Fatalf("bill %d: %s, want %d points", i, r.raw, s.want)
		}
	}
	tier := c.must(200, "GET", p+"/members/7590-VHVEG/tier", "", nil)
	if tier.body["tier"] != "gold" || tier.body["basis"] != "spend" ||
		tier.body["spend"] != "120.5" || jnum(t, tier, "qualification") != 100 {
		t.Fatalf("tier: %s", tier.raw)
	}
}
