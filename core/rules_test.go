package core

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/cel-go/interpreter"
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
// arranged once in a RuleSet as the ledger's cache keeps them:
//
//   - same_type: all 50 rules are for the event's type, each with a
//     condition of three tests, so every one is evaluated;
//   - mixed: a program's 50 rules over four event types and "*", of every
//     formula kind, some with caps, with conditions of the usual kinds; a
//     bill_paid event meets the 30 that can apply to it;
//   - unarranged: the same_type rules passed to Evaluate as a slice, which
//     sorts them for each call.
//
// Besides ns/op it reports cpu-ns/op, the CPU time of the whole process
// (garbage collection included) per evaluation, which a machine shared
// with other work inflates far less than the wall clock.
func BenchmarkEvaluate50Rules(b *testing.B) {
	amount := big.NewRat(2599050, 100)
	ev := EventFacts{Type: "bill_paid", Amount: amount, AmountText: "25990.50",
		Channel: "app", OccurredAt: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
	mf := MemberFacts{Attributes: MemberAttributes{Plan: "fiber", Contract: "two_year",
		PaymentMethod: "auto_debit", Segments: []string{"vip", "family"}},
		Channel: "retail", Tier: "gold", TenureMonths: 14, TierMultiplier: big.NewRat(3, 2)}
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		b.Fatal(err)
	}
	usage := func(*CompiledRule, string, string) (Usage, error) {
		return Usage{Day: 40, Month: 900, Year: 5000, Budget: 1_000_000}, nil
	}
	run := func(b *testing.B, rules []*CompiledRule, arranged bool) {
		set := NewRuleSet(rules)
		b.ReportAllocs()
		b.ResetTimer()
		cpu := processCPU()
		var fired []Fired
		for b.Loop() {
			var e Evaluation
			var err error
			if arranged {
				// As the ledger's batches evaluate: one list of fired rules
				// serves every event in turn.
				e, err = set.EvaluateInto(fired, ev, mf, santiago, usage)
				fired = e.Fired
			} else {
				e, err = Evaluate(rules, ev, mf, santiago, usage)
			}
			if err != nil || e.Points == 0 {
				b.Fatalf("%+v %v", e, err)
			}
		}
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	}
	same, mixed := sameTypeRules(b), mixedRules(b)
	b.Run("same_type", func(b *testing.B) { run(b, same, true) })
	b.Run("mixed", func(b *testing.B) { run(b, mixed, true) })
	b.Run("unarranged", func(b *testing.B) { run(b, same, false) })
}

// EvaluateInto reusing one list of fired rules gives each event what
// Evaluate gives it, whatever the events before it left in the list: fewer
// rules firing, caps that cut, a tier entry, an exclusive rule.
func TestEvaluateIntoReusesNothingStale(t *testing.T) {
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	usage := func(r *CompiledRule, _, _ string) (Usage, error) {
		// Every third rule has used most of its day.
		if r.Code[len(r.Code)-1]%3 == 0 {
			return Usage{Day: 95, Month: 95, Year: 95, Budget: 95}, nil
		}
		return Usage{}, nil
	}
	rules := mixedRules(t)
	for i := range rules {
		if i%4 == 0 {
			rules[i].Caps.PerDay = 100
		}
	}
	excl := mustCompile(t, Rule{Code: "zz-exclusive", EventType: "purchase", Priority: 5,
		Exclusive: true, Rounding: RoundDown, Condition: `event.amount_cents >= 500000`,
		Formula: Formula{Kind: FormulaFixed, Points: 7}})
	set := NewRuleSet(append(slices.Clone(rules), excl))
	types := []string{"bill_paid", "top_up", "purchase", "roaming", "bill_paid"}
	var fired []Fired
	for i := 0; i < 400; i++ {
		ev := EventFacts{Type: types[i%len(types)], Amount: big.NewRat(int64(i*i*37%900000), 100),
			Channel: []string{"app", "shop", "web"}[i%3], OccurredAt: time.Date(2026, 3, 1+i%28,
				12, 0, 0, 0, time.UTC)}
		ev.AmountText = ev.Amount.FloatString(2)
		mf := MemberFacts{Attributes: MemberAttributes{Plan: []string{"fiber", "prepaid"}[i%2],
			Segments: [][]string{{"vip", "family"}, nil, {"churn_risk"}}[i%3]},
			TenureMonths: i % 30}
		if i%5 == 0 {
			mf.Tier, mf.TierMultiplier = "gold", big.NewRat(3, 2)
		}
		want, wantErr := set.Evaluate(ev, mf, santiago, usage)
		got, gotErr := set.EvaluateInto(fired, ev, mf, santiago, usage)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("event %d: errors %v and %v", i, wantErr, gotErr)
		}
		if wantErr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("event %d: reused list gave\n%+v\nwant\n%+v", i, got, want)
		}
		fired = got.Fired
	}
	if cap(fired) == 0 {
		t.Fatal("no rule fired in 400 events: the test checks nothing")
	}
}

// sameTypeRules are 50 bill_paid rules of the four formula kinds.
func sameTypeRules(tb testing.TB) []*CompiledRule {
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
		rules = append(rules, mustCompile(tb, r))
	}
	return rules
}

// mixedRules are 50 rules as a program might have them: 20 for bill_paid,
// 12 for top_up, 8 for purchase, 10 for any event.
func mixedRules(tb testing.TB) []*CompiledRule {
	conds := []string{
		``,
		`member.plan == "fiber"`,
		`event.channel in ["app", "web"]`,
		`event.amount_cents >= 1000000`,
		`"vip" in member.segments && member.tenure_months >= 12`,
		`member.tier == "gold" || member.tier == "platinum"`,
		`member.payment_method == "auto_debit" && event.amount_cents > 0`,
		`event.partner == "copec"`,
		`!("churn_risk" in member.segments) && member.contract != "prepaid"`,
		`event.amount.startsWith("2") && size(member.segments) > 1`,
	}
	types := func(i int) string {
		switch {
		case i < 20:
			return "bill_paid"
		case i < 32:
			return "top_up"
		case i < 40:
			return "purchase"
		}
		return "*"
	}
	var rules []*CompiledRule
	for i := 0; i < 50; i++ {
		r := Rule{Code: fmt.Sprintf("m%02d", i), EventType: types(i), Rounding: RoundDown,
			Priority: (i * 7) % 11, Condition: conds[i%len(conds)],
			Formula: Formula{Kind: FormulaPerUnit, Rate: fmt.Sprintf("0.0%d", 1+i%9)}}
		switch i % 5 {
		case 1:
			r.Formula = Formula{Kind: FormulaFixed, Points: Points(5 + i)}
		case 2:
			r.Formula = Formula{Kind: FormulaTiered, Bands: []Band{
				{From: "0", Rate: "0.01"}, {From: "10000", Rate: "0.015"},
				{From: "50000.50", Rate: "0.025"}}}
		case 3:
			r.Formula = Formula{Kind: FormulaMultiplier, Factor: "1.25"}
		}
		switch i % 6 {
		case 1:
			r.Caps = Caps{PerEvent: 500}
		case 4:
			r.Caps = Caps{PerDay: 200, PerMonth: 3000}
		}
		rules = append(rules, mustCompile(tb, r))
	}
	return rules
}

func mustCompile(tb testing.TB, r Rule) *CompiledRule {
	tb.Helper()
	c, err := CompileRule(r)
	if err != nil {
		tb.Fatalf("%s: %v", r.Code, err)
	}
	return c
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

// TestNativeConditionsAgreeWithCEL checks that conditions compiled to Go
// answer as the CEL program does, over facts that make each test go both
// ways, and that the usual shapes do take the Go path.
func TestNativeConditionsAgreeWithCEL(t *testing.T) {
	native := []string{
		`member.plan == "fiber"`,
		`member.plan != "fiber" || member.contract == "two_year"`,
		`event.channel in ["app", "web"]`,
		`!(event.channel in ["app", "web"])`,
		`"vip" in member.segments && member.tenure_months >= 12`,
		`event.amount_cents >= 1000000 && event.amount_cents < 5000000`,
		`event.amount_cents > 0 && event.amount_cents <= 100`,
		`member.tier == "gold" || member.tier == "platinum"`,
		`event.partner.startsWith("co") || event.partner.endsWith("ec")`,
		`member.payment_method.contains("debit")`,
		`size(member.segments) > 1 && member.segments.size() < 3`,
		`event.amount > "2" && event.amount <= "3"`,
		`(member.channel == "app") == (event.channel == "app")`,
		`(member.channel == "app") != true`,
		`event.type == "bill_paid" && member.contract != ""`,
		`true && !false`,
	}
	viaCEL := []string{
		`event.amount_cents / 100 > 10`,         // arithmetic can fail
		`member.segments[0] == "vip"`,           // indexing can fail
		`dyn(member.tenure_months) > 1.5`,       // int against double
		`int(event.amount) > 3`,                 // conversion can fail
		`member.segments.exists(s, s == "x")`,   // comprehension
		`event.channel == "app" ? true : false`, // conditional
	}
	facts := []conditionFacts{
		{},
		{ev: EventFacts{Type: "bill_paid", Amount: big.NewRat(2599050, 100),
			AmountText: "25990.50", Channel: "app", Partner: "copec"},
			mf: MemberFacts{Attributes: MemberAttributes{Plan: "fiber", Contract: "two_year",
				PaymentMethod: "auto_debit", Segments: []string{"vip", "family"}},
				Channel: "app", Tier: "gold", TenureMonths: 14}},
		{ev: EventFacts{Type: "top_up", Amount: big.NewRat(1, 100), AmountText: "0.01",
			Channel: "web", Partner: "shell"},
			mf: MemberFacts{Attributes: MemberAttributes{Plan: "prepaid", PaymentMethod: "cash",
				Segments: []string{"x", "vip", "y"}}, Channel: "retail", Tier: "platinum",
				TenureMonths: 12}},
		{ev: EventFacts{Type: "bill_paid", Amount: big.NewRat(1000000, 100),
			AmountText: "10000", Channel: "retail"},
			mf: MemberFacts{Attributes: MemberAttributes{Segments: []string{"vip"}},
				TenureMonths: 11}},
		{ev: EventFacts{Type: "bill_paid", Amount: big.NewRat(-5, 1), AmountText: "-5"}},
		{ev: EventFacts{Type: "top_up", Amount: big.NewRat(3, 1), AmountText: "3",
			Channel: "web"}, mf: MemberFacts{Attributes: MemberAttributes{Plan: "fiber",
			Contract: "one_year"}, Channel: "app"}},
	}
	check := func(src string, wantNative bool) {
		c, err := CompileRule(Rule{Code: "c", EventType: "*", Rounding: RoundDown,
			Condition: src, Formula: Formula{Kind: FormulaFixed, Points: 1}})
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if (c.native != nil) != wantNative {
			t.Errorf("%s: compiled to Go %v, want %v", src, c.native != nil, wantNative)
			return
		}
		seen := map[bool]bool{}
		for i := range facts {
			f := facts[i]
			frame, err := interpreter.NewExecutionFrame(&f)
			if err != nil {
				t.Fatal(err)
			}
			want := c.prg != nil && func() bool {
				v, _, err := c.prg.Eval(frame)
				b, ok := v.Value().(bool)
				return err == nil && ok && b
			}()
			frame.Close()
			f2 := facts[i]
			if got := c.holds(&f2, nil); c.native != nil && got != want {
				t.Errorf("%s, facts %d: Go says %v, CEL %v", src, i, got, want)
			}
			seen[want] = true
		}
		if wantNative && src != `true && !false` && len(seen) != 2 {
			t.Errorf("%s: the facts only make it %v; the test shows nothing", src, seen)
		}
	}
	for _, src := range native {
		check(src, true)
	}
	for _, src := range viaCEL {
		check(src, false)
	}
}

// TestIntegerFormulasAgreeWithRationals checks the integer path of the
// formulas against the exact rational one over many amounts, rates and
// roundings.
func TestIntegerFormulasAgreeWithRationals(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	modes := []Rounding{RoundDown, RoundUp, RoundHalfUp, RoundHalfEven}
	decimal := func(maxInt int64) string {
		return fmt.Sprintf("%d.%06d", rng.Int64N(maxInt), rng.Int64N(1_000_000))
	}
	for i := 0; i < 20_000; i++ {
		mode := modes[i%len(modes)]
		amountText := decimal(10_000_000)
		if i%10 == 0 {
			amountText = fmt.Sprintf("%d.5", rng.Int64N(1000)) // halves
		}
		amount, err := ParseAmount("amount", amountText)
		if err != nil {
			t.Fatal(err)
		}
		rate := decimal(100)
		if i%7 == 0 {
			rate = "0.01"
		}
		r := Rule{Code: "r", EventType: "*", Rounding: mode,
			Formula: Formula{Kind: FormulaPerUnit, Rate: rate}}
		switch i % 3 {
		case 1:
			r.Formula = Formula{Kind: FormulaTiered, Bands: []Band{{From: "0", Rate: "0.01"},
				{From: decimal(100_000), Rate: rate}}}
		case 2:
			r.Formula = Formula{Kind: FormulaMultiplier, Factor: fmt.Sprintf("1.%06d",
				rng.Int64N(1_000_000))}
		}
		c := mustCompile(t, r)
		if !c.micro.ok {
			t.Fatalf("%+v: no integer form", r.Formula)
		}
		micros, exact := microAmount(amount)
		base := Points(rng.Int64N(1_000_000))
		fast, ok := c.micro.compute(c.Formula, mode, micros, base)
		slow, err := c.compute(amount, 0, false, base)
		if !exact || !ok || err != nil || fast != slow {
			t.Fatalf("%s at %+v %s (base %d): integers %d (%v), rationals %d (%v)",
				amountText, r.Formula, mode, base, fast, ok, slow, err)
		}
	}
	// Beyond what int64 holds, the exact path answers (and refuses).
	huge, _ := ParseAmount("amount", "999999999999999.999999")
	c := mustCompile(t, Rule{Code: "r", EventType: "*", Rounding: RoundDown,
		Formula: Formula{Kind: FormulaPerUnit, Rate: "1000000"}})
	e, err := Evaluate([]*CompiledRule{c}, EventFacts{Type: "x", Amount: huge,
		AmountText: "999999999999999.999999"}, MemberFacts{}, time.UTC, nil)
	if err == nil {
		t.Fatalf("a huge amount gave %+v, want an error", e)
	}
}

// TestRuleSetOrdersAndIndexes checks which rules a RuleSet gives an event
// type, in what order.
func TestRuleSetOrdersAndIndexes(t *testing.T) {
	rule := func(code, typ string, prio int) *CompiledRule {
		return mustCompile(t, Rule{Code: code, EventType: typ, Priority: prio,
			Rounding: RoundDown, Formula: Formula{Kind: FormulaFixed, Points: 1}})
	}
	set := NewRuleSet([]*CompiledRule{rule("b", "bill_paid", 1), rule("any", "*", 5),
		rule("a", "bill_paid", 1), rule("t", "top_up", 9), rule("z", "*", -3)})
	codes := func(rs []*CompiledRule) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Code)
		}
		return strings.Join(out, ",")
	}
	for typ, want := range map[string]string{"bill_paid": "any,a,b,z", "top_up": "t,any,z",
		"other": "any,z"} {
		if got := codes(set.For(typ)); got != want {
			t.Errorf("%s: %s, want %s", typ, got, want)
		}
	}
	if set.Len() != 5 {
		t.Errorf("Len %d, want 5", set.Len())
	}
}

// processCPU is the CPU time this process has used, user and system, in
// nanoseconds: on a machine shared with other work it tells what an
// operation costs better than the wall clock does.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// A condition cannot cost the ledger seconds per event: one whose least
// cost is over the limit is refused when saved, and one that only turns out
// costly on the event at hand stops at the limit and does not hold.
func TestConditionCostIsBounded(t *testing.T) {
	rule := func(cond string) Rule {
		return Rule{Code: "c", EventType: "*", Rounding: RoundDown, Condition: cond,
			Formula: Formula{Kind: FormulaFixed, Points: 1}}
	}
	_, err := CompileRule(rule(`[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b,
		[0,1,2,3,4,5,6,7,8,9].all(c, [0,1,2,3,4,5,6,7,8,9].all(d, [0,1,2,3,4,5,6,7,8,9].all(e,
		true)))))`))
	if e, ok := AsError(err); !ok || e.Kind != Invalid || e.Field != "condition" ||
		!strings.Contains(e.Message, "limit") {
		t.Fatalf("100,000-step condition: %v, want refused naming the limit", err)
	}

	// The segments are the member's: only the event shows how many.
	c, err := CompileRule(rule(`member.segments.all(a, member.segments.all(b, a != "" && b != ""))`))
	if err != nil {
		t.Fatalf("condition over the member's segments: %v", err)
	}
	holds := func(f conditionFacts) bool {
		frame, err := interpreter.NewExecutionFrame(&f)
		if err != nil {
			t.Fatal(err)
		}
		defer frame.Close()
		return c.holds(&f, frame)
	}
	few := conditionFacts{mf: MemberFacts{Attributes: MemberAttributes{
		Segments: []string{"vip", "family"}}}}
	if !holds(few) {
		t.Fatal("two segments: the condition should hold")
	}
	many := make([]string, 1000)
	for i := range many {
		many[i] = "s"
	}
	lots := conditionFacts{mf: MemberFacts{Attributes: MemberAttributes{Segments: many}}}
	start := time.Now()
	if holds(lots) {
		t.Error("1,000 segments (a million steps): the condition held past the cost limit")
	}
	t.Logf("stopped after %s", time.Since(start))
}

// Windows writes the date by hand; it must say what time.Format says, in
// any zone and year.
func TestWindowsMatchesFormat(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("", -3*3600), time.FixedZone("", 14*3600)}
	if z, err := time.LoadLocation("America/Santiago"); err == nil {
		zones = append(zones, z)
	}
	times := []time.Time{time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2027, 1, 1, 2, 0, 0, 0, time.UTC), time.Date(5, 3, 9, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC), {}}
	for i := 0; i < 500; i++ {
		times = append(times, time.Unix(int64(i)*7_919_993+int64(i*i)*86_399, 0))
	}
	for _, at := range times {
		for _, z := range zones {
			day, month := Windows(at, z)
			if want := at.In(z).Format("2006-01-02"); day != want {
				t.Errorf("Windows(%v, %v) day = %q, want %q", at, z, day, want)
			}
			if want := at.In(z).Format("2006-01"); month != want {
				t.Errorf("Windows(%v, %v) month = %q, want %q", at, z, month, want)
			}
		}
	}
}

// The tier multiplier's reference names the tier and the multiplier with
// two decimals, as big.Rat's FloatString(2) writes it.
func TestAppendTwoDecimals(t *testing.T) {
	for _, r := range []*big.Rat{big.NewRat(3, 2), big.NewRat(2, 1), big.NewRat(1005, 1000),
		big.NewRat(1, 3), big.NewRat(12345678, 1000), big.NewRat(-3, 2),
		new(big.Rat).SetFrac(big.NewInt(1), new(big.Int).Lsh(big.NewInt(1), 80))} {
		if got, want := string(appendTwoDecimals([]byte("x"), r)), "x"+r.FloatString(2); got != want {
			t.Errorf("appendTwoDecimals(%v) = %q, want %q", r, got, want)
		}
	}
}
