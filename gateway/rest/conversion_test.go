package rest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/secrets"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// ledgerBus applies each published command to a real ledger at once, as a
// core consumer would, and announces its result.
type ledgerBus struct {
	l       *postgres.Ledger
	mu      sync.Mutex
	results chan bus.Result
}

func (b *ledgerBus) SubscribeResult(string, string) (<-chan bus.Result, func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.results = make(chan bus.Result, 1)
	return b.results, func() {}, nil
}

func (b *ledgerBus) PublishCommand(ctx context.Context, cmd bus.Command) (bool, error) {
	out, err := b.l.ApplyBatch(ctx, []bus.Command{cmd})
	if err != nil {
		return false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.results <- out[0].Result
	return false, nil
}

// TestConversionRoutes drives the conversion routes against a real ledger:
// configure an external program (its secret never answered back), convert,
// read the pending conversion, replay, and hit the daily limit.
func TestConversionRoutes(t *testing.T) {
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	l := postgres.New(pool, slog.New(slog.DiscardHandler))
	if l.Secrets, _, err = secrets.Generate(); err != nil {
		t.Fatal(err)
	}
	s := New(&ledgerBus{l: l}, l, slog.New(slog.DiscardHandler),
		Options{Wait: 5 * time.Second, Keys: map[string]string{"k": "app"}})
	router := mux.NewRouter()
	s.Register(router)

	call := func(method, path, key, body string) (*httptest.ResponseRecorder, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, w.Code, w.Body)
		}
		return w, out
	}
	must := func(want int, method, path, key, body string) map[string]any {
		t.Helper()
		w, out := call(method, path, key, body)
		if w.Code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, w.Code, w.Body, want)
		}
		return out
	}

	must(201, "PUT", "/v1/programs/movil", "p1", `{"name":"Movil"}`)
	must(201, "POST", "/v1/programs/movil/members", "e1", `{"customer_ref":"569001"}`)
	must(201, "POST", "/v1/programs/movil/members/569001/credits", "c1",
		`{"points":10000,"reason":"welcome"}`)

	// The configuration: stored, its secret masked in the result and reads.
	ext := `{"name":"SkyMiles","ratio":"0.5","rounding":"half_up","min_points":100,` +
		`"daily_limit":3000,"identify":"account_id","flavour":"http",` +
		`"endpoint":"https://127.0.0.1:9/api","credentials":"very-secret"}`
	w, put := call("PUT", "/v1/programs/movil/external/skymiles", "x1", ext)
	if w.Code != 201 || strings.Contains(w.Body.String(), "very-secret") {
		t.Fatalf("PUT external: %d %s, want 201 without the secret", w.Code, w.Body)
	}
	got := must(200, "GET", "/v1/programs/movil/external/skymiles", "", "")
	if got["credentials"] != core.Masked || got["ratio"] != "0.5" {
		t.Fatalf("GET external: %v, want the secret masked and the ratio 0.5", got)
	}
	if putRatio := put["data"].(map[string]any)["ratio"]; putRatio != got["ratio"] {
		t.Fatalf("ratio: PUT answered %v, GET %v; want the same text", putRatio, got["ratio"])
	}
	bad := strings.Replace(ext, "https://127.0.0.1:9/api", "file:///etc/passwd", 1)
	p := must(400, "PUT", "/v1/programs/movil/external/skymiles", "x2", bad)
	if p["field"] != "endpoint" {
		t.Fatalf("bad endpoint: %v", p)
	}

	// A conversion: held and pending at once.
	body := `{"external":"skymiles","points":2001,"account_id":"LA123456"}`
	res := must(201, "POST", "/v1/programs/movil/members/569001/conversions", "v1", body)
	data := res["data"].(map[string]any)
	id := data["id"].(string)
	bal := data["balance"].(map[string]any)
	if data["status"] != "pending" || data["amount"] != 1001.0 || bal["available"] != 7999.0 ||
		bal["held"] != 2001.0 {
		t.Fatalf("conversion: %v, want 1001 miles pending and 2001 points held", data)
	}
	c := must(200, "GET", "/v1/programs/movil/members/569001/conversions/"+id, "", "")
	if c["status"] != "pending" || c["txn_id"] != id || c["hold_txn_id"] != id+".hold" {
		t.Fatalf("GET conversion: %v", c)
	}
	must(404, "GET", "/v1/programs/movil/members/569001/conversions/not-an-id", "", "")

	// A retry is the same conversion; the limit refuses the excess.
	w, out := call("POST", "/v1/programs/movil/members/569001/conversions", "v1", body)
	if w.Code != 201 || w.Header().Get("Idempotent-Replayed") != "true" ||
		out["data"].(map[string]any)["id"] != id {
		t.Fatalf("replay: %d %s", w.Code, w.Body)
	}
	over := `{"external":"skymiles","points":1000,"account_id":"LA123456"}`
	p = must(409, "POST", "/v1/programs/movil/members/569001/conversions", "v2", over)
	if p["field"] != "daily_limit" {
		t.Fatalf("over the limit: %v", p)
	}
	must(400, "POST", "/v1/programs/movil/members/569001/conversions", "v3",
		`{"external":"skymiles","points":0}`)
	b := must(200, "GET", "/v1/programs/movil/members/569001/balance", "", "")
	if fig := b["balance"].(map[string]any); fig["available"] != 7999.0 || fig["held"] != 2001.0 {
		t.Fatalf("balance %v, want 7999 available and 2001 held", fig)
	}
	if v, err := l.Check(ctx); err != nil || len(v) > 0 {
		t.Fatalf("ledger check: %v %v", v, err)
	}
}
