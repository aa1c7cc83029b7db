package rest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/secrets"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// TestExternalCredentialsOverREST: what a REST client sees of encrypted
// credentials. Sending back the masked value it read keeps the secret; a
// ledger with no key refuses a secret with 503 naming the setting, and
// stores nothing.
func TestExternalCredentialsOverREST(t *testing.T) {
	ctx := context.Background()
	pool, err := postgres.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	log := slog.New(slog.DiscardHandler)
	if err := postgres.Migrate(ctx, pool, log); err != nil {
		t.Fatal(err)
	}
	l := postgres.New(pool, log)
	if l.Secrets, _, err = secrets.Generate(); err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter()
	New(&ledgerBus{l: l}, l, log, Options{Wait: 5 * time.Second,
		Keys: map[string]string{"k": "app"}}).Register(router)
	call := func(method, path, key, body string) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		w := httptest.NewRecorder()
		router.ServeHTTP(w, req)
		var out map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out
	}
	if code, out := call("PUT", "/v1/programs/movil", "p1", `{"name":"Movil"}`); code != 201 {
		t.Fatalf("program: %d %v", code, out)
	}
	const path = "/v1/programs/movil/external/skymiles"
	if code, out := call("PUT", path, "x1", `{"name":"SkyMiles","ratio":"0.5",`+
		`"endpoint":"https://127.0.0.1:9/api","credentials":"rest-secret"}`); code != 201 {
		t.Fatalf("PUT external: %d %v", code, out)
	}

	// Read, change the ratio, put back: the masked credentials keep the secret.
	_, got := call("GET", path, "", "")
	if got["credentials"] != core.Masked {
		t.Fatalf("GET: %v, want the credentials masked", got)
	}
	got["ratio"] = "0.75"
	body, _ := json.Marshal(got)
	if code, out := call("PUT", path, "x2", string(body)); code != 201 {
		t.Fatalf("PUT back: %d %v", code, out)
	}
	cfg, err := l.PartnerConfig(ctx, "movil", "skymiles")
	if err != nil || cfg.Credentials != "rest-secret" || !strings.HasPrefix(cfg.Ratio, "0.75") {
		t.Fatalf("after the PUT back: %+v %v, want ratio 0.75 and the secret kept", cfg, err)
	}

	// The same ledger with no key.
	l.Secrets = nil
	code, p := call("PUT", "/v1/programs/movil/external/latam", "x3", `{"name":"LATAM",`+
		`"ratio":"1","endpoint":"https://127.0.0.1:9/api","credentials":"latam-secret"}`)
	detail, _ := p["detail"].(string)
	if code != 503 || p["field"] != "credentials" ||
		!strings.Contains(detail, "PUNTOS_SECRETS_KEY") ||
		strings.Contains(detail, "latam-secret") {
		t.Fatalf("PUT without a key: %d %v, want 503 on credentials naming the setting", code, p)
	}
	if code, _ := call("GET", "/v1/programs/movil/external/latam", "", ""); code != 404 {
		t.Fatalf("GET of the refused external program: %d, want 404", code)
	}
}
