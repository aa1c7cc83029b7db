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

// A member's suspension, reactivation or closure takes a reason of at most
// 500 characters too, whether or not points move; nothing changes when it
// is refused.
func TestStatusChangesBoundReasons(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "m-1"})
	long := strings.Repeat("x", 501)
	for _, action := range []string{"suspend", "close"} {
		r := c.must(400, "POST", "/v1/programs/telco/members/m-1/"+action, action+"-1",
			map[string]any{"reason": long})
		if r.body["field"] != "reason" {
			t.Errorf("%s: %s; want the field reason named", action, r.raw)
		}
	}
	m := c.must(200, "GET", "/v1/programs/telco/members/m-1", "", nil)
	if m.body["status"] != "active" {
		t.Fatalf("member after refused changes: %s; want active", m.raw)
	}
	c.must(201, "POST", "/v1/programs/telco/members/m-1/suspend", "suspend-2",
		map[string]any{"reason": strings.Repeat("x", 500)})
}
