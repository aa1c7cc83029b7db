package app

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStatusPollOthersFloodAttack10: while one caller polls transaction
// ids it never sent, as a client with a bug or a hostile one does, another
// caller's poll of its own command that core dead-lettered, which the same
// gateway answered 202 for, still says failed, and its poll of an id it
// never sent 404. (When the gateway bounded all callers' bus searches
// together, the flood took every slot and both were answered pending.)
func TestStatusPollOthersFloodAttack10(t *testing.T) {
	cfg, gw, c, web := gatewayAlone(t, 1)
	telcoThenNoCore(t, cfg, c)
	accrue := map[string]any{"type": "bill_paid", "amount": "10.00",
		"occurred_at": "2026-11-05T12:00:00Z"}

	// Answered 202 by this gateway, then set aside by a core that fails it.
	c.must(202, "POST", "/v1/programs/telco/members/M-1/events", "a10-dead", accrue)
	stop := failingCore(t, gw)
	awaitStatus(t, c, "a10-dead", "failed")
	stop()
	c.must(404, "GET", "/v1/commands/a10-never", "", nil)

	// A backlog: commands wait on the bus while no core runs.
	for b := range 8 {
		events := make([]map[string]any, 500)
		for i := range events {
			events[i] = map[string]any{"member": "M-1", "txn_id": fmt.Sprintf("a10-bl-%d-%d", b, i),
				"type": "bill_paid", "amount": "1.00", "occurred_at": "2026-11-05T12:00:00Z"}
		}
		c.must(202, "POST", "/v1/programs/telco/events/batches", fmt.Sprintf("a10-b-%d", b),
			map[string]any{"events": events})
	}

	// Another caller floods the gateway with polls of ids it never sent.
	var done atomic.Bool
	var wg sync.WaitGroup
	for g := range 120 {
		wg.Go(func() {
			for i := 0; !done.Load(); i++ {
				web.send("GET", fmt.Sprintf("/v1/commands/flood-%d-%d", g, i), "", nil)
			}
		})
	}
	defer func() { done.Store(true); wg.Wait() }()
	time.Sleep(1500 * time.Millisecond)

	var wrong []string
	for range 3 {
		if s := c.send("GET", "/v1/commands/a10-dead", "", nil); s.body["status"] != "failed" {
			wrong = append(wrong, "dead-lettered a10-dead: "+s.raw)
		}
		if s := c.send("GET", "/v1/commands/a10-never", "", nil); s.status != 404 {
			wrong = append(wrong, fmt.Sprintf("never sent a10-never: %d %s", s.status, s.raw))
		}
	}
	busy := lookups(t, c.base, "busy")
	done.Store(true)
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("while another caller polled unknown ids (%d polls answered busy), this "+
			"caller's polls were answered wrongly:\n%v", busy, wrong)
	}
}
