package app

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// deadSeqs waits until the dead-letter stream holds want letters and
// returns their sequences by transaction id.
func deadSeqs(t *testing.T, a *App, want int) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		dead, err := a.Bus.DeadLetters(context.Background(), 100)
		if err == nil && len(dead) == want {
			seqs := map[string]uint64{}
			for _, dl := range dead {
				seqs[dl.TxnID] = dl.Seq
			}
			return seqs
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v (%v), want %d", dead, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two accruals fail every delivery (core's fault) and are set aside. The
// operator re-drives one while no core runs: its status says pending again,
// not failed, and the other stays failed. Core comes back and applies it
// once; re-driving the same letter again finds nothing, the caller's retry
// is a replay, and the member holds that accrual's points only.
func TestRedriveAppliesSetAsideCommandOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, gw, c, _ := deadGateway(t)
	telcoThenNoCore(t, cfg, c)

	ev := func(amount string) map[string]any {
		return map[string]any{"type": "bill_paid", "amount": amount,
			"occurred_at": "2026-11-05T12:00:00Z"}
	}
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev("10.00"))
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-2", ev("7.00"))
	stop := failingCore(t, gw)
	awaitStatus(t, c, "acc-1", "failed")
	awaitStatus(t, c, "acc-2", "failed")
	stop()
	seqs := deadSeqs(t, gw, 2)

	dl, again, err := gw.Bus.Redrive(ctx, seqs["acc-1"])
	if err != nil || again || dl.TxnID != "acc-1" || !strings.Contains(dl.Reason, "ledger unreachable") {
		t.Fatalf("redrive: %+v, %v", dl, err)
	}
	if s := c.must(200, "GET", "/v1/commands/acc-1", "", nil); s.body["status"] != "pending" {
		t.Fatalf("status of the re-driven accrual before core runs: %s, want pending", s.raw)
	}
	if s := c.must(200, "GET", "/v1/commands/acc-2", "", nil); s.body["status"] != "failed" {
		t.Fatalf("status of the accrual left aside: %s, want failed", s.raw)
	}
	if left := deadSeqs(t, gw, 1); left["acc-2"] != seqs["acc-2"] {
		t.Fatalf("dead letters after the re-drive: %v, want acc-2's alone", left)
	}

	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	awaitStatus(t, c, "acc-1", "ok")
	if _, _, err := gw.Bus.Redrive(ctx, seqs["acc-1"]); !errors.Is(err, natsbus.ErrNoDeadLetter) {
		t.Fatalf("second redrive of the same letter: %v, want ErrNoDeadLetter", err)
	}
	r := c.must(201, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", ev("10.00"))
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the caller's retry after the re-drive: %s, want a replay", r.raw)
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 10 {
		t.Fatalf("balance after the re-drive: %v, want 10 (acc-1 once, acc-2 still aside)", got)
	}
	if s := c.must(200, "GET", "/v1/commands/acc-2", "", nil); s.body["status"] != "failed" {
		t.Fatalf("status of the accrual left aside after core came back: %s", s.raw)
	}

	// The same request sent again by its caller and applied before the
	// operator re-drives its letter: the re-drive is answered as a replay.
	results, unsub, err := gw.Bus.SubscribeResult("billing", "acc-2")
	if err != nil {
		t.Fatal(err)
	}
	defer unsub()
	r = c.send("POST", "/v1/programs/telco/events/batches", "", map[string]any{
		"events": []map[string]any{{"member": "M-1", "txn_id": "acc-2", "type": "bill_paid",
			"amount": "7.00", "occurred_at": "2026-11-05T12:00:00Z"},
			{"member": "M-1", "txn_id": "acc-3", "type": "bill_paid", "amount": "1.00",
				"occurred_at": "2026-11-05T12:00:00Z"}}})
	// 202 when core takes longer than the gateway's short result wait (a
	// busy machine): the events are stored, and acc-2's result comes below.
	if (r.status != 200 && r.status != 202) || jnum(t, r, "failed") != 0 ||
		jnum(t, r, "refused") != 0 {
		t.Fatalf("the caller's batch: %d %s", r.status, r.raw)
	}
	select {
	case <-results: // the caller's own
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the caller's batch")
	}
	if _, _, err := gw.Bus.Redrive(ctx, seqs["acc-2"]); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-results:
		if !res.Replayed || res.Status != "ok" {
			t.Fatalf("answer to the late re-drive: %+v, want an ok replay", res)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no answer to the late re-drive")
	}
	b = c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 18 {
		t.Fatalf("balance: %v, want 18 (10 + 7 + 1, each once)", got)
	}
	deadSeqs(t, gw, 0)
}
