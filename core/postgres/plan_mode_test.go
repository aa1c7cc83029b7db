package postgres

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// A batch's transaction plans its statements generically; the setting
// stays in it. On a pool of one connection, after a batch that commits,
// one that PostgreSQL refuses half-way, one refused on a raced id and one
// whose context ends, the connection plans as configured again, and the
// ledger still reads and applies.
func TestGenericPlansStayInTheBatch(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(testDB(t).Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns, cfg.MinConns = 1, 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := newFixtureOn(t, New(pool, slog.New(slog.DiscardHandler)), core.Program{
		PointsPerUnit: "1"})
	mode := func(when string) {
		t.Helper()
		var m string
		if err := pool.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&m); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if m != "auto" {
			t.Fatalf("%s: plan_cache_mode %s on the pool, want auto", when, m)
		}
	}
	mode("before any batch")
	f.enroll("m1")
	f.ok(core.KindAccrue, "m1", core.Accrue{EventType: "buy", Amount: "12"})
	mode("after a batch that committed")

	// A channel PostgreSQL cannot store fails the transaction in its writes
	// (a reason with a NUL is refused before).
	bad := f.command(core.KindCredit, "m1", f.txn(), core.Credit{Points: 3, Reason: "ab"})
	bad.Channel = "a\x00b"
	bad.Seal()
	if _, err := f.l.ApplyBatch(ctx, []bus.Command{
		f.command(core.KindAccrue, "m1", f.txn(), core.Accrue{EventType: "buy", Amount: "1"}),
		bad}); err == nil {
		t.Fatal("a batch with a NUL in a reason committed")
	}
	mode("after a batch PostgreSQL refused")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f.l.ApplyBatch(cctx, []bus.Command{f.command(core.KindCredit, "m1", f.txn(),
		core.Credit{Points: 1, Reason: "never"})}); err == nil {
		t.Fatal("a batch with an ended context committed")
	}
	mode("after a batch whose context ended")

	f.wantBalance("m1", 12, 0, 0)
	f.ok(core.KindCredit, "m1", core.Credit{Points: 5, Reason: "after"})
	mode("after the ledger went on")
	f.wantBalance("m1", 17, 0, 0)
	f.check()
}
