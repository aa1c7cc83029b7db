package app

import (
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// TestStatusOfUnknownCommand reads the status URL of commands in each
// state: waiting on the bus while no core runs (pending), applied (ok),
// and never sent, or sent by another caller (404 problem naming txn).
func TestStatusOfUnknownCommand(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.APIKeys = "billing=" + testKey + ",web=web-key-0123456789"
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg.NATSURL = url
	cfg.ResultWait = 300 * time.Millisecond
	migrate(t, cfg.DatabaseURL)
	gw := startApp(t, cfg, Roles{Gateway: true})
	c := &client{t: t, base: "http://" + gw.Addr(), key: testKey}
	web := &client{t: t, base: c.base, key: "web-key-0123456789"}

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
