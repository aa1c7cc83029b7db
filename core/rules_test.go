package core

import (
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestTenureMonths(t *testing.T) {
	loc, _ := time.LoadLocation("America/Santiago")
	cases := []struct {
		enrolled, at time.Time
		want         int
	}{
		{time.Date(2024, 1, 31, 10, 0, 0, 0, loc), time.Date(2024, 2, 29, 10, 0, 0, 0, loc), 0},
		{time.Date(2024, 1, 15, 10, 0, 0, 0, loc), time.Date(2024, 2, 15, 0, 0, 0, 0, loc), 1},
		{time.Date(2024, 1, 15, 10, 0, 0, 0, loc), time.Date(2026, 1, 14, 0, 0, 0, 0, loc), 23},
		{time.Date(2024, 1, 15, 10, 0, 0, 0, loc), time.Date(2023, 1, 14, 0, 0, 0, 0, loc), 0},
	}
	for i, c := range cases {
		if got := TenureMonths(c.enrolled, c.at, loc); got != c.want {
			t.Errorf("case %d: %d months, want %d", i, got, c.want)
		}
	}
}

func TestEvaluateAmountCentsWithoutFloat(t *testing.T) {
	r, err := CompileRule(Rule{Code: "big", EventType: "bill_paid", Rounding: RoundDown,
		Condition: `event.amount_cents >= 2000000`,
		Formula:   Formula{Kind: FormulaFixed, Points: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for amount, want := range map[string]Points{"20000": 1, "19999.999999": 0, "20000.01": 1} {
		a, _ := ParseAmount("amount", amount)
		e, err := Evaluate([]*CompiledRule{r}, EventFacts{Type: "bill_paid", Amount: a,
			AmountText: amount, OccurredAt: time.Unix(0, 0)}, MemberFacts{}, time.UTC, nil)
		if err != nil || e.Points != want {
			t.Errorf("%s: %d points (%v), want %d", amount, e.Points, err, want)
		}
	}
}

// BenchmarkEvaluate50Rules evaluates one event against 50 rules in force,
// their CEL programs compiled once, as the ledger's cache keeps them.
func BenchmarkEvaluate50Rules(b *testing.B) {
	var rules []*CompiledRule
	for i := 0; i < 50; i++ {
		r := Rule{Code: fmt.Sprintf("r%02d", i), EventType: "bill_paid", Rounding: RoundHalfUp,
			Priority: i % 7,
			Condition: fmt.Sprintf(`event.amount_cents >= %d && member.plan != "prepaid_%d" `+
				`&& (member.contract == "two_year" || "vip" in member.segments)`, i*1000, i),
			Formula: Formula{Kind: FormulaPerUnit, Rate: "0.01"}}
		switch i % 4 {
		case 1:
			r.Formula = Formula{Kind: FormulaFixed, Points: 10}
		case 2:
			r.Formula = Formula{Kind: FormulaTiered, Bands: []Band{{From: "0", Rate: "0.01"},
				{From: "20000", Rate: "0.02"}}}
		case 3:
			r.Formula = Formula{Kind: FormulaMultiplier, Factor: "1.1"}
		}
		c, err := CompileRule(r)
		if err != nil {
			b.Fatal(err)
		}
		rules = append(rules, c)
	}
	amount := big.NewRat(2599050, 100)
	ev := EventFacts{Type: "bill_paid", Amount: amount, AmountText: "25990.50",
		OccurredAt: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
	mf := MemberFacts{Attributes: MemberAttributes{Plan: "fiber", Contract: "two_year",
		Segments: []string{"vip", "family"}}, TenureMonths: 14}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		e, err := Evaluate(rules, ev, mf, time.UTC, nil)
		if err != nil || e.Points == 0 {
			b.Fatalf("%+v %v", e, err)
		}
	}
}

func TestEvaluatePerYearCapUsesLocalYear(t *testing.T) {
	r, err := CompileRule(Rule{Code: "y", EventType: "bill_paid", Rounding: RoundDown,
		Formula: Formula{Kind: FormulaPerUnit, Rate: "1"}, Caps: Caps{PerYear: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]Points{"2026": 900, "2027": 0}
	usage := func(_ *CompiledRule, _, month string) (Usage, error) {
		return Usage{Year: used[YearOf(month)]}, nil
	}
	a, _ := ParseAmount("amount", "500")
	for at, want := range map[string]Points{"2026-12-31T23:30:00-03:00": 100,
		"2027-01-01T00:30:00-03:00": 500} {
		when, _ := time.Parse(time.RFC3339, at)
		e, err := Evaluate([]*CompiledRule{r}, EventFacts{Type: "bill_paid", Amount: a,
			AmountText: "500", OccurredAt: when}, MemberFacts{}, santiago, usage)
		if err != nil || e.Points != want {
			t.Errorf("%s: %d points (%v), want %d", at, e.Points, err, want)
		}
	}
	if _, err := CompileRule(Rule{Code: "y", EventType: "bill_paid", Rounding: RoundDown,
		Formula: Formula{Kind: FormulaPerUnit, Rate: "1"}, Caps: Caps{PerYear: -1}}); err == nil ||
		!strings.Contains(err.Error(), "caps.per_year") {
		t.Errorf("negative per_year: %v, want an error on caps.per_year", err)
	}
}

func TestTiersReachedBySpend(t *testing.T) {
	tiers := Tiers{WindowDays: 365, Basis: TierBasisSpend, Levels: []TierLevel{
		{Code: "blue", MinSpend: "0", Multiplier: "1"},
		{Code: "gold", MinSpend: "50000.50", Multiplier: "2"}}}
	if err := tiers.Validate(); err != nil {
		t.Fatal(err)
	}
	for spend, want := range map[string]string{"0": "blue", "50000.49": "blue",
		"50000.5": "gold", "99999999": "gold"} {
		s, _ := ParseAmount("spend", spend)
		if lvl := tiers.Reached(1e9, s); lvl == nil || lvl.Code != want {
			t.Errorf("spend %s: %+v, want %s", spend, lvl, want)
		}
	}
	if got := FormatDecimal(big.NewRat(100001, 2)); got != "50000.5" {
		t.Errorf("FormatDecimal: %q", got)
	}
}
