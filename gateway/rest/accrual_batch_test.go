package rest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

const batchKey = "batch-test-key-0001"

// batchPlatform is Puntos started as main starts it: gateway and core on a
// fresh database and an embedded NATS, with the program "telco" at one
// point per peso and the members A, B and C.
type batchPlatform struct {
	t    *testing.T
	app  *app.App
	base string
}

func startBatchPlatform(t *testing.T) *batchPlatform {
	t.Helper()
	cfg := &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64,
		ResultWait: 20 * time.Second, APIKeys: "billing=" + batchKey, LogLevel: "warn"}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	a, err := app.Start(context.Background(), cfg, log, app.Roles{Gateway: true, Core: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	p := &batchPlatform{t: t, app: a, base: "http://" + a.Addr()}
	p.must(201, "PUT", "/v1/programs/telco", "prog-1",
		`{"name":"Telco","currency":"CLP","points_per_unit":"1"}`)
	for _, m := range []string{"A", "B", "C"} {
		p.must(201, "POST", "/v1/programs/telco/members", "enr-"+m,
			`{"customer_ref":"`+m+`"}`)
	}
	return p
}

// send makes one request and returns its status and body.
func (p *batchPlatform) send(method, path, txn, body string) (int, []byte) {
	p.t.Helper()
	req, _ := http.NewRequest(method, p.base+path, bytes.NewReader([]byte(body)))
	req.Header.Set("Authorization", "Bearer "+batchKey)
	req.Header.Set("Content-Type", "application/json")
	if txn != "" {
		req.Header.Set("Idempotency-Key", txn)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, raw
}

func (p *batchPlatform) must(status int, method, path, txn, body string) []byte {
	p.t.Helper()
	got, raw := p.send(method, path, txn, body)
	if got != status {
		p.t.Fatalf("%s %s: %d %s, want %d", method, path, got, raw, status)
	}
	return raw
}

// available is the member's spendable balance as the REST API shows it.
func (p *batchPlatform) available(member string) int64 {
	p.t.Helper()
	var v struct {
		Balance struct {
			Available int64 `json:"available"`
		} `json:"balance"`
	}
	raw := p.must(200, "GET", "/v1/programs/telco/members/"+member+"/balance", "", "")
	if err := json.Unmarshal(raw, &v); err != nil {
		p.t.Fatalf("balance of %s: %v", member, err)
	}
	return v.Balance.Available
}

// balances reads A, B and C, and checks the ledger's own invariants.
func (p *batchPlatform) balances() [3]int64 {
	p.t.Helper()
	vs, err := p.app.Ledger.Check(context.Background())
	if err != nil || len(vs) != 0 {
		p.t.Fatalf("ledger check: %v %+v", err, vs)
	}
	return [3]int64{p.available("A"), p.available("B"), p.available("C")}
}

type batchEvent struct {
	Member string `json:"member"`
	TxnID  string `json:"txn_id"`
	Type   string `json:"type"`
	Amount string `json:"amount"`
}

type batchAnswer struct {
	Committed, Pending, Refused, Failed int
	Items                               []struct {
		Index  int    `json:"index"`
		TxnID  string `json:"txn_id"`
		Status int    `json:"status"`
		Result *struct {
			Replayed bool `json:"replayed"`
		} `json:"result"`
		Error *struct {
			Kind  string `json:"kind"`
			Field string `json:"field"`
		} `json:"error"`
	}
}

func batchBody(evs []batchEvent) string {
	b, _ := json.Marshal(map[string]any{"events": evs})
	return string(b)
}

func (p *batchPlatform) batch(status int, evs []batchEvent) batchAnswer {
	p.t.Helper()
	raw := p.must(status, "POST", "/v1/programs/telco/events/batches", "", batchBody(evs))
	var a batchAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		p.t.Fatalf("batch answer %s: %v", raw, err)
	}
	if len(a.Items) != len(evs) {
		p.t.Fatalf("batch of %d answered %d items", len(evs), len(a.Items))
	}
	return a
}

// TestAccrualBatch sends 300 events in one request, sends the same batch
// again, and sends batches with a bad event: balances must show every event
// once, and a refused batch must change nothing.
func TestAccrualBatch(t *testing.T) {
	p := startBatchPlatform(t)

	// 300 events: A earns 100×10, B 100×20, C 100×1.
	var evs []batchEvent
	amounts := map[string]string{"A": "10", "B": "20.90", "C": "1"}
	for i := range 100 {
		for _, m := range []string{"A", "B", "C"} {
			evs = append(evs, batchEvent{Member: m, TxnID: fmt.Sprintf("b1-%s-%d", m, i),
				Type: "top_up", Amount: amounts[m]})
		}
	}
	a := p.batch(200, evs)
	if a.Committed != 300 || a.Pending+a.Refused+a.Failed != 0 {
		t.Fatalf("first batch: %d committed, %d pending, %d refused, %d failed; want 300 "+
			"committed", a.Committed, a.Pending, a.Refused, a.Failed)
	}
	for i, it := range a.Items {
		if it.Index != i || it.TxnID != evs[i].TxnID || it.Status != 201 || it.Result == nil {
			t.Fatalf("item %d: %+v, want 201 for %s", i, it, evs[i].TxnID)
		}
	}
	want := [3]int64{1000, 2000, 100}
	if got := p.balances(); got != want {
		t.Fatalf("after the batch: balances %v, want %v", got, want)
	}

	// The same batch again: every item replays its first result, no credit.
	a = p.batch(200, evs)
	for i, it := range a.Items {
		if it.Status != 201 || it.Result == nil || !it.Result.Replayed {
			t.Fatalf("retry, item %d: %+v, want the first result replayed", i, it)
		}
	}
	if got := p.balances(); got != want {
		t.Fatalf("after the retried batch: balances %v, want %v (credited twice?)", got, want)
	}

	// A bad event refuses the whole batch before anything is published.
	bad := []batchEvent{
		{Member: "A", TxnID: "b2-0", Type: "top_up", Amount: "5"},
		{Member: "B", TxnID: "b2-1", Type: "top_up", Amount: "5"},
		{Member: "C", TxnID: "b2-2", Type: "top_up", Amount: "-5"},
	}
	for _, tc := range []struct {
		name  string
		body  string
		field string
	}{
		{"negative amount", batchBody(bad), "events[2].amount"},
		{"repeated txn_id", batchBody([]batchEvent{bad[0], bad[0]}), "events[1].txn_id"},
		{"no member", batchBody([]batchEvent{bad[0], {TxnID: "x", Type: "t", Amount: "1"}}),
			"events[1].member"},
		{"unknown field", `{"events":[{"member":"A","txn_id":"u","type":"t","amount":"1",` +
			`"points":5}]}`, "events[0].points"},
		{"amount a number", `{"events":[{"member":"A","txn_id":"u","type":"t","amount":1}]}`,
			"events[0].amount"},
		{"empty", `{"events":[]}`, "events"},
	} {
		st, raw := p.send("POST", "/v1/programs/telco/events/batches", "", tc.body)
		var prob struct {
			Kind  string `json:"kind"`
			Field string `json:"field"`
		}
		_ = json.Unmarshal(raw, &prob)
		if st != 400 || prob.Kind != "invalid" || prob.Field != tc.field {
			t.Errorf("%s: %d %s, want 400 naming %s", tc.name, st, raw, tc.field)
		}
	}
	if got := p.balances(); got != want {
		t.Fatalf("after refused batches: balances %v, want %v", got, want)
	}

	// The corrected batch, with an event for an unknown member: the ledger
	// refuses that one alone; the others are credited once.
	bad[2].Amount = "5"
	fixed := append(bad, batchEvent{Member: "Z", TxnID: "b2-3", Type: "top_up", Amount: "5"})
	a = p.batch(200, fixed)
	if a.Committed != 3 || a.Refused != 1 || a.Items[3].Status != 404 ||
		a.Items[3].Error == nil || a.Items[3].Error.Kind != "not_found" {
		t.Fatalf("corrected batch: %+v, want 3 committed and the unknown member refused 404", a)
	}
	want = [3]int64{1005, 2005, 105}
	if got := p.balances(); got != want {
		t.Fatalf("after the corrected batch: balances %v, want %v", got, want)
	}

	// A program that does not exist is refused once, for the whole request.
	raw := p.must(404, "POST", "/v1/programs/nosuch/events/batches", "",
		batchBody([]batchEvent{{Member: "A", TxnID: "b3-0", Type: "top_up", Amount: "5"}}))
	var prob struct {
		Field string `json:"field"`
	}
	if err := json.Unmarshal(raw, &prob); err != nil || prob.Field != "program" {
		t.Fatalf("unknown program: %s, want a problem naming program", raw)
	}
}
