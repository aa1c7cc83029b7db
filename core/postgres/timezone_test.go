package postgres

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// A PostgreSQL server (or database, or role) whose TimeZone is not UTC, as
// initdb leaves it on a machine set to local time, is one the ledger must
// work on. The program's rate history once came as JSON timestamps, which
// PostgreSQL writes in the session's zone: the first rate's 0001-01-01
// carried the zone's local mean time offset ("+00:53:28" in Berlin,
// "-04:56:02 BC" in New York), which no RFC 3339 reader takes, and every
// command of every program failed. A late accrual still earns the rate of
// its day there.
func TestLedgerOnANonUTCServer(t *testing.T) {
	ctx := context.Background()
	for _, zone := range []string{"Europe/Berlin", "America/New_York"} {
		t.Run(zone, func(t *testing.T) {
			pool, err := Open(ctx, testenv.Database(t)+"&timezone="+zone)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			log := slog.New(slog.DiscardHandler)
			if err := Migrate(ctx, pool, log); err != nil {
				t.Fatal(err)
			}
			var got string
			if err := pool.QueryRow(ctx, `SHOW timezone`).Scan(&got); err != nil ||
				got != zone {
				t.Fatalf("session zone %q %v; want %s", got, err, zone)
			}
			l := New(pool, log)
			f := &fixture{t: t, l: l, prog: "tz" + time.Now().Format("150405"),
				now: time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)}
			l.Clock = func() time.Time {
				f.mu.Lock()
				defer f.mu.Unlock()
				return f.now
			}
			r := f.do(core.KindProgramUpsert, "", f.txn(), core.Program{Name: "Test",
				PointsPerUnit: "1"})
			if r.Status != bus.StatusOK {
				t.Fatalf("create program: %+v", r.Error)
			}
			r = f.do(core.KindEnroll, "ana", f.txn(), core.Enroll{Channel: "test"})
			if r.Status != bus.StatusOK {
				t.Fatalf("enroll on a server in %s: %s %+v", zone, r.Status, r.Error)
			}
			f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "bill_paid", Amount: "10"})
			f.setNow(f.now.Add(time.Hour))
			f.ok(core.KindProgramUpsert, "", core.Program{Name: "Test", PointsPerUnit: "3"})
			c := f.command(core.KindAccrue, "ana", f.txn(), core.Accrue{EventType: "bill_paid",
				Amount: "10"})
			c.OccurredAt = f.now.Add(-30 * time.Minute)
			c.Seal()
			outcomeOf(t, f.apply(c))
			f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "bill_paid", Amount: "10"})
			f.wantBalance("ana", 10+10+30, 0, 0)
		})
	}
}
