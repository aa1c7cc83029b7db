package app

import (
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// Two different requests sent under one Idempotency-Key while core is away
// are both answered 202. Once core has applied the first, the status URL
// of each tells its own fate: the first ok, the second a conflict that was
// never applied, rather than the first's result. The bare URL still
// answers with what is stored under the id, and a malformed request digest
// is refused, naming the parameter.
func TestStatusURLNamesTheRequest(t *testing.T) {
	cfg := testConfig(t)
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

	first := c.must(202, "PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco"})
	second := c.must(202, "PUT", "/v1/programs/telco", "prog-1",
		map[string]any{"name": "Telco Chile"})
	firstURL, secondURL := first.header.Get("Location"), second.header.Get("Location")
	if firstURL == secondURL || !strings.HasPrefix(secondURL, "/v1/commands/prog-1?request=") {
		t.Fatalf("status URLs %q and %q, want one per request", firstURL, secondURL)
	}
	for _, u := range []string{firstURL, secondURL} {
		if s := c.must(200, "GET", u, "", nil); s.body["status"] != "pending" {
			t.Fatalf("%s before core runs: %s", u, s.raw)
		}
	}

	coreCfg := *cfg
	startApp(t, &coreCfg, Roles{Core: true})
	deadline := time.Now().Add(15 * time.Second)
	var s reply
	for time.Now().Before(deadline) {
		if s = c.must(200, "GET", firstURL, "", nil); s.body["status"] == "ok" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.body["status"] != "ok" {
		t.Fatalf("the first request after core ran: %s", s.raw)
	}
	// Core has taken both in order by now: the second came after the first
	// on the same partition.
	for time.Now().Before(deadline) {
		if s = c.send("GET", secondURL, "", nil); s.status != 200 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.status != 409 || s.body["field"] != "txn_id" ||
		!strings.Contains(s.raw, "not applied") {
		t.Fatalf("the second request's status: %d %s, want 409 on txn_id saying it was "+
			"not applied", s.status, s.raw)
	}
	if p := c.must(200, "GET", "/v1/programs/telco", "", nil); p.body["name"] != "Telco" {
		t.Fatalf("the program after both: %s, want the first request's name", p.raw)
	}
	if b := c.must(200, "GET", "/v1/commands/prog-1", "", nil); b.body["status"] != "ok" {
		t.Fatalf("the bare status URL: %s, want what is stored under the id", b.raw)
	}
	bad := c.send("GET", "/v1/commands/prog-1?request=XYZ", "", nil)
	if bad.status != 400 || bad.body["field"] != "request" {
		t.Fatalf("a malformed request digest: %d %s, want 400 naming request", bad.status,
			bad.raw)
	}
}
