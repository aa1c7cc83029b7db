package postgres

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// BenchmarkBalance reads the balance of members holding 24 live lots each
// (two years of monthly bills), one read at a time, with the lots and
// without. Besides the time per read
// it reports the PostgreSQL backends' CPU per read, read from /proc when the
// server runs on this machine (0 otherwise).
func BenchmarkBalance(b *testing.B) {
	const members, lots = 1000, 24
	f := newFixture(b, core.Program{PointsPerUnit: "1"})
	ctx := context.Background()
	var cmds []bus.Command
	for i := range members {
		cmds = append(cmds, f.command(core.KindEnroll, fmt.Sprintf("m%d", i), f.txn(),
			core.Enroll{}))
	}
	for range lots {
		for i := range members {
			c := f.command(core.KindAccrue, fmt.Sprintf("m%d", i), f.txn(),
				core.Accrue{EventType: "purchase", Amount: "10"})
			c.Seal()
			cmds = append(cmds, c)
		}
		f.setNow(f.now.Add(time.Hour))
	}
	for len(cmds) > 0 {
		n := min(500, len(cmds))
		if _, err := f.l.ApplyBatch(ctx, cmds[:n]); err != nil {
			b.Fatal(err)
		}
		cmds = cmds[n:]
	}
	v, err := f.l.Balance(ctx, f.prog, "m0")
	if err != nil {
		b.Fatal(err)
	}
	if len(v.Lots) != lots || v.Balance.Available != 10*lots {
		b.Fatalf("m0: %d lots, %d available; want %d lots of 10", len(v.Lots),
			v.Balance.Available, lots)
	}

	// With the lots (the back office's read, ?lots=true) and without (the
	// summary every other caller makes).
	for _, read := range []struct {
		name string
		fn   func(context.Context, string, string) (*BalanceView, error)
	}{{"lots", f.l.Balance}, {"summary", f.l.BalanceSummary}} {
		b.Run(read.name, func(b *testing.B) {
			before := backendCPU(b, f.l)
			i := 0
			for b.Loop() {
				if _, err := read.fn(ctx, f.prog, "m"+strconv.Itoa(i%members)); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if pg := backendCPU(b, f.l) - before; pg > 0 {
				b.ReportMetric(float64(pg.Microseconds())/float64(i), "pg-µs/read")
			}
		})
	}
}

// backendCPU is the CPU used so far by the PostgreSQL backends of l's
// database (testenv.BackendCPU).
func backendCPU(b *testing.B, l *Ledger) time.Duration {
	return testenv.BackendCPU(b, l.pool)
}
