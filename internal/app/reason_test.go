package app

import (
	"strings"
	"testing"
)

// A reason of more than 500 characters is refused at the gateway naming
// the field, before it uses the request's key: the same key then carries a
// corrected request. Nothing is credited by the refused one.
func TestRESTBoundsReasons(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	m := "/v1/programs/telco/members/m-1"
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "m-1"})
	long := strings.Repeat("x", 501)
	for path, body := range map[string]map[string]any{
		"/credits":     {"points": 10, "reason": long},
		"/adjustments": {"points": 10, "reason": long},
		"/redemptions": {"points": 1, "reason": long},
		"/transfers":   {"points": 1, "to": "m-2", "reason": long},
	} {
		r := c.must(400, "POST", m+path, "r"+path[1:], body, "X-Actor", "ana")
		if r.body["field"] != "reason" {
			t.Errorf("%s: %s; want the field reason named", path, r.raw)
		}
	}
	c.must(201, "POST", m+"/credits", "rcredits",
		map[string]any{"points": 10, "reason": strings.Repeat("x", 500)})
	b := c.must(200, "GET", m+"/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 10 {
		t.Fatalf("available %d, want 10: only the corrected credit", got)
	}
}
