package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// puntos check passes a ledger that adds up, naming what it read, and
// fails naming the member whose cached balance no longer equals its
// postings and lots.
func TestCheckCommand(t *testing.T) {
	ctx := context.Background()
	db := testenv.Database(t)
	pool, err := postgres.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := postgres.Migrate(ctx, pool, log); err != nil {
		t.Fatal(err)
	}
	l := postgres.New(pool, log)
	now := time.Now().UTC()
	for _, c := range []struct {
		kind, member string
		payload      any
	}{
		{core.KindProgramUpsert, "", map[string]any{"name": "Telco", "currency": "CLP",
			"points_per_unit": "1"}},
		{core.KindEnroll, "569001", core.Enroll{Channel: "web"}},
		{core.KindCredit, "569001", core.Credit{Points: 250, Reason: "welcome"}},
		{core.KindAuthorize, "569001", core.Authorize{Points: 50}},
	} {
		body, _ := json.Marshal(c.payload)
		cmd := bus.Command{ID: uuid.NewString(), Kind: c.kind, Source: "test",
			TxnID: uuid.NewString(), Program: "telco", Member: c.member, Payload: body}
		cmd.Seal()
		cmd.OccurredAt, cmd.ReceivedAt = now, now
		out, err := l.ApplyBatch(ctx, []bus.Command{cmd})
		if err != nil || out[0].Result.Status != bus.StatusOK {
			t.Fatalf("%s: %v %+v", c.kind, err, out)
		}
	}
	out, err := puntosCLI(t, "migrate", "--database-url", db)
	if err != nil || !strings.Contains(out, "database up to date: ") {
		t.Fatalf("migrate of a migrated database: %v\n%s", err, out)
	}
	out, err = puntosCLI(t, "check", "--database-url", db)
	if err != nil || !strings.Contains(out, "ledger check OK: 1 members, 2 postings, 1 lots") {
		t.Fatalf("check of a sound ledger: %v\n%s", err, out)
	}
	// A hold that reserves more than the member's held points.
	if _, err := pool.Exec(ctx, `UPDATE holds SET amount = amount + 10`); err != nil {
		t.Fatal(err)
	}
	out, err = puntosCLI(t, "check", "--database-url", db)
	if err == nil || !strings.Contains(out, "BREACH telco/569001: cached available/held/pending "+
		"200/50/0; postings 200/50/0; lots remaining 250, held 50, pending 0; open holds 60") {
		t.Fatalf("check of a hold 10 points off: %v\n%s", err, out)
	}
	if _, err := pool.Exec(ctx, `UPDATE holds SET amount = amount - 10`); err != nil {
		t.Fatal(err)
	}
	// A cached balance 5 points off its postings and lots.
	if _, err := pool.Exec(ctx, `UPDATE members SET available = available + 5`); err != nil {
		t.Fatal(err)
	}
	out, err = puntosCLI(t, "check", "--database-url", db)
	if err == nil || !strings.Contains(out, "BREACH telco/569001: cached available/held/pending "+
		"205/50/0; postings 200/50/0") ||
		!strings.Contains(err.Error(), "found 1 breach") {
		t.Fatalf("check of a balance 5 points off: %v\n%s", err, out)
	}
}
