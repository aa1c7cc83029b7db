package postgres

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// putRule saves a rule version and returns it as stored.
func (f *fixture) putRule(r core.Rule) {
	f.t.Helper()
	f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: r})
}

// earn posts an accrual that occurred at at and returns its points and the
// rule_version its posting records ("" when no posting was made).
func (f *fixture) earn(ref, typ, amount string, at time.Time) (core.Points, string) {
	f.t.Helper()
	c := f.command(core.KindAccrue, ref, f.txn(), core.Accrue{EventType: typ, Amount: amount})
	c.OccurredAt = at
	c.Seal()
	r := f.apply(c)
	if r.Status != bus.StatusOK {
		f.t.Fatalf("accrue %s %s: %+v", typ, amount, r.Error)
	}
	var o core.Outcome
	if err := json.Unmarshal(r.Data, &o); err != nil {
		f.t.Fatal(err)
	}
	if len(o.PostingIDs) == 0 {
		return o.Points, ""
	}
	var version string
	var pts int64
	err := f.l.pool.QueryRow(context.Background(), `SELECT rule_version, points + pending_delta
		FROM postings WHERE id = $1`, o.PostingIDs[0]).Scan(&version, &pts)
	if err != nil {
		f.t.Fatal(err)
	}
	if core.Points(pts) != o.Points {
		f.t.Fatalf("posting has %d points, outcome %d", pts, o.Points)
	}
	return o.Points, version
}

func perUnit(code, rate string, mode core.Rounding) core.Rule {
	return core.Rule{Code: code, EventType: "bill_paid", Rounding: mode,
		Formula: core.Formula{Kind: core.FormulaPerUnit, Rate: rate}}
}

func withPriority(r core.Rule, p int) core.Rule {
	r.Priority = p
	return r
}

var march10 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func TestRuleFormulas(t *testing.T) {
	cases := []struct {
		name   string
		rules  []core.Rule
		amount string
		want   core.Points
		ver    string
	}{
		{"per unit down", []core.Rule{perUnit("r", "0.01", core.RoundDown)}, "1050", 10,
			"rule:r@v1"},
		{"per unit up", []core.Rule{perUnit("r", "0.01", core.RoundUp)}, "1005", 11,
			"rule:r@v1"},
		{"per unit half up", []core.Rule{perUnit("r", "0.01", core.RoundHalfUp)}, "1050", 11,
			"rule:r@v1"},
		{"per unit half up below half", []core.Rule{perUnit("r", "0.01", core.RoundHalfUp)},
			"1049.99", 10, "rule:r@v1"},
		{"per unit half even to even", []core.Rule{perUnit("r", "0.01", core.RoundHalfEven)},
			"1050", 10, "rule:r@v1"},
		{"per unit half even up", []core.Rule{perUnit("r", "0.01", core.RoundHalfEven)},
			"1150", 12, "rule:r@v1"},
		{"fixed", []core.Rule{{Code: "f", EventType: "bill_paid",
			Formula: core.Formula{Kind: core.FormulaFixed, Points: 500}}}, "1", 500, "rule:f@v1"},
		{"multiplier of base", []core.Rule{
			withPriority(perUnit("base", "1", core.RoundDown), 1),
			{Code: "bonus", EventType: "bill_paid", Rounding: core.RoundHalfUp,
				Formula: core.Formula{Kind: core.FormulaMultiplier, Factor: "1.5"}}},
			"1001", 1001 + 501, "rule:base@v1+rule:bonus@v1"},
		{"tiered middle band", []core.Rule{{Code: "t", EventType: "bill_paid",
			Formula: core.Formula{Kind: core.FormulaTiered, Bands: []core.Band{
				{From: "0", Rate: "1"}, {From: "10000", Rate: "2"}, {From: "50000", Rate: "3"}}}}},
			"20000.50", 40001, "rule:t@v1"},
		{"tiered first band", []core.Rule{{Code: "t", EventType: "bill_paid",
			Formula: core.Formula{Kind: core.FormulaTiered, Bands: []core.Band{
				{From: "0", Rate: "1"}, {From: "10000", Rate: "2"}}}}},
			"9999.99", 9999, "rule:t@v1"},
		{"tiered below every band", []core.Rule{{Code: "t", EventType: "bill_paid",
			Formula: core.Formula{Kind: core.FormulaTiered, Bands: []core.Band{
				{From: "100", Rate: "1"}}}}}, "99", 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, core.Program{})
			f.enroll("m1")
			for _, r := range c.rules {
				f.putRule(r)
			}
			got, ver := f.earn("m1", "bill_paid", c.amount, march10)
			if got != c.want || ver != c.ver {
				t.Fatalf("got %d points by %q, want %d by %q", got, ver, c.want, c.ver)
			}
			f.wantBalance("m1", c.want, 0, 0)
			f.check()
		})
	}
}

func TestRulePriorityAndExclusive(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.ok(core.KindEnroll, "two", core.Enroll{Attributes: &core.MemberAttributes{
		Contract: "two_year", PaymentMethod: "credit_card_auto"}})
	f.ok(core.KindEnroll, "monthly", core.Enroll{Attributes: &core.MemberAttributes{
		Contract: "month_to_month"}})
	f.putRule(core.Rule{Code: "welcome", EventType: "bill_paid", Priority: 20,
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 7}})
	f.putRule(core.Rule{Code: "contract", EventType: "bill_paid", Priority: 10, Exclusive: true,
		Condition: `member.contract == "two_year" && member.payment_method.endsWith("_auto")`,
		Formula:   core.Formula{Kind: core.FormulaFixed, Points: 1000}})
	f.putRule(perUnit("base", "1", core.RoundDown))

	pts, ver := f.earn("two", "bill_paid", "250", march10)
	if pts != 1007 || ver != "rule:welcome@v1+rule:contract@v1" {
		t.Fatalf("two-year member: %d by %q, want 1007 by welcome+contract", pts, ver)
	}
	pts, ver = f.earn("monthly", "bill_paid", "250", march10)
	if pts != 257 || ver != "rule:welcome@v1+rule:base@v1" {
		t.Fatalf("monthly member: %d by %q, want 257 by welcome+base", pts, ver)
	}

	// Attributes change by command; the next event sees them.
	f.ok(core.KindMemberAttributes, "monthly", core.MemberAttributes{Contract: "two_year",
		PaymentMethod: "bank_auto"})
	pts, _ = f.earn("monthly", "bill_paid", "250", march10)
	if pts != 1007 {
		t.Fatalf("after the attribute change: %d, want 1007", pts)
	}
	f.wantBalance("two", 1007, 0, 0)
	f.wantBalance("monthly", 257+1007, 0, 0)
	f.check()
}

func TestRuleDailyCapInProgramTimeZone(t *testing.T) {
	f := newFixture(t, core.Program{TimeZone: "America/Santiago"})
	f.setNow(time.Date(2026, 3, 12, 12, 0, 0, 0, time.UTC))
	f.enroll("m1")
	r := perUnit("daily", "1", core.RoundDown)
	r.Caps = core.Caps{PerDay: 100}
	f.putRule(r)
	santiago, _ := time.LoadLocation("America/Santiago")
	at := func(d, h, m int) time.Time { return time.Date(2026, 3, d, h, m, 0, 0, santiago) }

	// 23:30 and 23:50 local on the 10th are already the 11th in UTC; 00:10
	// local on the 11th is the same UTC day as both. Only the local day counts.
	steps := []struct {
		at     time.Time
		amount string
		want   core.Points
	}{
		{at(10, 23, 30), "80", 80},
		{at(10, 23, 50), "50", 20},
		{at(10, 23, 55), "50", 0},
		{at(11, 0, 10), "50", 50},
		{at(11, 9, 0), "70", 50},
	}
	for i, s := range steps {
		got, _ := f.earn("m1", "bill_paid", s.amount, s.at)
		if got != s.want {
			t.Fatalf("step %d at %s: %d points, want %d", i, s.at, got, s.want)
		}
	}
	f.wantBalance("m1", 200, 0, 0)
	var day10, day11 int64
	err := f.l.pool.QueryRow(context.Background(), `SELECT
			(SELECT points FROM rule_counters WHERE win = 'd:2026-03-10' AND rule_code = 'daily'
				AND program_id = (SELECT id FROM programs WHERE code = $1)),
			(SELECT points FROM rule_counters WHERE win = 'd:2026-03-11' AND rule_code = 'daily'
				AND program_id = (SELECT id FROM programs WHERE code = $1))`, f.prog).
		Scan(&day10, &day11)
	if err != nil || day10 != 100 || day11 != 100 {
		t.Fatalf("counters: 10th %d, 11th %d (%v), want 100 and 100", day10, day11, err)
	}
	f.check()
}

func TestRuleMonthlyCapAndPerEvent(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.setNow(time.Date(2026, 5, 2, 12, 0, 0, 0, time.UTC))
	f.enroll("m1")
	r := perUnit("m", "1", core.RoundDown)
	r.Caps = core.Caps{PerEvent: 400, PerMonth: 1000}
	f.putRule(r)
	santiago, _ := time.LoadLocation("America/Santiago")
	for i, s := range []struct {
		at     time.Time
		amount string
		want   core.Points
	}{
		{time.Date(2026, 4, 3, 10, 0, 0, 0, santiago), "500", 400},
		{time.Date(2026, 4, 15, 10, 0, 0, 0, santiago), "400", 400},
		{time.Date(2026, 4, 30, 23, 30, 0, 0, santiago), "400", 200},
		{time.Date(2026, 5, 1, 0, 30, 0, 0, santiago), "300", 300},
	} {
		if got, _ := f.earn("m1", "bill_paid", s.amount, s.at); got != s.want {
			t.Fatalf("step %d: %d points, want %d", i, got, s.want)
		}
	}
	f.wantBalance("m1", 1300, 0, 0)
	f.check()
}

func TestRuleBudgetCap(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("a")
	f.enroll("b")
	f.putRule(core.Rule{Code: "promo", EventType: "top_up",
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 300},
		Caps:    core.Caps{Budget: 700}})
	for i, s := range []struct {
		ref  string
		want core.Points
	}{{"a", 300}, {"b", 300}, {"a", 100}, {"b", 0}} {
		got, ver := f.earn(s.ref, "top_up", "1000", march10)
		if got != s.want {
			t.Fatalf("step %d: %d points, want %d", i, got, s.want)
		}
		if s.want == 0 && ver != "" {
			t.Fatalf("step %d: a posting of 0 points was made (%q)", i, ver)
		}
	}
	f.wantBalance("a", 400, 0, 0)
	f.wantBalance("b", 300, 0, 0)
	f.check()
}

func TestRuleVersionsFollowOccurredAt(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	t0 := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC) // the fixture's clock
	f.putRule(perUnit("r", "1", core.RoundDown))

	// An update at t0 makes version 2, in force from t0.
	f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: perUnit("r", "2", core.RoundDown),
		Mode: "update"})
	f.setNow(t0.Add(2 * time.Hour))
	f.ok(core.KindRuleRetire, "", core.RuleRetire{Code: "r"})

	for i, s := range []struct {
		at   time.Time
		want core.Points
		ver  string
	}{
		{t0.Add(-24 * time.Hour), 100, "rule:r@v1"}, // back-dated: the old version
		{t0.Add(-time.Second), 100, "rule:r@v1"},
		{t0, 200, "rule:r@v2"},
		{t0.Add(time.Hour), 200, "rule:r@v2"},
		{t0.Add(2 * time.Hour), 0, ""}, // retired: no rule, and no flat-rate fallback
	} {
		got, ver := f.earn("m1", "bill_paid", "100", s.at)
		if got != s.want || ver != s.ver {
			t.Fatalf("step %d: %d by %q, want %d by %q", i, got, ver, s.want, s.ver)
		}
	}
	versions, err := f.l.RuleVersions(context.Background(), f.prog, "r")
	if err != nil || len(versions) != 2 || versions[0].Until == nil ||
		!versions[0].Until.Equal(t0) || !versions[1].Retired {
		t.Fatalf("versions: %+v %v", versions, err)
	}
	// Creating an existing code, or updating an unknown one, is refused.
	f.refused(core.KindRuleUpsert, "", RuleUpsert{Rule: perUnit("r", "1", core.RoundDown),
		Mode: "create"}, core.Conflict)
	f.refused(core.KindRuleUpsert, "", RuleUpsert{Rule: perUnit("x", "1", core.RoundDown),
		Mode: "update"}, core.NotFound)
	f.refused(core.KindRuleRetire, "", core.RuleRetire{Code: "r"}, core.Conflict)
	f.wantBalance("m1", 600, 0, 0)
	f.check()
}

func TestRuleInvalidNamesTheField(t *testing.T) {
	f := newFixture(t, core.Program{})
	bad := func(mod func(r *core.Rule)) core.Rule {
		r := perUnit("r", "1", core.RoundDown)
		mod(&r)
		return r
	}
	cases := []struct {
		rule  core.Rule
		field string
		msg   string
	}{
		{bad(func(r *core.Rule) { r.Condition = `event.amount_cents > 0 && member.plam == "x"` }),
			"condition", "line 1 column 27: \"member.plam\" is not a name a condition " +
				"knows; a condition may use event.type, event.amount, event.amount_cents"},
		{bad(func(r *core.Rule) { r.Condition = "event.type == \"x\" ||\n event.amount_cent >= 1" }),
			"condition", "line 2 column 2: \"event.amount_cent\" is not a name a condition " +
				"knows"},
		{bad(func(r *core.Rule) { r.Condition = `event.amount > 10000` }),
			"condition", "compare amounts with event.amount_cents"},
		{bad(func(r *core.Rule) { r.Condition = `event.amount_cents + 1` }),
			"condition", "must be true or false, not int"},
		{bad(func(r *core.Rule) { r.Condition = "event.type ==\n  )" }),
			"condition", "line 2 column 3: Syntax error"},
		{bad(func(r *core.Rule) { r.Formula.Rate = "1,5" }), "formula.rate", "decimal"},
		{bad(func(r *core.Rule) { r.Formula.Kind = "percent" }), "formula.kind", "per_unit"},
		{bad(func(r *core.Rule) { r.Rounding = "nearest" }), "rounding", "half_up"},
		{bad(func(r *core.Rule) { r.Caps.PerDay = -1 }), "caps.per_day", "between"},
		{bad(func(r *core.Rule) {
			r.Formula = core.Formula{Kind: core.FormulaTiered, Bands: []core.Band{
				{From: "100", Rate: "1"}, {From: "50", Rate: "2"}}}
		}), "formula.bands[1].from", "above"},
		{bad(func(r *core.Rule) { r.Code = "no spaces" }), "code", "letters"},
	}
	for i, c := range cases {
		r := f.do(core.KindRuleUpsert, "", f.txn(), RuleUpsert{Rule: c.rule})
		if r.Status != bus.StatusRejected || r.Error.Kind != string(core.Invalid) ||
			r.Error.Field != c.field || !strings.Contains(r.Error.Message, c.msg) {
			t.Fatalf("case %d: %+v, want invalid %s containing %q", i, r.Error, c.field, c.msg)
		}
	}
	// Nothing was stored: the program still earns at its flat rate.
	f.enroll("m1")
	if pts, ver := f.earn("m1", "bill_paid", "10", march10); pts != 10 ||
		ver != "program-rate:1.000000:down" {
		t.Fatalf("fallback: %d by %q", pts, ver)
	}
}

func TestSimulateAgreesWithPosting(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.ok(core.KindEnroll, "m1", core.Enroll{Attributes: &core.MemberAttributes{
		Plan: "fiber", Segments: []string{"vip"}}})
	f.ok(core.KindTiersSet, "", core.Tiers{WindowDays: 365, Levels: []core.TierLevel{
		{Code: "blue", MinPoints: 0, Multiplier: "1"},
		{Code: "gold", MinPoints: 1000, Multiplier: "1.25"}}})
	base := perUnit("base", "1", core.RoundDown)
	base.Priority = 10
	base.Caps = core.Caps{PerDay: 1500}
	f.putRule(base)
	f.putRule(core.Rule{Code: "vip", EventType: "bill_paid", Condition: `"vip" in member.segments`,
		Formula: core.Formula{Kind: core.FormulaMultiplier, Factor: "2"}})
	ctx := context.Background()
	for i, amount := range []string{"900", "500", "300"} {
		sim, err := f.l.Simulate(ctx, f.prog, SimulateEvent{Member: "m1", Type: "bill_paid",
			Amount: amount, OccurredAt: &march10})
		if err != nil {
			t.Fatal(err)
		}
		pts, ver := f.earn("m1", "bill_paid", amount, march10)
		if sim.Points != pts || sim.RuleVersion != ver {
			t.Fatalf("event %d: simulated %d by %q, posted %d by %q", i, sim.Points,
				sim.RuleVersion, pts, ver)
		}
	}
	// 900: 900 base + 900 vip = 1800, blue. 500: 500 + 500 = 1000, gold now
	// (1800 in the window) so +250. 300: the daily cap leaves 100 of base,
	// +100 vip, +50 gold.
	f.wantBalance("m1", 1800+1250+250, 0, 0)
	sim, err := f.l.Simulate(ctx, f.prog, SimulateEvent{Member: "m1", Type: "bill_paid",
		Amount: "10", OccurredAt: &march10})
	if err != nil || sim.Points != 0 || sim.Fired[0].CappedBy != "per_day" {
		t.Fatalf("simulate after the cap: %+v %v", sim, err)
	}
	// Simulation posts nothing.
	f.wantBalance("m1", 3300, 0, 0)
	f.check()
}

func TestTierQualification(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	f.ok(core.KindTiersSet, "", core.Tiers{WindowDays: 30, Levels: []core.TierLevel{
		{Code: "blue", MinPoints: 0, Multiplier: "1"},
		{Code: "gold", MinPoints: 1000, Multiplier: "1.5"}}})
	f.putRule(perUnit("r", "1", core.RoundDown))
	ctx := context.Background()
	tier := func() *core.TierStatus {
		t.Helper()
		s, err := f.l.MemberTier(ctx, f.prog, "m1", f.l.Clock())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	first := f.ok(core.KindAccrue, "m1", core.Accrue{EventType: "bill_paid", Amount: "1200"})
	if s := tier(); s.Tier != "gold" || s.Qualification != 1200 {
		t.Fatalf("after 1200: %+v", s)
	}
	pts, ver := f.earn("m1", "bill_paid", "100", f.l.Clock())
	if pts != 150 || ver != "rule:r@v1+tier:gold@x1.50" {
		t.Fatalf("gold accrual: %d by %q", pts, ver)
	}
	// A redemption does not lower the qualification.
	f.ok(core.KindRedeem, "m1", core.Redeem{Points: 500})
	if s := tier(); s.Tier != "gold" || s.Qualification != 1350 {
		t.Fatalf("after a redemption: %+v", s)
	}
	// Reversing an accrual does.
	f.ok(core.KindReverse, "m1", core.Reverse{PostingID: first.PostingIDs[0], Reason: "refund"})
	if s := tier(); s.Tier != "blue" || s.Qualification != 150 {
		t.Fatalf("after the reversal: %+v", s)
	}
	// The next accrual earns at the blue rate and records the downgrade.
	if pts, _ := f.earn("m1", "bill_paid", "100", f.l.Clock()); pts != 100 {
		t.Fatalf("blue accrual: %d", pts)
	}
	s := tier()
	var moves []string
	for _, c := range s.History {
		moves = append(moves, c.From+">"+c.To)
	}
	if got := strings.Join(moves, ","); got != ">gold,gold>blue" {
		t.Fatalf("history %q, want >gold,gold>blue", got)
	}
	// 30 days later the window is empty.
	f.setNow(f.l.Clock().Add(31 * 24 * time.Hour))
	if s := tier(); s.Qualification != 0 || s.Tier != "blue" {
		t.Fatalf("after the window: %+v", s)
	}
	f.check()
}

func TestRuleYearlyCapAcrossLocalNewYear(t *testing.T) {
	f := newFixture(t, core.Program{TimeZone: "America/Santiago"})
	f.setNow(time.Date(2027, 1, 2, 12, 0, 0, 0, time.UTC))
	f.enroll("m1")
	r := perUnit("yearly", "1", core.RoundDown)
	r.Caps = core.Caps{PerYear: 1000}
	f.putRule(r)
	santiago := time.FixedZone("-03", -3*3600)
	// 23:30 on 31 December at -03:00 is already 2027 in UTC, but counts in
	// the local 2026; 00:30 on 1 January counts in 2027.
	steps := []struct {
		at     time.Time
		amount string
		want   core.Points
		capped string
	}{
		{time.Date(2026, 6, 1, 10, 0, 0, 0, santiago), "700", 700, ""},
		{time.Date(2026, 12, 31, 23, 30, 0, 0, santiago), "500", 300, "per_year"},
		{time.Date(2027, 1, 1, 0, 30, 0, 0, santiago), "400", 400, ""},
		{time.Date(2027, 1, 1, 9, 0, 0, 0, santiago), "800", 600, "per_year"},
	}
	ctx := context.Background()
	for i, s := range steps {
		at := s.at
		sim, err := f.l.Simulate(ctx, f.prog, SimulateEvent{Member: "m1", Type: "bill_paid",
			Amount: s.amount, OccurredAt: &at})
		if err != nil || sim.Points != s.want || sim.Fired[0].CappedBy != s.capped {
			t.Fatalf("step %d simulated: %+v %v, want %d capped by %q", i, sim, err, s.want,
				s.capped)
		}
		if got, _ := f.earn("m1", "bill_paid", s.amount, s.at); got != s.want {
			t.Fatalf("step %d at %s: %d points, want %d", i, s.at, got, s.want)
		}
	}
	f.wantBalance("m1", 2000, 0, 0)
	var y2026, y2027 int64
	err := f.l.pool.QueryRow(ctx, `SELECT
			(SELECT points FROM rule_counters WHERE win = 'y:2026' AND rule_code = 'yearly'
				AND program_id = (SELECT id FROM programs WHERE code = $1)),
			(SELECT points FROM rule_counters WHERE win = 'y:2027' AND rule_code = 'yearly'
				AND program_id = (SELECT id FROM programs WHERE code = $1))`, f.prog).
		Scan(&y2026, &y2027)
	if err != nil || y2026 != 1000 || y2027 != 1000 {
		t.Fatalf("counters: 2026 %d, 2027 %d (%v), want 1000 and 1000", y2026, y2027, err)
	}
	f.check()
}

func TestTierQualificationBySpend(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	f.ok(core.KindTiersSet, "", core.Tiers{WindowDays: 30, Basis: core.TierBasisSpend,
		Levels: []core.TierLevel{
			{Code: "blue", MinSpend: "0", Multiplier: "1"},
			{Code: "gold", MinSpend: "50000", Multiplier: "2"}}})
	// One point per 1000 paid: points alone would never reach 50000.
	f.putRule(perUnit("r", "0.001", core.RoundDown))
	ctx := context.Background()
	tier := func() *core.TierStatus {
		t.Helper()
		s, err := f.l.MemberTier(ctx, f.prog, "m1", f.l.Clock())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	if pts, _ := f.earn("m1", "bill_paid", "30000.25", f.l.Clock()); pts != 30 {
		t.Fatalf("blue accrual: %d points, want 30", pts)
	}
	if s := tier(); s.Tier != "blue" || s.Basis != "spend" || s.Spend != "30000.25" ||
		s.Qualification != 30 {
		t.Fatalf("after 30000.25: %+v", s)
	}
	// The accrual that takes the spend to 50000.50 upgrades the member; it
	// earns at the blue rate, the next one at the gold rate.
	second := f.ok(core.KindAccrue, "m1", core.Accrue{EventType: "bill_paid",
		Amount: "20000.25"})
	if second.Points != 20 {
		t.Fatalf("upgrading accrual: %d points, want 20", second.Points)
	}
	if s := tier(); s.Tier != "gold" || s.Spend != "50000.5" {
		t.Fatalf("after 50000.50: %+v", s)
	}
	if pts, ver := f.earn("m1", "bill_paid", "1000", f.l.Clock()); pts != 2 ||
		ver != "rule:r@v1+tier:gold@x2.00" {
		t.Fatalf("gold accrual: %d points by %q, want 2", pts, ver)
	}
	// A redemption does not lower the spend.
	f.ok(core.KindRedeem, "m1", core.Redeem{Points: 20})
	f.wantBalance("m1", 32, 0, 0)
	if s := tier(); s.Tier != "gold" || s.Spend != "51000.5" {
		t.Fatalf("after a redemption: %+v", s)
	}
	// Reversing an accrual does: 31000.25 is left.
	f.ok(core.KindReverse, "m1", core.Reverse{PostingID: second.PostingIDs[0],
		Reason: "refund"})
	if s := tier(); s.Tier != "blue" || s.Spend != "31000.25" {
		t.Fatalf("after the reversal: %+v", s)
	}
	// The next accrual earns at the blue rate and records the downgrade.
	if pts, _ := f.earn("m1", "bill_paid", "1000", f.l.Clock()); pts != 1 {
		t.Fatalf("blue accrual after the reversal: %d points, want 1", pts)
	}
	s := tier()
	var moves []string
	for _, c := range s.History {
		moves = append(moves, c.From+">"+c.To+"@"+c.Spend)
	}
	want := ">blue@30000.25,blue>gold@50000.5,gold>blue@32000.25"
	if got := strings.Join(moves, ","); got != want {
		t.Fatalf("history %q, want %q", got, want)
	}
	f.check()
}

func TestTiersSpendBasisValidation(t *testing.T) {
	f := newFixture(t, core.Program{})
	for name, c := range map[string]struct {
		tiers core.Tiers
		field string
	}{
		"unknown basis": {core.Tiers{WindowDays: 30, Basis: "visits", Levels: []core.TierLevel{
			{Code: "a", Multiplier: "1"}}}, "basis"},
		"spend not decimal": {core.Tiers{WindowDays: 30, Basis: "spend",
			Levels: []core.TierLevel{{Code: "a", MinSpend: "1e3", Multiplier: "1"}}},
			"levels[0].min_spend"},
		"spend not ascending": {core.Tiers{WindowDays: 30, Basis: "spend",
			Levels: []core.TierLevel{{Code: "a", MinSpend: "100", Multiplier: "1"},
				{Code: "b", MinSpend: "100.00", Multiplier: "1"}}}, "levels[1].min_spend"},
		"min_spend with points": {core.Tiers{WindowDays: 30, Levels: []core.TierLevel{
			{Code: "a", MinSpend: "100", Multiplier: "1"}}}, "levels[0].min_spend"},
		"min_points with spend": {core.Tiers{WindowDays: 30, Basis: "spend",
			Levels: []core.TierLevel{{Code: "a", MinPoints: 5, MinSpend: "1",
				Multiplier: "1"}}}, "levels[0].min_points"},
	} {
		r := f.do(core.KindTiersSet, "", f.txn(), c.tiers)
		if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != c.field {
			t.Errorf("%s: %s %+v, want a refusal on %q", name, r.Status, r.Error, c.field)
		}
	}
}

// From an attack on the back office's rule form: a new version that leaves
// its start out starts now, and one whose end had passed was stored ending
// before it started; and a window a nanosecond long passed the check and
// was stored empty (the ledger keeps microseconds). Both are refused.
func TestRuleWindowsThatEndBeforeTheyStart(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("ana")
	base := core.Rule{Code: "base", EventType: "bill_paid", Rounding: core.RoundDown,
		Formula: core.Formula{Kind: core.FormulaPerUnit, Rate: "1"}}
	f.putRule(base)
	past := f.now.Add(-time.Hour)
	update := base
	update.ValidTo = &past
	r := f.do(core.KindRuleUpsert, "", f.txn(), RuleUpsert{Rule: update, Mode: "update"})
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "valid_to" {
		t.Fatalf("a version ending an hour ago, starting now: %s %+v; want refused on "+
			"valid_to", r.Status, r.Error)
	}
	from := f.now.Add(time.Hour)
	to := from.Add(time.Nanosecond)
	short := base
	short.Code, short.ValidFrom, short.ValidTo = "short", &from, &to
	r = f.do(core.KindRuleUpsert, "", f.txn(), RuleUpsert{Rule: short, Mode: "create"})
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "valid_to" {
		t.Fatalf("a window of a nanosecond: %s %+v; want refused on valid_to", r.Status,
			r.Error)
	}
	// The rule in force is still the first version.
	if pts, _ := f.earn("ana", "bill_paid", "10", f.now); pts != 10 {
		t.Fatalf("an accrual under the rule after the refusals: %d points, want 10", pts)
	}
}
