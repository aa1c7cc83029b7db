package postgres

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// rulesTwin is a twin with two programs: "rules", whose accruals earn by a
// set of conditional and capped rules, and "flat", without rules.
type rulesTwin struct {
	*twin
	t *testing.T
}

// in is a command of program prog sent through channel.
func (w rulesTwin) in(prog, kind, member, channel string, payload any,
	at time.Time) bus.Command {
	c := w.command(kind, member, payload, at)
	c.Program, c.Channel = prog, channel
	c.Seal()
	return c
}

// accrue is an accrual of program "rules" through the web.
func (w rulesTwin) accrue(member, typ, amount string, at time.Time) bus.Command {
	return w.in("rules", core.KindAccrue, member, "web",
		core.Accrue{EventType: typ, Amount: amount}, at)
}

// setBased applies cmds to both ledgers and returns how many commands the
// set-based ledger applied on its set-based path.
func (w rulesTwin) setBased(cmds ...bus.Command) int64 {
	w.t.Helper()
	before := w.fast.setBased.Load()
	w.apply(w.t, cmds)
	return w.fast.setBased.Load() - before
}

// newRulesTwin makes the two programs, their members and the rules of
// program "rules", and returns the moment from which the rule "base" earns
// at its second version's rate.
func newRulesTwin(t *testing.T) (rulesTwin, time.Time) {
	w := rulesTwin{twin: newTwin(t), t: t}
	w.prog = "rt"
	at := w.now
	prog := func(rate string) core.Program {
		return core.Program{Name: "Rules twin", TimeZone: "America/Santiago",
			Currency: "CLP", PointsPerUnit: rate, HoldTTLSeconds: 3600}
	}
	enroll := func(prog, ref, plan string, segments []string, months int) bus.Command {
		since := at.AddDate(0, -months, 0)
		return w.in(prog, core.KindEnroll, ref, "app", core.Enroll{Channel: "app",
			EnrolledAt: &since, Attributes: &core.MemberAttributes{Plan: plan,
				Segments: segments}}, at)
	}
	rule := func(r core.Rule) bus.Command {
		return w.in("rules", core.KindRuleUpsert, "", "", RuleUpsert{Rule: r}, at)
	}
	fixed := func(code, cond string, points core.Points, caps core.Caps) core.Rule {
		return core.Rule{Code: code, EventType: "bill_paid", Condition: cond, Caps: caps,
			Formula: core.Formula{Kind: core.FormulaFixed, Points: points}}
	}
	big := perUnit("big", "0.5", core.RoundHalfUp)
	big.Condition, big.Caps = "event.amount_cents >= 10000", core.Caps{PerMonth: 120}
	sale := core.Rule{Code: "sale", EventType: "*", Condition: `event.partner == "shop"`,
		Formula: core.Formula{Kind: core.FormulaMultiplier, Factor: "1.5"}}
	w.apply(t, []bus.Command{
		w.in("rules", core.KindProgramUpsert, "", "", prog("1"), at),
		w.in("flat", core.KindProgramUpsert, "", "", prog("0.1"), at),
		enroll("rules", "m1", "gold", []string{"vip"}, 14),
		enroll("rules", "m2", "silver", nil, 1),
		enroll("rules", "m3", "", []string{"vip", "student"}, 3),
		enroll("rules", "m4", "gold", nil, 0),
		enroll("flat", "m1", "", nil, 0),
		enroll("flat", "f2", "", nil, 0),
		rule(perUnit("base", "0.01", core.RoundDown)),
		rule(fixed("web", `event.channel == "web"`, 20, core.Caps{PerDay: 30})),
		rule(big),
		rule(fixed("gold", `member.plan == "gold"`, 15, core.Caps{PerYear: 40})),
		rule(fixed("loyal", `member.tenure_months >= 3`, 7, core.Caps{})),
		rule(fixed("vip", `"vip" in member.segments`, 25, core.Caps{Budget: 100})),
		rule(sale),
		rule(core.Rule{Code: "topup", EventType: "top_up", Condition: "event.amount_cents > 0",
			Formula: core.Formula{Kind: core.FormulaFixed, Points: 3}, Caps: core.Caps{PerDay: 5,
				PerEvent: 4}}),
	})
	// From an hour ago, "base" earns 0.02 a unit.
	from := at.Add(-time.Hour)
	v2 := perUnit("base", "0.02", core.RoundDown)
	v2.ValidFrom = &from
	w.apply(t, []bus.Command{w.in("rules", core.KindRuleUpsert, "", "",
		RuleUpsert{Rule: v2, Mode: "update"}, at)})
	return w, from
}

// TestSetBasedRulesMatchRowByRow sends batches of accruals in a program
// with conditional and capped rules, mixed with refusals, credits, replays
// and accruals of a program without rules, to a ledger on the set-based
// path and to one on the per-command path: answers, postings, lots,
// members, counters and stored results must be the same, and the accruals
// with rules must take the set-based path.
func TestSetBasedRulesMatchRowByRow(t *testing.T) {
	w, v2 := newRulesTwin(t)
	at := w.now
	early := v2.Add(-30 * time.Minute) // in force: base v1
	// 02:30 UTC on 10 March is 23:30 on 9 March in Santiago: another day.
	lastNight := time.Date(2026, 3, 10, 2, 30, 0, 0, time.UTC)

	// The first use of the budget makes its row, on the per-command path.
	first := w.accrue("m3", "bill_paid", "10", at)
	if n := w.setBased(first); n != 0 {
		t.Fatalf("first use of a budget: %d set-based, want 0", n)
	}

	replayed := w.accrue("m2", "bill_paid", "250.50", at)
	shop := w.in("rules", core.KindAccrue, "m4", "store",
		core.Accrue{EventType: "bill_paid", Amount: "3000", Partner: "shop"}, early)
	cmds := []bus.Command{
		// m1: web 20, then 10 (the daily cap of 30), then 0; gold 15, 15,
		// then 10 (the yearly cap of 40); vip from the budget.
		w.accrue("m1", "bill_paid", "1000", at),
		w.accrue("m1", "bill_paid", "1000", early),
		w.in("flat", core.KindAccrue, "m1", "web",
			core.Accrue{EventType: "bill_paid", Amount: "55"}, at),
		w.accrue("m1", "bill_paid", "20000", at),
		w.accrue("nobody", "bill_paid", "10", at),
		w.accrue("m1", "bill_paid", "20000", at),
		// The day before in the program's time zone: the daily cap starts
		// again.
		w.accrue("m1", "bill_paid", "100", lastNight),
		w.accrue("m2", "bill_paid", "abc", at),
		replayed,
		w.in("rules", core.KindCredit, "m2", "web", core.Credit{Points: 12, Reason: "gift"},
			at),
		w.accrue("m2", "bill_paid", "-5", at),
		shop,
		w.accrue("m3", "bill_paid", "400", at),
		w.in("flat", core.KindAccrue, "f2", "web",
			core.Accrue{EventType: "bill_paid", Amount: "99.99"}, at),
		replayed,
		// The budget of 100 runs out: 25 went to the first accrual, then
		// m1 and m3 share the rest.
		w.accrue("m3", "bill_paid", "400", at),
		w.accrue("m3", "top_up", "5000", at),
		w.accrue("m3", "top_up", "5000", at),
		w.accrue("m3", "top_up", "0", at),
		w.accrue("m4", "bill_paid", "30000", at),
		w.accrue("m4", "bill_paid", "30000", at),
		w.accrue("m4", "bill_paid", "30000", at.Add(time.Minute)),
		shop,
		w.accrue("m4", "bill_paid", "1.5", at),
		w.accrue("m4", "other", "1000", at),
		w.accrue("m4", "bill_paid", "1000", at.Add(time.Hour)), // in the future
	}
	n := w.setBased(cmds...)
	// All but the refusals (3), the replays (2) and the accrual in the
	// future.
	if want := int64(len(cmds) - 6); n != want {
		t.Fatalf("set-based path applied %d commands, want %d", n, want)
	}

	// A second batch, counters and budget as the first one left them.
	n = w.setBased(
		w.accrue("m1", "bill_paid", "500", at),
		w.accrue("m3", "bill_paid", "500", at),
		w.accrue("m4", "bill_paid", "500", lastNight),
		w.accrue("m2", "bill_paid", "500", early),
	)
	if n != 4 {
		t.Fatalf("second batch: %d set-based, want 4", n)
	}
	w.compare(t)

	// What the counters hold, checked by hand: the budget is spent, m1 got
	// its 40 gold points of the year and 30 web points on the 10th.
	counters := map[string]int64{}
	rows, err := w.fast.Pool().Query(context.Background(), `SELECT c.rule_code || ' ' ||
			COALESCE(m.customer_ref, '') || ' ' || c.win, c.points
		FROM rule_counters c LEFT JOIN members m ON m.id::text = c.scope`)
	if err != nil {
		t.Fatal(err)
	}
	var key string
	var points int64
	if _, err := pgx.ForEachRow(rows, []any{&key, &points}, func() error {
		counters[key] = points
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]int64{"vip  budget": 100, "gold m1 y:2026": 40,
		"web m1 d:2026-03-10": 30, "web m1 d:2026-03-09": 20, "big m4 m:2026-03": 120} {
		if counters[key] != want {
			t.Errorf("counter %q: %d, want %d (all: %v)", key, counters[key], want, counters)
		}
	}
}

// TestSetBasedRulesVersionsAndErrors: a rule retired and one changed in
// force at different occurred_at of one batch, an amount too large for the
// rules (refused as invalid), and a program whose rules change within the
// batch.
func TestSetBasedRulesVersionsAndErrors(t *testing.T) {
	w, v2 := newRulesTwin(t)
	at := w.now
	huge := w.accrue("m2", "bill_paid", "90000000000000", at)
	batch := []bus.Command{
		w.accrue("m2", "bill_paid", "1000", v2.Add(-time.Second)),
		w.accrue("m2", "bill_paid", "1000", v2),
		huge,
		w.accrue("m2", "bill_paid", "1000", v2.Add(-2*time.Hour)),
		// The rules change mid-batch: "web" is retired from now on.
		w.in("rules", core.KindRuleRetire, "", "", core.RuleRetire{Code: "web"}, at),
		w.accrue("m2", "bill_paid", "1000", at.Add(-time.Minute)),
		w.accrue("m2", "bill_paid", "1000", at),
		w.in("rules", core.KindMemberAttributes, "m2", "",
			core.MemberAttributes{Plan: "gold"}, at),
		w.accrue("m2", "bill_paid", "1000", at),
	}
	res := w.apply(t, batch)
	var r bus.Result = res[2]
	if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Kind != string(core.Invalid) {
		t.Fatalf("huge accrual: %s %+v, want refused as invalid", r.Status, r.Error)
	}
	var last core.Outcome
	if err := json.Unmarshal(res[len(res)-1].Data, &last); err != nil {
		t.Fatal(err)
	}
	// base v2 (20) and gold (15): the attributes changed, "web" retired.
	if last.Points != 35 {
		t.Fatalf("last accrual: %d points, want 35", last.Points)
	}
	w.compare(t)
	if w.fast.setBased.Load() == 0 {
		t.Fatal("no command took the set-based path")
	}
}
