package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// BenchmarkApplyBatch times ApplyBatch on batches of 100 and 500 accruals
// spread over 1,000 members of a program without rules (the load
// generator's case), and on batches of 500 in a program with ten rules
// (conditions on amount, channel, attributes and tenure; daily, yearly and
// budget caps), and on batches of 500 in a program with tier levels whose
// rules use the tier, on the set-based path and, for comparison, with
// every command on its own savepoint; then the tier case again where every
// member already has 50 accruals in the tier window (a member's year of
// bills and top-ups), since the qualification a tier review reads grows
// with them. Commands occur 20 ms before the ledger applies them, as they
// do behind the gateway. It reports accruals per second.
//
//	go test -run '^$' -bench ApplyBatch -benchtime=20x ./core/postgres/
func BenchmarkApplyBatch(b *testing.B) {
	for _, size := range []int{6, 100, 500} {
		for _, path := range []string{"set-based", "row-by-row"} {
			b.Run(fmt.Sprintf("%d/%s", size, path), func(b *testing.B) {
				benchApplyBatch(b, size, path == "row-by-row", nil, nil)
			})
		}
	}
	for _, path := range []string{"set-based", "row-by-row"} {
		b.Run("rules/500/"+path, func(b *testing.B) {
			benchApplyBatch(b, 500, path == "row-by-row", benchRules(), nil)
		})
	}
	tiers := &core.Tiers{WindowDays: 30, Levels: []core.TierLevel{
		{Code: "silver", MinPoints: 20, Multiplier: "1.5"},
		{Code: "gold", MinPoints: 60, Multiplier: "2"}}}
	tierRules := []core.Rule{perUnit("base", "1", core.RoundDown),
		{Code: "gold", EventType: "bill_paid", Condition: `member.tier == "gold"`,
			Formula: core.Formula{Kind: core.FormulaFixed, Points: 3}}}
	for _, path := range []string{"set-based", "row-by-row"} {
		b.Run("tiers/500/"+path, func(b *testing.B) {
			benchApplyBatch(b, 500, path == "row-by-row", tierRules, tiers)
		})
	}
	b.Run("tiers-history50/500/set-based", func(b *testing.B) {
		benchApplyBatchOn(b, 500, false, tierRules, tiers, 50)
	})
}

// benchRules are ten rules of bill payments, three of them capped.
func benchRules() []core.Rule {
	fixed := func(code, cond string, points core.Points, caps core.Caps) core.Rule {
		return core.Rule{Code: code, EventType: "bill_paid", Condition: cond, Caps: caps,
			Formula: core.Formula{Kind: core.FormulaFixed, Points: points}}
	}
	big := perUnit("big", "0.5", core.RoundDown)
	big.Condition = "event.amount_cents >= 1500"
	return []core.Rule{
		perUnit("base", "1", core.RoundDown),
		big,
		fixed("web", `event.channel == "web"`, 5, core.Caps{PerDay: 12}),
		fixed("app", `event.channel == "app"`, 4, core.Caps{}),
		fixed("gold", `member.plan == "gold"`, 3, core.Caps{PerYear: 500}),
		fixed("card", `member.payment_method == "card"`, 2, core.Caps{}),
		fixed("loyal", `member.tenure_months >= 12`, 2, core.Caps{}),
		fixed("vip", `"vip" in member.segments`, 1, core.Caps{Budget: 1_000_000_000}),
		fixed("partner", `event.partner == "shop"`, 6, core.Caps{}),
		{Code: "promo", EventType: "bill_paid", Condition: `member.contract == "postpaid"`,
			Formula: core.Formula{Kind: core.FormulaMultiplier, Factor: "1.1"}},
	}
}

func benchApplyBatch(b *testing.B, size int, rowByRow bool, rules []core.Rule,
	tiers *core.Tiers) {
	benchApplyBatchOn(b, size, rowByRow, rules, tiers, 0)
}

// benchApplyBatchOn is benchApplyBatch where every member first accrues
// history times, spread over the 25 days before the run.
func benchApplyBatchOn(b *testing.B, size int, rowByRow bool, rules []core.Rule,
	tiers *core.Tiers, history int) {
	f := newFixture(b, core.Program{PointsPerUnit: "1"})
	f.l.rowByRow = rowByRow
	for _, r := range rules {
		f.putRule(r)
	}
	if tiers != nil {
		f.ok(core.KindTiersSet, "", tiers)
	}
	const members = 1000
	enroll := make([]bus.Command, members)
	for i := range enroll {
		in := core.Enroll{}
		if rules != nil {
			since := f.now.AddDate(0, -i%30, 0)
			in.EnrolledAt = &since
			in.Attributes = &core.MemberAttributes{
				Plan: []string{"gold", "silver"}[i%2], PaymentMethod: []string{"card", ""}[i%3%2],
				Contract: []string{"postpaid", "prepaid"}[i%4%2], Segments: []string{"vip"}[:i%5%2]}
		}
		enroll[i] = f.command(core.KindEnroll, fmt.Sprintf("m%d", i), f.txn(), in)
	}
	if _, err := f.l.ApplyBatch(context.Background(), enroll); err != nil {
		b.Fatal(err)
	}

	// The history goes in on the set-based path whatever the path measured.
	f.l.rowByRow = false
	for h := range history {
		cmds := make([]bus.Command, members)
		at := f.now.Add(-25*24*time.Hour + time.Duration(h)*12*time.Hour)
		for i := range cmds {
			cmds[i] = f.command(core.KindAccrue, fmt.Sprintf("m%d", i), f.txn(),
				core.Accrue{EventType: "bill_paid", Amount: "1"})
			cmds[i].OccurredAt = at.Add(time.Duration(i) * time.Millisecond)
			cmds[i].Seal()
		}
		out, err := f.l.ApplyBatch(context.Background(), cmds)
		if err != nil {
			b.Fatal(err)
		}
		if out[0].Result.Status != bus.StatusOK {
			b.Fatalf("history accrual refused: %+v", out[0].Result.Error)
		}
	}
	f.l.rowByRow = rowByRow

	n := 0
	batch := func() []bus.Command {
		cmds := make([]bus.Command, size)
		for i := range cmds {
			in := core.Accrue{EventType: "purchase", Amount: "10"}
			if rules != nil {
				in = core.Accrue{EventType: "bill_paid", Amount: fmt.Sprintf("%d.50", 5+i%20)}
			}
			cmds[i] = f.command(core.KindAccrue, fmt.Sprintf("m%d", (n*size+i)%members),
				f.txn(), in)
			cmds[i].Channel = []string{"web", "app", "store"}[i%3]
			cmds[i].OccurredAt = f.now.Add(-20 * time.Millisecond)
			cmds[i].Seal()
		}
		n++
		return cmds
	}
	apply := func(cmds []bus.Command) {
		out, err := f.l.ApplyBatch(context.Background(), cmds)
		if err != nil {
			b.Fatal(err)
		}
		if out[size-1].Result.Status != bus.StatusOK {
			b.Fatalf("accrual refused: %+v", out[size-1].Result.Error)
		}
	}
	// One batch first, untimed: the connection prepares its statements once.
	apply(batch())

	var applied time.Duration
	runs := 0
	pgBefore := backendCPU(b, f.l)
	for b.Loop() {
		b.StopTimer()
		cmds := batch()
		b.StartTimer()
		start := time.Now()
		apply(cmds)
		applied += time.Since(start)
		runs++
	}
	b.ReportMetric(float64(runs*size)/applied.Seconds(), "accruals/s")
	if pg := backendCPU(b, f.l) - pgBefore; pg > 0 {
		b.ReportMetric(float64(pg.Microseconds())/float64(runs*size), "pg-µs/accrual")
	}
}
