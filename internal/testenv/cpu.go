package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// BackendCPU is the CPU time used so far by the PostgreSQL backends
// connected to pool's database (SampleCPU). Benchmarks take the difference
// of two readings; it is zero where PostgreSQL runs on another machine.
func BackendCPU(tb testing.TB, pool *pgxpool.Pool) time.Duration {
	tb.Helper()
	var total time.Duration
	for _, d := range SampleCPU(context.Background(), pool).Backends {
		total += d
	}
	return total
}
