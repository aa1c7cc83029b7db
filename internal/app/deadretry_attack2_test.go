package app

import (
	"fmt"
	"strings"
	"testing"
)

// Attacks on the answer to a retry the bus drops as a duplicate while the
// dead-letter stream holds a dead letter of the same (source, txn). The
// gateway answered 500 "set aside ... nothing changed" for any such retry
// in its first form; a later copy of the command (stored again in a pack,
// or a changed request under the same id) may be waiting on the bus, and
// the status URL then says pending. natsbus.Bus.SetAside now asks whether
// the very request was set aside and nothing of it waits.

// attack2Event is the accrual these tests send (10 points).
var attack2Event = map[string]any{"type": "bill_paid", "amount": "10.00",
	"occurred_at": "2026-11-05T12:00:00Z"}

// attack2DeadAccrual sets up program telco and member M-1 with a working
// core, stops it, sends acc-1 (10 points) alone and lets a failing core
// dead-letter it: its status is failed and the gateway runs without core.
func attack2DeadAccrual(t *testing.T, event map[string]any) (*Config, *App, *client, *client) {
	t.Helper()
	cfg, gw, c, web := deadGateway(t)
	telcoThenNoCore(t, cfg, c)
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", event)
	stop := failingCore(t, gw)
	awaitStatus(t, c, "acc-1", "failed")
	stop()
	return cfg, gw, c, web
}

// attack2Batch is a batch of attack2Event for M-1 under the given txn ids.
func attack2Batch(txns ...string) map[string]any {
	var events []map[string]any
	for _, txn := range txns {
		ev := map[string]any{"member": "M-1", "txn_id": txn}
		for k, v := range attack2Event {
			ev[k] = v
		}
		events = append(events, ev)
	}
	return map[string]any{"events": events}
}

// acc-1 was dead-lettered when it travelled alone. The caller sends
// it again in a batch beside acc-2 (one pack: stored again, waiting for
// core, status pending). It then retries acc-1 alone and as a one-event
// batch: both are the first message's id, so the bus drops them as
// duplicates. A copy of acc-1 waits on the bus and the status URL says
// pending, and core will apply it: the answer must be 202 (pending), as
// the status URL says, not "set aside ... nothing changed" (the first form
// said so, and the member was then credited the 10 points the caller was
// told were not).
func TestDeadRetryAttack2ResendWhileAnotherCopyWaits(t *testing.T) {
	t.Parallel()
	cfg, _, c, _ := attack2DeadAccrual(t, attack2Event)

	r := c.send("POST", "/v1/programs/telco/events/batches", "", attack2Batch("acc-1", "acc-2"))
	if r.status != 202 {
		t.Fatalf("the pack with acc-1 and acc-2 answered %d %s, want 202 (no core)",
			r.status, r.raw)
	}
	if s := c.must(200, "GET", "/v1/commands/acc-1", "", nil); s.body["status"] != "pending" {
		t.Fatalf("status of acc-1 with a copy waiting: %s, want pending", s.raw)
	}

	r = c.send("POST", "/v1/programs/telco/members/M-1/events", "acc-1", attack2Event)
	if r.status != 202 || strings.Contains(r.raw, "set it aside") {
		t.Errorf("single retry of acc-1 while a copy waits on the bus: %d %s; want 202 "+
			"pending (the status URL says pending), not 'set aside, nothing changed'",
			r.status, r.raw)
	}
	r = c.send("POST", "/v1/programs/telco/events/batches", "", attack2Batch("acc-1"))
	items, _ := r.body["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("batch retry of acc-1 answered %d %s", r.status, r.raw)
	}
	if it, _ := items[0].(map[string]any); fmt.Sprint(it["status"]) != "202" {
		t.Errorf("batch retry of acc-1 while a copy waits on the bus: item %v; want status "+
			"202 pending, not 500 'set aside, nothing changed'", it)
	}

	// Core comes back and applies the waiting copy.
	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	awaitStatus(t, c, "acc-1", "ok")
	awaitStatus(t, c, "acc-2", "ok")
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 20 {
		t.Fatalf("balance %d, want 20 (acc-1 and acc-2 once each)", got)
	}
}

// acc-1 (10.00) was dead-lettered. The caller sends a changed
// request under the same Idempotency-Key (25.00): a new message id, stored,
// waiting for core (202). Its retry is dropped as a duplicate; the dead
// letter of the first request has the same (source, txn), but it is
// another request and this one waits: 202 (the first form answered "set
// aside ... nothing changed"). Core then applies it: 25 points.
func TestDeadRetryAttack2ChangedRequestRetryIsNotSetAside(t *testing.T) {
	t.Parallel()
	cfg, _, c, _ := attack2DeadAccrual(t, attack2Event)
	changed := map[string]any{"type": "bill_paid", "amount": "25.00",
		"occurred_at": "2026-11-05T12:00:00Z"}
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", changed)
	if s := c.must(200, "GET", "/v1/commands/acc-1", "", nil); s.body["status"] != "pending" {
		t.Fatalf("status of acc-1 with the changed request waiting: %s, want pending", s.raw)
	}
	r := c.send("POST", "/v1/programs/telco/members/M-1/events", "acc-1", changed)
	if r.status != 202 || strings.Contains(r.raw, "set it aside") {
		t.Errorf("retry of the changed request while it waits on the bus: %d %s; want 202 "+
			"pending, not 'set aside, nothing changed'", r.status, r.raw)
	}
	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	awaitStatus(t, c, "acc-1", "ok")
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 25 {
		t.Fatalf("balance %d, want 25 (the changed request applied)", got)
	}
}

// Kept behaviour. After a dead-lettered command was stored again in a pack
// and applied, its retry alone (dropped by the bus as a duplicate) answers
// the ledger's result as a replay (201, Idempotent-Replayed), not "set
// aside", and credits nothing more.
func TestDeadRetryAttack2AppliedCopyAnswersReplay(t *testing.T) {
	t.Parallel()
	cfg, _, c, _ := attack2DeadAccrual(t, attack2Event)
	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	c.send("POST", "/v1/programs/telco/events/batches", "", attack2Batch("acc-1", "acc-2"))
	awaitStatus(t, c, "acc-1", "ok")
	for i := 0; i < 2; i++ {
		r := c.must(201, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", attack2Event)
		if r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry after the copy applied: %v %s, want a replay", r.header, r.raw)
		}
	}
	r := c.send("POST", "/v1/programs/telco/events/batches", "", attack2Batch("acc-1"))
	items, _ := r.body["items"].([]any)
	if it, _ := items[0].(map[string]any); len(items) != 1 || fmt.Sprint(it["status"]) != "201" {
		t.Fatalf("batch retry after the copy applied: %d %s, want item 201", r.status, r.raw)
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 20 {
		t.Fatalf("balance %d, want 20", got)
	}
}

// Kept behaviour. Another caller's command with the same transaction id as
// a dead-lettered one is its own: sent and retried while it waits, it
// answers 202, not "set aside"; the first caller's retry still answers set
// aside; a command never dead-lettered and still waiting answers 202 on
// retry. Core then applies the other caller's command once.
func TestDeadRetryAttack2OtherCallerSameTxnIsNotSetAside(t *testing.T) {
	t.Parallel()
	cfg, _, c, web := attack2DeadAccrual(t, attack2Event)
	for i := 0; i < 2; i++ {
		r := web.send("POST", "/v1/programs/telco/members/M-1/events", "acc-1", attack2Event)
		if r.status != 202 {
			t.Fatalf("another caller's acc-1, send %d: %d %s, want 202", i+1, r.status, r.raw)
		}
		r = c.send("POST", "/v1/programs/telco/members/M-1/events", "acc-9", attack2Event)
		if r.status != 202 {
			t.Fatalf("a waiting command never dead-lettered, send %d: %d %s, want 202",
				i+1, r.status, r.raw)
		}
	}
	r := c.must(500, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", attack2Event)
	if !strings.Contains(r.raw, "set it aside") {
		t.Fatalf("the first caller's retry: %s, want set aside", r.raw)
	}
	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	awaitStatus(t, web, "acc-1", "ok")
	awaitStatus(t, c, "acc-9", "ok")
	if s := c.must(200, "GET", "/v1/commands/acc-1", "", nil); s.body["status"] != "failed" {
		t.Fatalf("the first caller's acc-1 after the other's applied: %s, want failed", s.raw)
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 20 {
		t.Fatalf("balance %d, want 20 (web's acc-1 and acc-9, once each)", got)
	}
}
