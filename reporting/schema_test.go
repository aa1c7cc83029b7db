package reporting_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// These tests run on a real ClickHouse, each in a database of its own; they
// fail when it is unreachable (run `make services`).

func TestMigrationsAreNumberedAndSplit(t *testing.T) {
	all, err := reporting.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 || all[0].Version != 1 {
		t.Fatalf("migrations %+v; want the first to be version 1", all)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Version <= all[i-1].Version {
			t.Errorf("migration %s comes after %s", all[i].Name, all[i-1].Name)
		}
	}
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	conn, _ := chtest.Database(t)
	ctx := t.Context()

	// Three at once, then once more: all succeed, and the schema is whole.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = reporting.Migrate(ctx, conn) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	if err := reporting.Migrate(ctx, conn); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}

	all, _ := reporting.Migrations()
	v, err := reporting.SchemaVersion(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if want := all[len(all)-1].Version; v != want {
		t.Errorf("schema version %d; want %d", v, want)
	}

	// The columns of ledger_events, in order.
	rows, err := conn.Query(ctx, `SELECT name, type FROM system.columns
		WHERE database = currentDatabase() AND table = 'ledger_events'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		got = append(got, name+" "+typ)
	}
	want := []string{"event_id String", "kind String", "program String", "member String",
		"member_ref String", "points Int64", "occurred_at DateTime('UTC')",
		"recorded_at DateTime('UTC')", "source String", "txn_id String",
		"rule_version String", "partner String", "channel String", "posting_id Int64",
		"inserted_at DateTime('UTC')", "tier String"}
	if len(got) != len(want) {
		t.Fatalf("columns %q; want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("column %d is %q; want %q", i, got[i], want[i])
		}
	}
}

func TestCheckEvent(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	good := bus.Event{ID: uuid.NewString(), Kind: "accrual", Program: "p", OccurredAt: at,
		RecordedAt: at}
	tests := []struct {
		name string
		edit func(*bus.Event)
		ok   bool
	}{
		{"complete", func(*bus.Event) {}, true},
		{"no id", func(e *bus.Event) { e.ID = "" }, false},
		{"no kind", func(e *bus.Event) { e.Kind = "" }, false},
		{"no program", func(e *bus.Event) { e.Program = "" }, false},
		{"zero occurred_at", func(e *bus.Event) { e.OccurredAt = time.Time{} }, false},
		{"zero recorded_at", func(e *bus.Event) { e.RecordedAt = time.Time{} }, false},
		{"epoch", func(e *bus.Event) { e.OccurredAt = time.Unix(0, 0) }, true},
		{"last second", func(e *bus.Event) { e.OccurredAt = time.Unix(1<<32-1, 0) }, true},
		{"after 2106", func(e *bus.Event) { e.OccurredAt = time.Unix(1<<32, 0) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := good
			tt.edit(&ev)
			err := reporting.CheckEvent(ev)
			if tt.ok && err != nil {
				t.Errorf("CheckEvent: %v; want nil", err)
			}
			if !tt.ok && !errors.Is(err, reporting.ErrUnstorable) {
				t.Errorf("CheckEvent: %v; want ErrUnstorable", err)
			}
		})
	}
}

func TestInsertRefusesTheWholeBatchForOneBadEvent(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	evs := []bus.Event{
		event("p1", "accrual", 10, at),
		{ID: uuid.NewString(), Kind: "accrual", Program: "p1", Points: 5, RecordedAt: at},
	}
	err := reporting.InsertEvents(t.Context(), conn, evs)
	if !errors.Is(err, reporting.ErrUnstorable) {
		t.Fatalf("InsertEvents: %v; want ErrUnstorable", err)
	}
	if n := rawCount(t, conn); n != 0 {
		t.Errorf("%d rows stored; want 0", n)
	}
}
