package postgres

import (
	"context"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// BenchmarkSpendFromManyLots spends one point at a time, by redemption and
// by a partner's hold, from a member holding 20,000 live lots (a business
// account earning on every sale, or years of daily top-ups): what a debit
// costs when most of the member's lots are not needed.
func BenchmarkSpendFromManyLots(b *testing.B) {
	const lots = 20000
	f := newFixture(b, core.Program{PointsPerUnit: "1"})
	ctx := context.Background()
	f.enroll("big")
	var cmds []bus.Command
	for range lots {
		c := f.command(core.KindAccrue, "big", f.txn(),
			core.Accrue{EventType: "purchase", Amount: "10"})
		c.Seal()
		cmds = append(cmds, c)
	}
	for len(cmds) > 0 {
		n := min(500, len(cmds))
		if _, err := f.l.ApplyBatch(ctx, cmds[:n]); err != nil {
			b.Fatal(err)
		}
		cmds = cmds[n:]
	}
	// As autovacuum would have by then: without statistics PostgreSQL
	// guesses the member has a handful of lots, and sorts them all.
	if _, err := f.l.pool.Exec(ctx, `ANALYZE lots`); err != nil {
		b.Fatal(err)
	}
	bar := partnerCmds{f: f, source: "partner:bar-" + f.prog}
	var spent, held core.Points
	for _, kind := range []string{core.KindRedeem, core.KindAuthorize} {
		// Each iteration makes 100 of them (make bench runs it once).
		b.Run(kind, func(b *testing.B) {
			n := 0
			for b.Loop() {
				for range 100 {
					var r bus.Result
					if kind == core.KindRedeem {
						r = f.do(core.KindRedeem, "big", f.txn(), core.Redeem{Points: 1,
							Reason: "bench"})
					} else {
						r = bar.do(core.KindAuthorize, "big", f.txn(),
							core.Authorize{Points: 1})
						held++
					}
					if r.Status != bus.StatusOK {
						b.Fatalf("%s: %+v", kind, r.Error)
					}
					spent++
					n++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n), "µs/spend")
		})
	}
	f.wantBalance("big", 10*lots-spent, 0, held)
	f.check()
}
