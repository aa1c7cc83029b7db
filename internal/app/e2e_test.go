package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

const testKey = "test-key-0123456789"

// testConfig is a configuration on a fresh database, random ports and a
// temporary data directory.
func testConfig(t *testing.T) *Config {
	return &Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t), NATSPort: -1,
		NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64, LedgerWriters: 2,
		ResultWait: 10 * time.Second, APIKeys: "billing=" + testKey, LogLevel: "warn"}
}

func startApp(t *testing.T, cfg *Config, roles Roles) *App {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	a, err := Start(context.Background(), cfg, log, roles)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return a
}

// client sends requests to one running gateway.
type client struct {
	t    *testing.T
	base string
	key  string
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (c *client) send(method, path, txn string, body any, headers ...string) reply {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, _ := json.Marshal(b)
		rd = bytes.NewReader(buf)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if txn != "" {
		req.Header.Set("Idempotency-Key", txn)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := reply{status: res.StatusCode, header: res.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func (c *client) must(want int, method, path, txn string, body any, headers ...string) reply {
	c.t.Helper()
	r := c.send(method, path, txn, body, headers...)
	if r.status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.raw)
	}
	return r
}

// num reads a number at a dotted path of a JSON reply.
func jnum(t *testing.T, r reply, path string) int64 {
	t.Helper()
	var cur any = r.body
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: not an object at %q in %s", path, k, r.raw)
		}
		cur = m[k]
	}
	f, ok := cur.(float64)
	if !ok {
		t.Fatalf("%s: not a number in %s", path, r.raw)
	}
	return int64(f)
}

func setupProgram(c *client) {
	c.t.Helper()
	c.must(201, "PUT", "/v1/programs/telco", "prog-1", map[string]any{
		"name": "Telco", "currency": "USD", "points_per_unit": "1",
		"expiry_unit": "months", "expiry_length": 24, "expiry_round": "month"})
}

func TestAccrualEndToEnd(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "7590-VHVEG", "channel": "web"})

	// Three bills, back-dated; 29.85 USD at 1 point per dollar rounds down to 29.
	for i, at := range []string{"2026-09-05T12:00:00-03:00", "2026-10-05T12:00:00-03:00",
		"2026-11-05T12:00:00-03:00"} {
		r := c.must(201, "POST", "/v1/programs/telco/members/7590-VHVEG/events",
			fmt.Sprintf("bill-%d", i), map[string]any{"type": "bill_paid", "amount": "29.85",
				"occurred_at": at})
		if got := jnum(t, r, "data.points"); got != 29 {
			t.Fatalf("bill %d earned %d points, want 29", i, got)
		}
	}
	// The plain read: the figures and the coming expiries, without the lots.
	b := c.must(200, "GET", "/v1/programs/telco/members/7590-VHVEG/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 87 {
		t.Fatalf("available %d, want 87", got)
	}
	if _, ok := b.body["lots"]; ok {
		t.Fatalf("lots in a balance read that did not ask for them: %s", b.raw)
	}
	// The September lot is earned 2026-09-05 local and lives 24 months, to the
	// end of September 2028 in Santiago (UTC-3 then): 2028-10-01T03:00Z; the
	// next two a month apart.
	exps, _ := b.body["next_expiries"].([]any)
	want := []string{"2028-10-01T03:00:00Z", "2028-11-01T03:00:00Z", "2028-12-01T03:00:00Z"}
	if len(exps) != len(want) {
		t.Fatalf("next expiries %v, want 29 points at each of %v", exps, want)
	}
	for i, e := range exps {
		e := e.(map[string]any)
		if e["expires_at"] != want[i] || e["points"] != 29.0 {
			t.Fatalf("next expiry %d: %v, want 29 points at %s", i, e, want[i])
		}
	}
	// The lots on request, with the same figures.
	bl := c.must(200, "GET", "/v1/programs/telco/members/7590-VHVEG/balance?lots=true", "", nil)
	lots, _ := bl.body["lots"].([]any)
	if len(lots) != 3 || jnum(t, bl, "balance.available") != 87 {
		t.Fatalf("balance with lots: %s; want 87 available in 3 lots", bl.raw)
	}
	if exp := lots[0].(map[string]any)["expires_at"]; exp != want[0] {
		t.Fatalf("first lot expires at %v, want %s", exp, want[0])
	}
	if !reflect.DeepEqual(bl.body["next_expiries"], b.body["next_expiries"]) {
		t.Fatalf("next expiries with lots %v, without %v", bl.body["next_expiries"], exps)
	}
	bad := c.send("GET", "/v1/programs/telco/members/7590-VHVEG/balance?lots=yes", "", nil)
	if bad.status != 400 || bad.body["field"] != "lots" {
		t.Fatalf("lots=yes: status %d %s, want 400 naming lots", bad.status, bad.raw)
	}
	m := c.must(200, "GET", "/v1/programs/telco/members/7590-VHVEG/movements?limit=2", "", nil)
	postings := m.body["postings"].([]any)
	if len(postings) != 2 || m.body["next_cursor"] == "" {
		t.Fatalf("first page: %s", m.raw)
	}
	m2 := c.must(200, "GET", "/v1/programs/telco/members/7590-VHVEG/movements?limit=2&cursor="+
		m.body["next_cursor"].(string), "", nil)
	if n := len(m2.body["postings"].([]any)); n != 1 {
		t.Fatalf("second page has %d postings, want 1", n)
	}
	if v, _ := a.Ledger.Check(context.Background()); len(v) > 0 {
		t.Fatalf("ledger invariants: %+v", v)
	}
}

func TestRetryAndConflict(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})
	body := map[string]any{"type": "top_up", "amount": "100.00",
		"occurred_at": "2026-11-20T10:00:00-03:00"}
	first := c.must(201, "POST", "/v1/programs/telco/members/C1/events", "topup-77", body)

	// The caller lost the answer and retries three times at once.
	var wg sync.WaitGroup
	replies := make([]reply, 3)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = c.send("POST", "/v1/programs/telco/members/C1/events", "topup-77", body)
		}()
	}
	wg.Wait()
	want := fmt.Sprint(first.body["data"].(map[string]any)["posting_ids"])
	for i, r := range replies {
		got := fmt.Sprint(r.body["data"].(map[string]any)["posting_ids"])
		if r.status != 201 || r.header.Get("Idempotent-Replayed") != "true" || got != want {
			t.Fatalf("retry %d: status %d replayed %q postings %s, want 201 replay of %s",
				i, r.status, r.header.Get("Idempotent-Replayed"), got, want)
		}
	}

	// The same id with another amount is a conflict and changes nothing.
	body["amount"] = "250.00"
	r := c.must(409, "POST", "/v1/programs/telco/members/C1/events", "topup-77", body)
	if r.body["field"] != "txn_id" || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("conflict: %s", r.raw)
	}
	// Sent again, the bus holds that request already; it is still a
	// conflict, never the first request's result.
	for range 2 {
		r = c.send("POST", "/v1/programs/telco/members/C1/events", "topup-77", body)
		if r.status != 409 || r.body["field"] != "txn_id" {
			t.Fatalf("conflicting request sent again: %d %s, want 409 on txn_id", r.status, r.raw)
		}
	}

	// Different requests racing under one new id: one is applied, every
	// other one is told it conflicts, and none takes the winner's 201.
	replies = make([]reply, 4)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = c.send("POST", "/v1/programs/telco/members/C1/events", "topup-78",
				map[string]any{"type": "top_up", "amount": fmt.Sprintf("%d.00", i+1)})
		}()
	}
	wg.Wait()
	created, conflicts := 0, 0
	for _, r := range replies {
		switch {
		case r.status == 201:
			created++
		case r.status == 409 && r.body["field"] == "txn_id":
			conflicts++
		}
	}
	if created != 1 || conflicts != 3 {
		t.Fatalf("racing requests under one id: %d created, %d conflicts, want 1 and 3",
			created, conflicts)
	}

	b := c.must(200, "GET", "/v1/programs/telco/members/C1/balance", "", nil)
	var won int64
	for i, r := range replies {
		if r.status == 201 {
			won = int64(i + 1)
		}
	}
	if got := jnum(t, b, "balance.available"); got != 100+won {
		t.Fatalf("available %d, want %d", got, 100+won)
	}
	var postings int
	err := a.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM postings WHERE txn_id = 'topup-77'`).Scan(&postings)
	if err != nil || postings != 1 {
		t.Fatalf("postings for topup-77: %d (%v), want 1", postings, err)
	}
}

func TestUnknownMemberIsDeadLettered(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	r := c.must(404, "POST", "/v1/programs/telco/members/GHOST-1/events", "ghost-bill",
		map[string]any{"type": "bill_paid", "amount": "10.00"})
	if r.body["field"] != "member" || !strings.Contains(r.body["detail"].(string), "GHOST-1") {
		t.Fatalf("problem does not name the member: %s", r.raw)
	}

	// It is dead-lettered once with its reason, and not delivered again.
	deadline := time.Now().Add(5 * time.Second)
	var dead []natsbus.DeadLetter
	for time.Now().Before(deadline) {
		dead, _ = a.Bus.DeadLetters(context.Background(), 10)
		if len(dead) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(dead) != 1 || dead[0].TxnID != "ghost-bill" ||
		!strings.Contains(dead[0].Reason, "GHOST-1") {
		t.Fatalf("dead letters: %+v", dead)
	}
	time.Sleep(500 * time.Millisecond)
	dead, _ = a.Bus.DeadLetters(context.Background(), 10)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters after waiting, want 1", len(dead))
	}
	// A retry gets the same refusal from the ledger, and no second dead letter.
	c.must(404, "POST", "/v1/programs/telco/members/GHOST-1/events", "ghost-bill",
		map[string]any{"type": "bill_paid", "amount": "10.00"})
}

func TestAcceptedThenStatus(t *testing.T) {
	cfg := testConfig(t)
	cfg.NATSURL = ""
	// The gateway alone on an embedded bus: nothing applies commands yet.
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
	r := c.must(202, "PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco"})
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, "/v1/commands/prog-1?request=") || r.body["status_url"] != loc {
		t.Fatalf("Location %q, status_url %v", loc, r.body["status_url"])
	}
	s := c.must(200, "GET", loc, "", nil)
	if s.body["status"] != "pending" {
		t.Fatalf("status before core runs: %s", s.raw)
	}

	// Core starts later and applies what the gateway accepted.
	cfg2 := *cfg
	startApp(t, &cfg2, Roles{Core: true})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s = c.must(200, "GET", "/v1/commands/prog-1", "", nil)
		if s.body["status"] == "ok" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s.body["status"] != "ok" {
		t.Fatalf("status after core ran: %s", s.raw)
	}
	c.must(200, "GET", "/v1/programs/telco", "", nil)
}

func migrate(t *testing.T, url string) {
	t.Helper()
	pool, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := postgres.Migrate(context.Background(), pool,
		slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
}

func TestBadInput(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})
	ev := "/v1/programs/telco/members/C1/events"
	cases := []struct {
		name, txn, body, key string
		status               int
		field                string
	}{
		{"no key", "x1", `{"type":"bill_paid","amount":"1"}`, "-", 401, "Authorization"},
		{"wrong key", "x1", `{"type":"bill_paid","amount":"1"}`, "wrong-key-123456", 401,
			"Authorization"},
		{"no idempotency key", "", `{"type":"bill_paid","amount":"1"}`, "", 400,
			"Idempotency-Key"},
		{"amount as number", "x2", `{"type":"bill_paid","amount":12.5}`, "", 400, "amount"},
		{"amount exponent", "x3", `{"type":"bill_paid","amount":"1e5"}`, "", 400, "amount"},
		{"amount comma", "x4", `{"type":"bill_paid","amount":"12,50"}`, "", 400, "amount"},
		{"amount negative", "x5", `{"type":"bill_paid","amount":"-3"}`, "", 400, "amount"},
		{"amount huge", "x6", `{"type":"bill_paid","amount":"99999999999999999999"}`, "", 400,
			"amount"},
		{"no type", "x7", `{"amount":"3"}`, "", 400, "type"},
		{"unknown field", "x8", `{"type":"t","amount":"3","pointz":4}`, "", 400, "pointz"},
		{"no offset", "x9", `{"type":"t","amount":"3","occurred_at":"2026-11-01T10:00:00"}`,
			"", 400, "occurred_at"},
		{"future", "x10", `{"type":"t","amount":"3","occurred_at":"2099-01-01T10:00:00Z"}`, "",
			400, "occurred_at"},
		{"not json", "x11", `{"type":`, "", 400, "body"},
		{"two objects", "x12", `{"type":"t","amount":"3"}{}`, "", 400, "body"},
		{"blank amount", "x13", `{"type":"bill_paid","amount":" "}`, "", 400, "amount"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := *c
			cc.t = t
			switch tc.key {
			case "-":
				cc.key = ""
			case "":
			default:
				cc.key = tc.key
			}
			r := cc.must(tc.status, "POST", ev, tc.txn, tc.body)
			if r.body["field"] != tc.field {
				t.Fatalf("field %v, want %s: %s", r.body["field"], tc.field, r.raw)
			}
		})
	}
	r := c.must(400, "POST", "/v1/programs/telco/members/C1/redemptions", "r1", `{"points":0}`)
	if r.body["field"] != "points" {
		t.Fatalf("zero redemption: %s", r.raw)
	}
	r = c.must(422, "POST", "/v1/programs/telco/members/C1/redemptions", "r2", `{"points":5}`)
	if r.body["kind"] != "insufficient" {
		t.Fatalf("redemption beyond the balance: %s", r.raw)
	}
	b := c.must(200, "GET", "/v1/programs/telco/members/C1/balance", "", nil)
	if jnum(t, b, "balance.available") != 0 {
		t.Fatalf("bad input changed the balance: %s", b.raw)
	}
}
