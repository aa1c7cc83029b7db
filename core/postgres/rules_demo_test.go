package postgres

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// demoRules is the shape of contracts/examples/telco-rules.json.
type demoRules struct {
	Tiers core.Tiers  `json:"tiers"`
	Rules []core.Rule `json:"rules"`
}

// TestDemoRulesFile loads the demo's rules as the demo would and checks
// what a two-year, automatically paying subscriber earns.
func TestDemoRulesFile(t *testing.T) {
	raw, err := os.ReadFile("../../contracts/examples/telco-rules.json")
	if err != nil {
		t.Fatal(err)
	}
	var d demoRules
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, core.Program{Currency: "USD", TimeZone: "America/Santiago"})
	f.setNow(time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC))
	f.ok(core.KindTiersSet, "", d.Tiers)
	for _, r := range d.Rules {
		f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: r, Mode: "create"})
	}
	f.ok(core.KindEnroll, "7590-VHVEG", core.Enroll{Attributes: &core.MemberAttributes{
		Contract: "two_year", PaymentMethod: "credit_card_auto", Plan: "dsl"}})
	f.ok(core.KindEnroll, "5575-GNVDE", core.Enroll{Attributes: &core.MemberAttributes{
		Contract: "one_year", PaymentMethod: "mailed_check", Plan: "dsl"}})

	santiago, _ := time.LoadLocation("America/Santiago")
	day := func(d int) time.Time { return time.Date(2026, 3, d, 12, 0, 0, 0, santiago) }
	for i, s := range []struct {
		ref, typ, amount string
		at               time.Time
		want             core.Points
		ver              string
	}{
		// 29 base and 10 for paying automatically; the contract adds half of
		// those 39, rounded down: 19.
		{"7590-VHVEG", "bill_paid", "29.85", day(5), 58, "rule:two-year-contract@v1+" +
			"rule:automatic-payment@v1+rule:bill-base@v1"},
		// The automatic-payment bonus is spent for March.
		{"7590-VHVEG", "bill_paid", "29.85", day(20), 43, "rule:two-year-contract@v1+" +
			"rule:bill-base@v1"},
		{"5575-GNVDE", "bill_paid", "56.95", day(5), 56, "rule:bill-base@v1"},
		// 2 per dollar and the top-up bonus; four bonuses fill the month's 200.
		{"5575-GNVDE", "top_up", "25.00", day(6), 100, "rule:top-up-bonus@v1+rule:top-up-base@v1"},
		{"5575-GNVDE", "top_up", "19.99", day(6), 40, "rule:top-up-base@v1"},
		{"5575-GNVDE", "top_up", "20", day(7), 90, ""},
		{"5575-GNVDE", "top_up", "20", day(8), 90, ""},
		{"5575-GNVDE", "top_up", "20", day(9), 90, ""},
		{"5575-GNVDE", "top_up", "20", day(10), 40, "rule:top-up-base@v1"},
	} {
		got, ver := f.earn(s.ref, s.typ, s.amount, s.at)
		if got != s.want || (s.ver != "" && ver != s.ver) {
			t.Fatalf("step %d: %d by %q, want %d by %q", i, got, ver, s.want, s.ver)
		}
	}
	f.wantBalance("7590-VHVEG", 101, 0, 0)
	f.wantBalance("5575-GNVDE", 56+100+40+90*3+40, 0, 0)
	f.check()
}
