package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"regexp"
	"testing"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// The alert on puntos_dead_letters_waiting{kind="failed"} sends the
// operator to 'puntos deadletters list': each letter must say whether it
// failed (needs the operator) or was refused by the ledger (answered).
func TestLate8ListTellsRefusedFromFailed(t *testing.T) {
	ctx := context.Background()
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b, err := natsbus.Connect(ctx, natsbus.Config{URL: url, Partitions: 4},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	letter := func(txn string, seq uint64) *natsbus.Delivery {
		cmd := bus.Command{ID: uuid.NewString(), Kind: "points.accrue", Source: "billing",
			TxnID: txn, Program: "telco", Member: "m-1", Payload: []byte(`{}`)}
		cmd.Seal()
		raw, err := json.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return &natsbus.Delivery{Command: cmd, Raw: raw, Seq: seq}
	}
	if err := b.DeadLetterRefused(ctx, letter("ref-1", 1), "not_found: member"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeadLetter(ctx, letter("fail-1", 2), "max deliveries: boom"); err != nil {
		t.Fatal(err)
	}
	out, err := puntosCLI(t, "deadletters", "list", "--nats-url", url)
	if err != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	for txn, as := range map[string]string{"ref-1": "refused", "fail-1": "failed"} {
		if !regexp.MustCompile(`(?m)^\d+ .* ` + as + ` +billing +` + txn + ` `).MatchString(out) {
			t.Errorf("list does not show %s as %s:\n%s", txn, as, out)
		}
	}
}
