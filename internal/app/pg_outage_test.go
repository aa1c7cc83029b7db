package app

import (
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// With PostgreSQL out of reach, a balance read answers 503 (the service
// is unavailable for now), not 500 with advice to retry under the same
// Idempotency-Key, which a read has not.
func TestReadDuringDatabaseOutageIsUnavailable(t *testing.T) {
	cfg := testConfig(t)
	var cut func()
	cfg.DatabaseURL, cut = testenv.ProxyURL(t, cfg.DatabaseURL)
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	c.must(201, "PUT", "/v1/programs/telco", "prog-1", `{"name":"Telco","currency":"USD",`+
		`"points_per_unit":"1"}`)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", `{"customer_ref":"A-1"}`)
	c.must(200, "GET", "/v1/programs/telco/members/A-1/balance", "", nil)

	cut()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.send("GET", "/v1/programs/telco/members/A-1/balance", "", nil)
		if r.status == 503 && r.body["kind"] == "unavailable" &&
			strings.Contains(r.raw, "not reachable") {
			break
		}
		if r.status != 200 || time.Now().After(deadline) {
			t.Fatalf("balance read with PostgreSQL gone: %d %s; want 503 unavailable",
				r.status, r.raw)
		}
		time.Sleep(50 * time.Millisecond) // a pooled connection not yet found dead
	}
}
