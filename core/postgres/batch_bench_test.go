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
// generator's case), on the set-based path and, for comparison, with every
// command on its own savepoint. It reports accruals per second.
//
//	go test -run '^$' -bench ApplyBatch -benchtime=20x ./core/postgres/
func BenchmarkApplyBatch(b *testing.B) {
	for _, size := range []int{100, 500} {
		for _, path := range []string{"set-based", "row-by-row"} {
			b.Run(fmt.Sprintf("%d/%s", size, path), func(b *testing.B) {
				benchApplyBatch(b, size, path == "row-by-row")
			})
		}
	}
}

func benchApplyBatch(b *testing.B, size int, rowByRow bool) {
	f := newFixture(b, core.Program{PointsPerUnit: "1"})
	f.l.rowByRow = rowByRow
	const members = 1000
	enroll := make([]bus.Command, members)
	for i := range enroll {
		enroll[i] = f.command(core.KindEnroll, fmt.Sprintf("m%d", i), f.txn(), core.Enroll{})
	}
	if _, err := f.l.ApplyBatch(context.Background(), enroll); err != nil {
		b.Fatal(err)
	}

	n := 0
	batch := func() []bus.Command {
		cmds := make([]bus.Command, size)
		for i := range cmds {
			cmds[i] = f.command(core.KindAccrue, fmt.Sprintf("m%d", (n*size+i)%members),
				f.txn(), core.Accrue{EventType: "purchase", Amount: "10"})
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
}
