package app

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A caller's accrual (10.00) is set aside; the caller, told it failed,
// sends a corrected request under the same Idempotency-Key (12.00), which
// is set aside too (the ledger still fails). The operator discards the
// first letter, the request its caller replaced ('discard ... a command its
// caller has since replaced', says the tool). The corrected request's
// letter is still listed: the caller's retry of it, dropped by the bus as a
// duplicate, must be answered as set aside, not 202 Accepted for a command
// that nothing will apply.
func TestLate6DiscardReplacedRequestThenRetryOfCorrection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, gw, c, _ := deadGateway(t)
	telcoThenNoCore(t, cfg, c)
	ev := func(amount string) map[string]any {
		return map[string]any{"type": "bill_paid", "amount": amount,
			"occurred_at": "2026-11-05T12:00:00Z"}
	}
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev("10.00"))
	stop := failingCore(t, gw)
	awaitStatus(t, c, "acc-1", "failed")
	deadSeqs(t, gw, 1)
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev("12.00"))
	var first, second uint64
	for deadline := time.Now().Add(15 * time.Second); second == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the corrected request was not set aside")
		}
		time.Sleep(50 * time.Millisecond)
		if dead, _ := gw.Bus.DeadLetters(ctx, 10); len(dead) == 2 {
			first, second = dead[0].Seq, dead[1].Seq
		}
	}
	stop()
	if r := c.send("POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev("12.00")); r.status != 500 {
		t.Fatalf("retry before the discard: %d %s, want 500 set aside", r.status, r.raw)
	}
	if _, err := gw.Bus.Discard(ctx, first); err != nil {
		t.Fatal(err)
	}
	if dead, _ := gw.Bus.DeadLetters(ctx, 10); len(dead) != 1 || dead[0].Seq != second {
		t.Fatalf("listed after the discard: %+v", dead)
	}
	r := c.send("POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev("12.00"))
	if r.status != 500 || !strings.Contains(fmt.Sprint(r.body["detail"]), "set it aside") {
		t.Fatalf("retry of the corrected request, whose letter is still listed: %d %s; "+
			"want the 500 saying it was set aside", r.status, r.raw)
	}
}
