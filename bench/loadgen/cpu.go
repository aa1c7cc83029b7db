package main

import (
	"context"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// sampleCPU reads the CPU used so far by this process (the generator and,
// in an in-process run, the whole platform with its embedded NATS server)
// and by each PostgreSQL backend serving the ledger's database.
func (r *runner) sampleCPU(ctx context.Context) testenv.CPU {
	return testenv.SampleCPU(ctx, r.target.pool)
}

// cpuSince reports the CPU used between before and now, in total and per
// answer; the PostgreSQL figure is a floor (see testenv.CPU.Since).
func (r *runner) cpuSince(ctx context.Context, before testenv.CPU, answers int) map[string]any {
	now := r.sampleCPU(ctx)
	self, pg := now.Since(before)
	out := map[string]any{
		"process_cpu_s":     self.Seconds(),
		"postgres_cpu_s":    pg.Seconds(),
		"postgres_backends": len(now.Backends),
	}
	if answers > 0 {
		out["process_cpu_ms_per"] = self.Seconds() * 1000 / float64(answers)
		out["postgres_cpu_ms_per"] = pg.Seconds() * 1000 / float64(answers)
		out["total_cpu_ms_per"] = (self + pg).Seconds() * 1000 / float64(answers)
	}
	return out
}
