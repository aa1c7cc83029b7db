package app

import "testing"

// A partner key without an operation's scope, and any live key of a partner
// the operator deactivated, are answered 403 (known, not allowed); an
// unknown key 401. Reactivated, the key works again.
func TestPartnerKeysForbiddenAndUnknown(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	op := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(op)
	op.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "m-1"})
	op.must(201, "POST", "/v1/programs/telco/members/m-1/credits", "cr-1",
		map[string]any{"points": 500, "reason": "welcome"})
	shop := map[string]any{"code": "shop", "name": "Shop", "currency": "CLP",
		"point_value": "1", "can_burn": true}
	op.must(201, "POST", "/v1/programs/telco/partners", "pa-1", shop)
	r := op.must(201, "POST", "/v1/programs/telco/partners/shop/keys", "key-1",
		map[string]any{"scopes": []string{"balance"}})
	p := &client{t: t, base: op.base, key: jstr(t, r, "key")}

	p.must(200, "GET", "/v1/partner/members/m-1/balance", "", nil)
	r = p.must(403, "POST", "/v1/partner/transactions", "pay-1",
		map[string]any{"member": "m-1", "points": 100})
	if r.body["kind"] != "forbidden" {
		t.Fatalf("authorize without its scope: %s", r.raw)
	}
	(&client{t: t, base: op.base, key: "pk_unknown"}).must(401, "GET",
		"/v1/partner/members/m-1/balance", "", nil)

	shop["active"] = false
	op.must(201, "POST", "/v1/programs/telco/partners", "pa-2", shop)
	r = p.must(403, "GET", "/v1/partner/members/m-1/balance", "", nil)
	if r.body["kind"] != "forbidden" || r.header.Get("WWW-Authenticate") != "" {
		t.Fatalf("deactivated partner's key: %s %v", r.raw, r.header)
	}
	shop["active"] = true
	op.must(201, "POST", "/v1/programs/telco/partners", "pa-3", shop)
	p.must(200, "GET", "/v1/partner/members/m-1/balance", "", nil)
}
