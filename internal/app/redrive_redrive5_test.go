package app

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// An operator discards the letter of a command (the tool allows it for a
// command); the caller, never told, retries with the same Idempotency-Key
// and the same request within the day. The bus drops the retry as a
// duplicate of the first copy: the caller must not be told 202 Accepted
// for a command that will never be applied. The discard leaves a mark that
// keeps the command's status failed and answers the retry as set aside.
func TestRedrive5DiscardThenCallerRetryIsNotSilentlyLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, gw, c, _ := deadGateway(t)
	telcoThenNoCore(t, cfg, c)
	ev := map[string]any{"type": "bill_paid", "amount": "10.00",
		"occurred_at": "2026-11-05T12:00:00Z"}
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev)
	stop := failingCore(t, gw)
	awaitStatus(t, c, "acc-1", "failed")
	seqs := deadSeqs(t, gw, 1)
	stop()
	if _, err := gw.Bus.Discard(ctx, seqs["acc-1"]); err != nil {
		t.Fatal(err)
	}
	if s := c.must(200, "GET", "/v1/commands/acc-1", "", nil); s.body["status"] != "failed" {
		t.Fatalf("status after the discard: %s, want failed (the command was set aside "+
			"for good)", s.raw)
	}
	if dead, _ := gw.Bus.DeadLetters(ctx, 10); len(dead) != 0 {
		t.Fatalf("dead letters listed after the discard: %+v", dead)
	}

	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	r := c.send("POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev)
	if r.status != 500 || r.body["kind"] != "internal" ||
		!strings.Contains(fmt.Sprint(r.body["detail"]), "set it aside") {
		t.Fatalf("caller's retry after the discard: %d %s, want the 500 problem saying it "+
			"was set aside (the bus drops it as a duplicate; nothing will apply it)",
			r.status, r.raw)
	}
	time.Sleep(500 * time.Millisecond)
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if jnum(t, b, "balance.available") != 0 {
		t.Fatalf("balance after a discarded accrual's retry: %s, want nothing credited", b.raw)
	}
}
