package app

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
)

// With ClickHouse unreachable the platform still takes accruals and reads
// balances: /readyz stays 200, so that a load balancer keeps the gateway
// in service, and says that the reports are unavailable.
func TestReadyWithoutClickHouse(t *testing.T) {
	// A port of 127.0.0.1 that nothing listens on: taken, then freed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	cfg := testConfig(t)
	cfg.ClickHouseAddr, cfg.ClickHouseDB = closed, "puntos_test"
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	res, err := http.Get("http://" + a.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || !body.Ready || body.Checks["postgres"] != "ok" ||
		!strings.HasPrefix(body.Checks["clickhouse"], "reports unavailable") {
		t.Fatalf("/readyz with ClickHouse down: %d %+v", res.StatusCode, body)
	}
	// The probe answers without a key: it names no address.
	if _, port, _ := net.SplitHostPort(closed); strings.Contains(body.Checks["clickhouse"], port) {
		t.Fatalf("/readyz names the address: %+v", body)
	}
}
