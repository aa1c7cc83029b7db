package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// ledgerRouter serves the REST routes over a real ledger of its own, each
// command applied at once, and returns a caller of them.
func ledgerRouter(t *testing.T) func(want int, method, path, key, body string) map[string]any {
	t.Helper()
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	l := postgres.New(pool, slog.New(slog.DiscardHandler))
	s := New(&ledgerBus{l: l}, l, slog.New(slog.DiscardHandler),
		Options{Wait: 5 * time.Second, Keys: map[string]string{"k": "app"}})
	router := mux.NewRouter()
	s.Register(router)
	return func(want int, method, path, key, body string) map[string]any {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || w.Code != want {
			t.Fatalf("%s %s %s: %d %s, want %d", method, path, body, w.Code, w.Body, want)
		}
		return out
	}
}

// An order's quantity, when sent, is between 1 and 1000: an explicit 0 is
// refused like -3, and debits nothing; a quantity left out is one unit.
func TestOrderQuantityZeroRefused(t *testing.T) {
	must := ledgerRouter(t)
	must(201, "PUT", "/v1/programs/shop", "p1", `{"name":"Shop"}`)
	must(201, "POST", "/v1/programs/shop/members", "e1", `{"customer_ref":"569001"}`)
	must(201, "POST", "/v1/programs/shop/members/569001/credits", "c1",
		`{"points":1000,"reason":"welcome"}`)
	must(201, "POST", "/v1/programs/shop/rewards", "r1",
		`{"code":"mug","name":"Mug","points":100}`)
	orders := "/v1/programs/shop/members/569001/orders"
	available := func() float64 {
		t.Helper()
		b := must(200, "GET", "/v1/programs/shop/members/569001/balance", "", "")
		return b["balance"].(map[string]any)["available"].(float64)
	}

	for i, q := range []string{"0", "-3", "1001"} {
		p := must(400, "POST", orders, fmt.Sprintf("o-bad-%d", i),
			`{"reward":"mug","quantity":`+q+`,"price":"points"}`)
		if p["field"] != "quantity" || !strings.Contains(p["detail"].(string),
			"between 1 and 1000") {
			t.Fatalf("quantity %s: %v, want a refusal about quantity, between 1 and 1000", q, p)
		}
	}
	// An unknown price is refused before the bus: the ledger never hears
	// of it (no stored refusal, no dead letter).
	p := must(400, "POST", orders, "o-bad-price", `{"reward":"mug","price":"mixed"}`)
	if p["field"] != "price" || !strings.Contains(p["detail"].(string), "points_plus_money") {
		t.Fatalf("price mixed: %v, want a refusal about price", p)
	}
	// (A command the ledger refused reads "rejected"; one it never got,
	// "pending".)
	if st := must(200, "GET", "/v1/commands/o-bad-price", "", "")["status"]; st != "pending" {
		t.Fatalf("the refused order's command reads %v, want pending (never sent)", st)
	}
	if got := available(); got != 1000 {
		t.Fatalf("available %v after refused orders, want 1000", got)
	}

	o := must(201, "POST", orders, "o1", `{"reward":"mug","price":"points"}`)
	if q := o["data"].(map[string]any)["quantity"]; q != 1.0 {
		t.Fatalf("order without a quantity: quantity %v, want 1", q)
	}
	o = must(201, "POST", orders, "o2", `{"reward":"mug","quantity":2}`)
	if q := o["data"].(map[string]any)["quantity"]; q != 2.0 {
		t.Fatalf("order of 2: quantity %v, want 2", q)
	}
	if got := available(); got != 700 {
		t.Fatalf("available %v after orders of 1 and 2 mugs, want 700", got)
	}
}

// A close answers the points it forfeited, as the OpenAPI's Outcome says:
// the points the command moved, negative when taken from the member.
func TestCloseAnswersForfeitedPoints(t *testing.T) {
	must := ledgerRouter(t)
	must(201, "PUT", "/v1/programs/shop", "p1", `{"name":"Shop"}`)
	must(201, "POST", "/v1/programs/shop/members", "e1", `{"customer_ref":"569001"}`)
	must(201, "POST", "/v1/programs/shop/members/569001/credits", "c1",
		`{"points":400,"reason":"welcome"}`)
	out := must(201, "POST", "/v1/programs/shop/members/569001/close", "x1",
		`{"reason":"customer asked to leave"}`)
	data := out["data"].(map[string]any)
	if data["points"] != -400.0 || data["status"] != "closed" {
		t.Fatalf("close: %v, want points -400 (forfeited) and status closed", data)
	}
}
