package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// TestStatusOfUnknownCommand reads the status URL of commands in each
// state: waiting on the bus while no core runs (pending), applied (ok),
// and never sent, or sent by another caller (404 problem naming txn).
func TestStatusOfUnknownCommand(t *testing.T) {
	t.Parallel()
	cfg, _, c, web := gatewayAlone(t, 0)

	// An id no caller could have sent is refused before any lookup.
	for _, bad := range []string{"%00", "%ff", strings.Repeat("x", 300)} {
		r := c.must(400, "GET", "/v1/commands/"+bad, "", nil)
		if r.body["field"] != "txn" {
			t.Fatalf("status of %q: %s, want a problem naming txn", bad, r.raw)
		}
	}

	unknown := func(who *client, txn string) {
		t.Helper()
		r := who.must(404, "GET", "/v1/commands/"+txn, "", nil)
		if r.header.Get("Content-Type") != "application/problem+json" ||
			r.body["kind"] != "not_found" || r.body["field"] != "txn" {
			t.Fatalf("status of %s: %s, want a not_found problem naming txn", txn, r.raw)
		}
	}
	c.must(202, "PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco"})
	if s := c.must(200, "GET", "/v1/commands/prog-1", "", nil); s.body["status"] != "pending" {
		t.Fatalf("status while waiting on the bus: %s", s.raw)
	}
	unknown(c, "never-sent")
	unknown(web, "prog-1") // another caller's id is not this caller's

	// Core applies it; the status turns ok, the unknown id stays unknown.
	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := c.must(200, "GET", "/v1/commands/prog-1", "", nil)
		if s.body["status"] == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after core ran: %s", s.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	unknown(c, "never-sent")
}

// TestStatusOfDeadLetteredCommand reads the status URL of a command that
// core failed to apply as many times as it tries: the bus sets it aside in
// the dead-letter stream and the ledger has no result for it, so it is
// failed, not pending for ever; another caller still gets 404 for its id.
func TestStatusOfDeadLetteredCommand(t *testing.T) {
	t.Parallel()
	_, gw, c, web := deadGateway(t) // MaxDeliver 1, no core
	c.must(202, "PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco"})
	failingCore(t, gw)
	s := awaitStatus(t, c, "prog-1", "failed")
	e, _ := s.body["error"].(map[string]any)
	if s.body["txn_id"] != "prog-1" || e["kind"] != "internal" ||
		!strings.Contains(fmt.Sprint(e["message"]), "nothing changed") {
		t.Fatalf("status of a dead-lettered command: %s", s.raw)
	}
	dead, err := gw.Bus.DeadLetters(context.Background(), 10)
	if err != nil || len(dead) != 1 || dead[0].TxnID != "prog-1" {
		t.Fatalf("dead letters %+v (%v), want prog-1 alone", dead, err)
	}
	r := web.must(404, "GET", "/v1/commands/prog-1", "", nil)
	if r.body["field"] != "txn" {
		t.Fatalf("another caller's dead-lettered id: %s, want 404 naming txn", r.raw)
	}
}

// failingCore consumes every partition of a's bus with a handler that fails
// every batch; stop ends it and waits until it has stopped.
func failingCore(t *testing.T, a *App) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p := range a.Bus.Partitions() {
		wg.Go(func() {
			_ = a.Bus.Consume(ctx, p, 10, 100*time.Millisecond,
				func(context.Context, []*natsbus.Delivery) error {
					return errors.New("ledger unreachable")
				})
		})
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// awaitStatus polls the status URL of txn until its status is want; any
// other status than pending or want fails the test.
func awaitStatus(t *testing.T, c *client, txn, want string) reply {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := c.must(200, "GET", "/v1/commands/"+txn, "", nil)
		if s.body["status"] == want {
			return s
		}
		if s.body["status"] != "pending" || time.Now().After(deadline) {
			t.Fatalf("status of %s: %s, want pending then %s", txn, s.raw, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// gatewayAlone is a gateway with no core, on an embedded bus of its own,
// with maxDeliver deliveries of a command (0: the default); the second
// client is another caller.
func gatewayAlone(t *testing.T, maxDeliver int) (*Config, *App, *client, *client) {
	t.Helper()
	cfg := testConfig(t)
	cfg.APIKeys = "billing=" + testKey + ",web=web-key-0123456789"
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg.NATSURL = url
	cfg.ResultWait = 300 * time.Millisecond
	if maxDeliver > 0 {
		cfg.MaxDeliver = maxDeliver
	}
	migrate(t, cfg.DatabaseURL)
	gw := startApp(t, cfg, Roles{Gateway: true})
	c := &client{t: t, base: "http://" + gw.Addr(), key: testKey}
	web := &client{t: t, base: c.base, key: "web-key-0123456789"}
	return cfg, gw, c, web
}

// telcoThenNoCore sets up program telco (one point per dollar) and member
// M-1 with a core of its own on cfg's bus, then stops that core: the
// gateway runs on without one.
func telcoThenNoCore(t *testing.T, cfg *Config, c *client) {
	t.Helper()
	cfg1 := *cfg
	core1 := startApp(t, &cfg1, Roles{Core: true})
	// The gateway waits only a moment for a result: on a busy machine the
	// new core answers later, and the write is answered 202 first.
	telcoApplied(t, c)
	applied(t, c, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "M-1", "channel": "web"})
	b := c.must(200, "GET", "/v1/programs/telco/members/M-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 0 {
		t.Fatalf("M-1 just enrolled holds %d points, want 0: %s", got, b.raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := core1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// applied sends a write that must be applied: answered 201, or 202 when
// the gateway's result wait ran out first (a slow core), in which case its
// status URL is polled until the ledger has answered. It returns the
// ledger's answer, and fails the test unless that answer is ok.
func applied(t *testing.T, c *client, method, path, txn string, body any) reply {
	t.Helper()
	r := c.send(method, path, txn, body)
	if r.status == 202 {
		loc := r.header.Get("Location")
		if !strings.HasPrefix(loc, "/v1/commands/"+txn) {
			t.Fatalf("%s %s: 202 with Location %q: %s", method, path, loc, r.raw)
		}
		for deadline := time.Now().Add(60 * time.Second); ; {
			r = c.must(200, "GET", loc, "", nil)
			if r.body["status"] != "pending" || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	} else if r.status != 201 {
		t.Fatalf("%s %s: status %d, want 201 (or 202, then ok): %s", method, path, r.status,
			r.raw)
	}
	if r.body["status"] != "ok" || r.body["txn_id"] != txn {
		t.Fatalf("%s %s (%s): the ledger answered %s, want ok", method, path, txn, r.raw)
	}
	return r
}

// telcoApplied creates program telco as setupProgram does, on a gateway
// whose result wait may run out before core answers.
func telcoApplied(t *testing.T, c *client) {
	t.Helper()
	applied(t, c, "PUT", "/v1/programs/telco", "prog-1", map[string]any{
		"name": "Telco", "currency": "USD", "points_per_unit": "1",
		"expiry_unit": "months", "expiry_length": 24, "expiry_round": "month"})
}

// deadGateway is gatewayAlone with one delivery of a command: a core that
// fails it once dead-letters it.
func deadGateway(t *testing.T) (*Config, *App, *client, *client) {
	t.Helper()
	return gatewayAlone(t, 1)
}
