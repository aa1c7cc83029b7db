package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// tiersTwin is a twin with five programs: "tp", with tier levels by points
// and no rules; "tr", with tier levels by points and rules that use the
// tier and its multiplier; "ts", with tier levels by spend, rules and
// points that stay pending for three days; "flat" and "plain", without
// tiers, the second with a rule.
type tiersTwin struct{ rulesTwin }

func newTiersTwin(t *testing.T) tiersTwin {
	w := tiersTwin{rulesTwin{twin: newTwin(t), t: t}}
	w.prog = "tt"
	at := w.now
	prog := func(rate string, pendingDays int) core.Program {
		return core.Program{Name: "Tiers twin", TimeZone: "America/Santiago", Currency: "CLP",
			PointsPerUnit: rate, PendingDays: pendingDays, HoldTTLSeconds: 3600}
	}
	since := at.AddDate(-1, 0, 0)
	enroll := func(prog, ref string) bus.Command {
		return w.in(prog, core.KindEnroll, ref, "app", core.Enroll{Channel: "app",
			EnrolledAt: &since}, at)
	}
	rule := func(prog string, r core.Rule) bus.Command {
		return w.in(prog, core.KindRuleUpsert, "", "", RuleUpsert{Rule: r}, at)
	}
	fixed := func(code, cond string, points core.Points, caps core.Caps) core.Rule {
		return core.Rule{Code: code, EventType: "bill_paid", Condition: cond, Caps: caps,
			Formula: core.Formula{Kind: core.FormulaFixed, Points: points}}
	}
	w.apply(t, []bus.Command{
		w.in("tp", core.KindProgramUpsert, "", "", prog("1", 0), at),
		w.in("tr", core.KindProgramUpsert, "", "", prog("1", 0), at),
		w.in("ts", core.KindProgramUpsert, "", "", prog("0.1", 3), at),
		w.in("flat", core.KindProgramUpsert, "", "", prog("1", 0), at),
		w.in("plain", core.KindProgramUpsert, "", "", prog("1", 0), at),
		enroll("tp", "a1"), enroll("tp", "a2"), enroll("tr", "b1"), enroll("tr", "b2"),
		enroll("ts", "c1"), enroll("flat", "a1"), enroll("flat", "f1"), enroll("plain", "p1"),
		w.in("tp", core.KindTiersSet, "", "", core.Tiers{WindowDays: 30,
			Levels: []core.TierLevel{{Code: "blue", Multiplier: "1"},
				{Code: "silver", MinPoints: 100, Multiplier: "1.5"},
				{Code: "gold", MinPoints: 300, Multiplier: "2"}}}, at),
		w.in("tr", core.KindTiersSet, "", "", core.Tiers{WindowDays: 30,
			Levels: []core.TierLevel{{Code: "silver", MinPoints: 100, Multiplier: "1.5"},
				{Code: "gold", MinPoints: 300, Multiplier: "2"}}}, at),
		w.in("ts", core.KindTiersSet, "", "", core.Tiers{WindowDays: 10,
			Basis: core.TierBasisSpend, Levels: []core.TierLevel{
				{Code: "bronze", MinSpend: "100.5", Multiplier: "1"},
				{Code: "silver", MinSpend: "1000", Multiplier: "1.25"},
				{Code: "gold", MinSpend: "2500.25", Multiplier: "3"}}}, at),
		rule("tr", perUnit("base", "1", core.RoundDown)),
		rule("tr", fixed("goldbonus", `member.tier == "gold"`, 50, core.Caps{})),
		rule("tr", fixed("web", `event.channel == "web"`, 10, core.Caps{PerDay: 15})),
		rule("ts", perUnit("base", "0.1", core.RoundDown)),
		rule("ts", fixed("silver", `member.tier == "silver"`, 7, core.Caps{})),
		rule("plain", perUnit("base", "2", core.RoundDown)),
	})
	return w
}

// accrueIn is an accrual of amount in program prog, through channel.
func (w tiersTwin) accrueIn(prog, member, channel, amount string, at time.Time) bus.Command {
	return w.in(prog, core.KindAccrue, member, channel,
		core.Accrue{EventType: "bill_paid", Amount: amount}, at)
}

// applied counts the accruals and credits of cmds that res reports applied
// (not refused, not replayed): all of them should take the set-based path.
func applied(cmds []bus.Command, res []bus.Result) int64 {
	var n int64
	for i, r := range res {
		kind := cmds[i].Kind == core.KindAccrue || cmds[i].Kind == core.KindCredit
		if kind && r.Status == bus.StatusOK && !r.Replayed {
			n++
		}
	}
	return n
}

// TestSetBasedTiersMatchRowByRow sends batches of accruals in programs with
// tier levels, by points and by spend, with and without rules, mixed with
// plain programs, credits, refusals, a reversal and a change of the tier
// levels, to a ledger on the set-based path and to one on the per-command
// path: answers, postings, lots, members and their tiers, tier history,
// counters, results and events must be the same, and every accrual and
// credit applied must take the set-based path.
func TestSetBasedTiersMatchRowByRow(t *testing.T) {
	w := newTiersTwin(t)
	at := w.now
	edge := at.AddDate(0, 0, -30) // the start of the window ending at at: outside it
	run := func(cmds ...bus.Command) []bus.Result {
		t.Helper()
		before := w.fast.setBased.Load()
		res := w.apply(t, cmds)
		if n, want := w.fast.setBased.Load()-before, applied(cmds, res); n != want {
			t.Fatalf("set-based path applied %d commands, want %d", n, want)
		}
		return res
	}

	// History: events a month old (out of the window that ends now) leave
	// a1 at blue: a late event reviews the tier the member has now.
	run(
		w.accrueIn("tp", "a1", "web", "150", edge.Add(-24*time.Hour)),
		w.accrueIn("tp", "a1", "web", "40", edge),
	)

	early := w.accrueIn("tp", "a1", "web", "100", at.Add(-time.Second))
	reversed := w.accrueIn("tp", "a1", "web", "200", at)
	cmds := []bus.Command{
		// a1: 30 in the window ending at at (the 40 at its start is out):
		// still blue. Then 100 a second earlier (late: reviewed now, with
		// the 30): silver. Then gold with all three.
		w.accrueIn("tp", "a1", "web", "30", at),
		early,
		reversed,
		w.in("tp", core.KindCredit, "a1", "web", core.Credit{Points: 5, Reason: "gift"}, at),
		w.accrueIn("tp", "a1", "web", "-1", at),
		// a2 passes two levels with one accrual.
		w.accrueIn("tp", "a2", "app", "350", at.Add(-2*time.Hour)),
		w.accrueIn("flat", "a1", "web", "12", at),
		// b1: rules see silver, then gold (bonus and multiplier).
		w.accrueIn("tr", "b1", "web", "60", at),
		w.accrueIn("tr", "b1", "app", "40", at),
		w.accrueIn("tr", "b1", "web", "100", at),
		w.accrueIn("tr", "nobody", "web", "100", at),
		w.accrueIn("tr", "b1", "app", "100", at),
		w.accrueIn("tr", "b1", "app", "100", at),
		w.accrueIn("plain", "p1", "app", "9", at),
		// c1 by spend: bronze (pending points count), silver, an old event
		// whose window holds only itself, then gold exactly at its minimum.
		w.accrueIn("ts", "c1", "app", "500.25", at.Add(-time.Hour)),
		w.accrueIn("ts", "c1", "app", "600", at),
		w.accrueIn("ts", "c1", "app", "2000", at.AddDate(0, 0, -11)),
		w.accrueIn("ts", "c1", "app", "1400", at),
		w.accrueIn("ts", "c1", "app", "5", at.Add(time.Hour)), // in the future
		w.in("ts", core.KindAccrue, "c1", "app",
			core.Accrue{EventType: "bill_paid", Amount: "5", Currency: "EUR"}, at),
		// The levels of tp change mid-batch: gold now needs 1000.
		w.in("tp", core.KindTiersSet, "", "", core.Tiers{WindowDays: 30,
			Levels: []core.TierLevel{{Code: "blue", Multiplier: "1"},
				{Code: "silver", MinPoints: 100, Multiplier: "1.5"},
				{Code: "gold", MinPoints: 1000, Multiplier: "2"}}}, at),
		w.accrueIn("tp", "a1", "web", "10", at),
		w.accrueIn("tp", "a1", "web", "0", at),
		w.accrueIn("tp", "a2", "web", "1", at),
		w.accrueIn("tr", "b2", "web", "99", edge.Add(time.Second)),
		w.accrueIn("tr", "b2", "web", "1", at),
	}
	run(cmds...)

	// Reversals take 300 out of a1's qualification: down to blue. b2's
	// first accrual leaves the window of the next one by a second, and is
	// in that of the last one.
	reverse := func(c bus.Command) bus.Command {
		return w.in("tp", core.KindReverse, "a1", "web", core.Reverse{OriginalTxnID: c.TxnID,
			Reason: "refund"}, at)
	}
	run(
		reverse(early),
		reverse(reversed),
		w.accrueIn("tp", "a1", "web", "1", at),
		w.accrueIn("tr", "b2", "web", "2", at.Add(time.Second)),
		w.accrueIn("tr", "b2", "web", "3", edge.Add(2*time.Second)),
		// 700 for a2 at the start of the window ending at at, then 2 at at:
		// the 700 is out of that window, a2 stays silver.
		w.accrueIn("tp", "a2", "web", "700", edge),
		w.accrueIn("tp", "a2", "web", "2", at),
	)
	w.compare(t)

	// The tier history, checked by hand. b2's last accrual, 12 points dated
	// a month back, is late: reviewed now, with 109 and 16 of the window
	// that ends now (the 7 a second ahead is not in it yet).
	want := []string{
		"a1  blue 0", "a1 blue silver 130", "a1 silver gold 330",
		"a1 gold silver 340", "a1 silver blue 41",
		"a2  gold 350", "a2 gold silver 351",
		"b1  silver 110", "b1 silver gold 417",
		"b2  silver 109", "b2 silver  23", "b2  silver 137",
		"c1  bronze 50 500.25", "c1 bronze silver 110 1100.25", "c1 silver gold 293 2500.25",
	}
	rows, err := w.fast.Pool().Query(context.Background(), `SELECT m.customer_ref || ' ' ||
			t.from_tier || ' ' || t.to_tier || ' ' || t.qualification ||
			COALESCE(' ' || t.spend::text, '')
		FROM member_tiers t JOIN members m ON m.id = t.member_id
		ORDER BY m.customer_ref, t.id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("tier history:\n%q\nwant\n%q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("tier history row %d: %q, want %q (all: %q)", i, got[i], want[i], got)
		}
	}
}
