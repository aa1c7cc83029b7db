package app

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/core/postgres"
)

// waitAccrualsApplied waits up to within for want accrual commands to be
// applied, and fails the test if they are not.
func waitAccrualsApplied(t *testing.T, pool *pgxpool.Pool, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var applied int
	for time.Now().Before(deadline) {
		_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM commands
			WHERE kind = 'points.accrue' AND status = 'ok'`).Scan(&applied)
		if applied == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%d of %d accruals applied", applied, want)
}

// checkAccrualsPostedOnce checks that the ledger holds exactly want accrual
// postings, none for the same transaction twice, that members hold want x
// each points in all, and that the ledger's invariants hold.
func checkAccrualsPostedOnce(t *testing.T, pool *pgxpool.Pool, want int, each int64) {
	t.Helper()
	var postings, doubled int
	var total int64
	ctx := context.Background()
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM postings WHERE kind = 'accrual'`).Scan(&postings)
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT txn_id FROM postings
		WHERE kind = 'accrual' GROUP BY source, txn_id HAVING count(*) > 1) d`).Scan(&doubled)
	_ = pool.QueryRow(ctx, `SELECT coalesce(sum(available), 0) FROM members`).Scan(&total)
	if postings != want || doubled != 0 || total != int64(want)*each {
		t.Fatalf("postings %d (want %d), doubled %d, total points %d (want %d)", postings, want,
			doubled, total, int64(want)*each)
	}
	v, err := postgres.New(pool, slog.New(slog.DiscardHandler)).Check(ctx)
	if err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %v %+v", err, v)
	}
}
