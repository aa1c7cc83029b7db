package app

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Attacks on the status URL's answer for dead-lettered commands
// (GET /v1/commands/{txn}: failed).

// A command core refuses and dead-letters (an unknown member: the refusal
// is stored in the ledger and the command set aside) is in the ledger and
// in the dead-letter stream: its status is the ledger's refusal, not
// failed.
func TestStatusAttackRefusedAndDeadLetteredIsRejected(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.APIKeys = "billing=" + testKey + ",web=web-key-0123456789"
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	web := &client{t: t, base: c.base, key: "web-key-0123456789"}
	setupProgram(c)
	c.must(404, "POST", "/v1/programs/telco/members/GHOST-9/events", "ghost-9",
		map[string]any{"type": "bill_paid", "amount": "10.00"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		dead, _ := a.Bus.DeadLetters(context.Background(), 10)
		if len(dead) == 1 && dead[0].TxnID == "ghost-9" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters %+v, want ghost-9", dead)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s := c.must(200, "GET", "/v1/commands/ghost-9", "", nil)
	e, _ := s.body["error"].(map[string]any)
	if s.body["status"] != "rejected" || e["kind"] != "not_found" || e["field"] != "member" {
		t.Fatalf("status of a refused, dead-lettered command: %s, want rejected (not_found, "+
			"member)", s.raw)
	}
	if r := web.must(404, "GET", "/v1/commands/ghost-9", "", nil); r.body["field"] != "txn" {
		t.Fatalf("another caller's refused id: %s, want 404 naming txn", r.raw)
	}
}

// A caller whose command was dead-lettered (status failed) sends it again,
// the same request with the same Idempotency-Key, within the bus's day of
// duplicate detection, alone and through the batch route. The bus drops
// each as a retry and no result will come for it: the write answers what
// the status URL says, failed (500, kind internal, set aside), at once
// rather than 202 after the wait; the status stays failed and nothing is
// dead-lettered twice.
func TestStatusAttackResendOfDeadLetteredCommandStaysFailed(t *testing.T) {
	t.Parallel()
	cfg, gw, c, _ := deadGateway(t)
	telcoThenNoCore(t, cfg, c)

	// Core fails: an accrual sent alone and one sent in a batch are
	// dead-lettered.
	event := map[string]any{"type": "bill_paid", "amount": "10.00",
		"occurred_at": "2026-11-05T12:00:00Z"}
	batchOf := func(txn string) map[string]any {
		ev := map[string]any{"member": "M-1", "txn_id": txn}
		for k, v := range event {
			ev[k] = v
		}
		return map[string]any{"events": []map[string]any{ev}}
	}
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", event)
	r := c.send("POST", "/v1/programs/telco/events/batches", "", batchOf("acc-2"))
	if r.status != 202 && r.status != 200 {
		t.Fatalf("batch answered %d %s", r.status, r.raw)
	}
	stop := failingCore(t, gw)
	awaitStatus(t, c, "acc-1", "failed")
	awaitStatus(t, c, "acc-2", "failed")
	stop()

	r = c.must(500, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", event)
	if r.body["kind"] != "internal" || !strings.Contains(fmt.Sprint(r.body["detail"]),
		"set it aside") || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("resend answered %s, want a 500 problem saying it was set aside", r.raw)
	}
	for _, txn := range []string{"acc-1", "acc-2"} {
		r = c.send("POST", "/v1/programs/telco/events/batches", "", batchOf(txn))
		items, _ := r.body["items"].([]any)
		if len(items) != 1 {
			t.Fatalf("batch resend of %s answered %d %s", txn, r.status, r.raw)
		}
		it, _ := items[0].(map[string]any)
		e, _ := it["error"].(map[string]any)
		if jnum(t, r, "failed") != 1 || fmt.Sprint(it["status"]) != "500" ||
			e["kind"] != "internal" || !strings.Contains(fmt.Sprint(e), "set it aside") {
			t.Fatalf("batch resend of %s answered %d %s, want its item failed as set aside",
				txn, r.status, r.raw)
		}
	}
	for _, txn := range []string{"acc-1", "acc-2"} {
		if s := c.must(200, "GET", "/v1/commands/"+txn, "", nil); s.body["status"] != "failed" {
			t.Fatalf("status of %s after the resends: %s, want failed", txn, s.raw)
		}
	}
	if dead, err := gw.Bus.DeadLetters(context.Background(), 10); err != nil || len(dead) != 2 {
		t.Fatalf("dead letters after the resends: %+v (%v), want acc-1 and acc-2 once",
			dead, err)
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if jnum(t, b, "balance.available") != 0 {
		t.Fatalf("balance after the resends: %s, want nothing credited", b.raw)
	}
}

// The very same accrual, dead-lettered when it travelled alone, is sent
// again within the bus's day of duplicate detection through the batch
// route beside another event of the same member (one pack). A pack's
// commands are stored again, so core applies it this time: its status
// turns ok and the member holds both accruals, each once.
func TestStatusAttackResendInAPackWithinTheDay(t *testing.T) {
	t.Parallel()
	cfg, gw, c, _ := deadGateway(t)
	telcoThenNoCore(t, cfg, c)

	// Core fails: the accrual is dead-lettered, its status failed.
	event := map[string]any{"type": "bill_paid", "amount": "10.00",
		"occurred_at": "2026-11-05T12:00:00Z"}
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "acc-1", event)
	stop := failingCore(t, gw)
	awaitStatus(t, c, "acc-1", "failed")
	stop()

	// Core works again; the caller sends the same event again.
	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	events := []map[string]any{{"member": "M-1", "txn_id": "acc-1"}, {"member": "M-1",
		"txn_id": "acc-2"}}
	for _, ev := range events {
		for k, v := range event {
			ev[k] = v
		}
	}
	r := c.send("POST", "/v1/programs/telco/events/batches", "",
		map[string]any{"events": events})
	s := awaitStatus(t, c, "acc-1", "ok")
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if s.body["status"] != "ok" || jnum(t, b, "balance.available") != 20 {
		t.Fatalf("the same command sent again in a pack: batch %d %s; status %s; balance "+
			"%s; want it applied once beside acc-2 (20 points)", r.status, r.raw, s.raw, b.raw)
	}
}

// The failed answer of the status URL says what the OpenAPI document says:
// status failed, the caller's txn_id, an error of kind internal that says
// nothing changed, and no other field than CommandStatus has.
func TestStatusAttackFailedAnswerShape(t *testing.T) {
	t.Parallel()
	_, gw, c, web := deadGateway(t)
	c.must(202, "PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco"})
	failingCore(t, gw)
	s := awaitStatus(t, c, "prog-1", "failed")
	allowed := map[string]bool{"status": true, "command_id": true, "source": true,
		"txn_id": true, "kind": true, "replayed": true, "error": true, "data": true}
	for k := range s.body {
		if !allowed[k] {
			t.Errorf("failed status has field %q, not in CommandStatus: %s", k, s.raw)
		}
	}
	e, _ := s.body["error"].(map[string]any)
	if s.body["txn_id"] != "prog-1" || e["kind"] != "internal" ||
		!strings.Contains(fmt.Sprint(e["message"]), "nothing changed") ||
		!strings.HasPrefix(s.header.Get("Content-Type"), "application/json") {
		t.Fatalf("failed status: %s %v", s.raw, s.header)
	}
	// The same id from another caller, and an id never sent: 404.
	for _, who := range []*client{web, c} {
		txn := "prog-1"
		if who == c {
			txn = "prog-2"
		}
		if r := who.must(404, "GET", "/v1/commands/"+txn, "", nil); r.body["field"] != "txn" {
			t.Fatalf("status of %s: %s, want 404 naming txn", txn, r.raw)
		}
	}
}
