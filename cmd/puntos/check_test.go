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
	out, err := puntosCLI(t, "check", "--database-url", db)
	if err != nil || !strings.Contains(out, "ledger check OK: 1 members, 1 postings, 1 lots") {
		t.Fatalf("check of a sound ledger: %v\n%s", err, out)
	}
	if _, err := pool.Exec(ctx, `UPDATE members SET available = available + 5`); err != nil {
		t.Fatal(err)
	}
	out, err = puntosCLI(t, "check", "--database-url", db)
	if err == nil || !strings.Contains(out, "BREACH 569001: cached available/held/pending 255/0/0; postings 250/0/0") {
		t.Fatalf("check of a balance 5 points off: %v\n%s", err, out)
	}
}
