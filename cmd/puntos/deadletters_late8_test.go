package main

import (
	"context"
	"regexp"
	"testing"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// The alert on puntos_dead_letters_waiting{kind="failed"} sends the
// operator to 'puntos deadletters list': each letter must say whether it
// failed (needs the operator) or was refused by the ledger (answered).
func TestLate8ListTellsRefusedFromFailed(t *testing.T) {
	ctx := context.Background()
	b, url := deadLetterBus(t)
	letter := func(txn string, seq uint64) *natsbus.Delivery { return deadDelivery(t, txn, seq) }
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
		if !regexp.MustCompile(`(?m)^\d+ .* ` + as + ` +telco +m-1 +billing +` + txn + ` `).MatchString(out) {
			t.Errorf("list does not show %s as %s:\n%s", txn, as, out)
		}
	}
}
