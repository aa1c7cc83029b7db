package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// lookups reads puntos_status_lookups_total{how} off a process's /metrics;
// a counter not yet touched reads 0.
func lookups(t *testing.T, base, how string) int {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	m := regexp.MustCompile(`(?m)^puntos_status_lookups_total\{how="` + how + `"\} (\d+)$`).
		FindSubmatch(raw)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// While core is away and commands pile up on the bus, a status poll for a
// command the gateway answered 202 is answered pending without reading the
// backlog; a poll for anything else still reads it (a transaction id never
// sent is 404), as does a gateway that did not answer the command itself;
// and once core is back every polled command is answered by the ledger.
func TestStatusPollDuringBacklog(t *testing.T) {
	cfg := testConfig(t)
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	cfg.NATSURL = url
	cfg.ResultWait = 200 * time.Millisecond

	// A program and a member, then core goes away. With the short result
	// wait, a busy machine may answer them 202 first: applied polls on.
	withCore := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + withCore.Addr(), key: testKey}
	telcoApplied(t, c)
	applied(t, c, "POST", "/v1/programs/telco/members", "enroll-1",
		map[string]any{"customer_ref": "m-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	if err := withCore.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	cancel()

	gwCfg := *cfg
	gw := startApp(t, &gwCfg, Roles{Gateway: true})
	g := &client{t: t, base: "http://" + gw.Addr(), key: testKey}
	accrue := map[string]any{"type": "bill_paid", "amount": "10.00",
		"occurred_at": "2026-11-05T12:00:00Z"}
	// The polled command, answered 202, behind a backlog of 3,000 more.
	g.must(202, "POST", "/v1/programs/telco/members/m-1/events", "bill-polled", accrue)
	for b := range 6 {
		events := make([]map[string]any, 500)
		for i := range events {
			events[i] = map[string]any{"member": fmt.Sprintf("m-%d", 2+i),
				"txn_id": fmt.Sprintf("bl-%d-%d", b, i), "type": "bill_paid", "amount": "1.00",
				"occurred_at": "2026-11-05T12:00:00Z"}
		}
		r := g.must(202, "POST", "/v1/programs/telco/events/batches", fmt.Sprintf("batch-%d", b),
			map[string]any{"events": events})
		if jnum(t, r, "pending") != 500 {
			t.Fatalf("batch %d: %s", b, r.raw)
		}
	}

	for range 3 {
		s := g.must(200, "GET", "/v1/commands/bill-polled", "", nil)
		if s.body["status"] != "pending" {
			t.Fatalf("a command waiting behind the backlog: %s", s.raw)
		}
	}
	// An event of a batch answered 202 is remembered too.
	if s := g.must(200, "GET", "/v1/commands/bl-5-499", "", nil); s.body["status"] != "pending" {
		t.Fatalf("a batch's event waiting behind the backlog: %s", s.raw)
	}
	if got, searched := lookups(t, g.base, "remembered"), lookups(t, g.base, "searched"); got != 4 ||
		searched != 0 {
		t.Fatalf("four polls of commands answered 202: remembered %d, searched %d; want 4 and 0",
			got, searched)
	}
	// Never sent: the bus is searched, and says so.
	g.must(404, "GET", "/v1/commands/never-sent", "", nil)
	if searched := lookups(t, g.base, "searched"); searched != 1 {
		t.Fatalf("a poll for a transaction never sent: searched %d times, want 1", searched)
	}

	// Another gateway did not answer bill-polled: it searches the bus and
	// finds it waiting all the same.
	otherCfg := *cfg
	other := startApp(t, &otherCfg, Roles{Gateway: true})
	o := &client{t: t, base: "http://" + other.Addr(), key: testKey}
	if s := o.must(200, "GET", "/v1/commands/bill-polled", "", nil); s.body["status"] != "pending" {
		t.Fatalf("another gateway's poll: %s", s.raw)
	}
	if got := lookups(t, o.base, "searched"); got != 1 {
		t.Fatalf("another gateway: searched %d times, want 1", got)
	}

	// Core comes back: the polled accrual is applied and answered.
	coreCfg := *cfg
	startApp(t, &coreCfg, Roles{Core: true})
	deadline := time.Now().Add(30 * time.Second)
	var s reply
	for time.Now().Before(deadline) {
		if s = g.must(200, "GET", "/v1/commands/bill-polled", "", nil); s.body["status"] == "ok" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.body["status"] != "ok" {
		t.Fatalf("after core came back: %s", s.raw)
	}
	b := g.must(200, "GET", "/v1/programs/telco/members/m-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 10 {
		t.Fatalf("m-1 holds %d points after one bill of 10.00 at 1 point per unit, want 10: %s",
			got, b.raw)
	}
}
