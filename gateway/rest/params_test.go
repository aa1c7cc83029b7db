package rest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/internal/app"
)

// paramCase is a request with one bad parameter and what the caller must be
// told: 400, the field at fault, and words of the detail.
type paramCase struct {
	method, path, txn, body string
	actor                   string // X-Actor, when set
	field, detail           string
}

// sendAs makes one request with key; it returns the status and the body
// decoded as a JSON object.
func sendAs(t *testing.T, base, key string, c paramCase) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, bytes.NewReader([]byte(c.body)))
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if c.txn != "" {
		for _, k := range strings.Split(c.txn, "|") { // a|b: the header twice
			req.Header.Add("Idempotency-Key", k)
		}
	}
	if c.actor != "" {
		req.Header.Set("X-Actor", c.actor)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, string(raw), out
}

// checkRefused sends every case with key and wants each refused with 400,
// naming its field and saying what is wrong.
func checkRefused(t *testing.T, base, key string, cases []paramCase) {
	t.Helper()
	for _, c := range cases {
		status, raw, out := sendAs(t, base, key, c)
		detail, _ := out["detail"].(string)
		if status != http.StatusBadRequest || out["kind"] != "invalid" ||
			out["field"] != c.field || !strings.Contains(detail, c.detail) {
			path := c.path
			if len(path) > 120 {
				path = path[:120] + "..."
			}
			t.Errorf("%s %s: %d %.300s\nwant 400 naming %s and saying %q", c.method, path,
				status, raw, c.field, c.detail)
		}
	}
}

// partnerKeyFor makes the partner shop in telco with a key of every scope
// and returns the key.
func partnerKeyFor(p *gaps9Platform) string {
	p.t.Helper()
	p.must(201, "POST", "/v1/programs/telco/partners", "pa-shop", `{"code":"shop",`+
		`"name":"Shop","currency":"CLP","point_value":"1","can_burn":true,"can_earn":true}`)
	out := p.must(201, "POST", "/v1/programs/telco/partners/shop/keys", "key-shop",
		`{"scopes":["balance","authorize","capture","void","refund","earn","settlement"]}`)
	key, _ := out["key"].(string)
	if key == "" {
		p.t.Fatalf("no partner key in %v", out)
	}
	return key
}

// TestBadPathParametersAreRefused: a path parameter or query parameter that
// PostgreSQL could not take (NUL, bytes that are not UTF-8) or that breaks
// the rule its write applies (too long, a space) is refused with 400 naming
// it, on reads and writes, operator and partner routes alike, instead of a
// 500 or a search for something that cannot exist. Good values still work.
func TestBadPathParametersAreRefused(t *testing.T) {
	p := startGaps9(t, app.Roles{Gateway: true, Core: true})
	pkey := partnerKeyFor(p)
	long200, long5000 := strings.Repeat("m", 200), strings.Repeat("m", 5000)
	const (
		nul    = "contains the NUL character"
		notUTF = "is not valid UTF-8"
	)
	m := "/v1/programs/telco/members/"

	checkRefused(t, p.base, gaps9Key, []paramCase{
		// The member reference, on every read of a member.
		{method: "GET", path: m + "m5%00/balance", field: "member", detail: nul},
		{method: "GET", path: m + "m5%00/movements", field: "member", detail: nul},
		{method: "GET", path: m + "m5%00", field: "member", detail: nul},
		{method: "GET", path: m + "m5%00/tier", field: "member", detail: nul},
		{method: "GET", path: m + "m5%00/orders", field: "member", detail: nul},
		{method: "GET", path: m + "m5%00/conversions", field: "member", detail: nul},
		{method: "GET", path: m + "m5%FF/balance", field: "member", detail: notUTF},
		{method: "GET", path: m + long200 + "/balance", field: "member",
			detail: "is 200 characters long, over the limit of 128; it must be 1-128 letters"},
		{method: "GET", path: m + "%20A/balance", field: "member",
			detail: "begins with a space; it must be 1-128 letters"},
		{method: "GET", path: m + "A%3Fb/balance", field: "member",
			detail: "has '?' at character 2, which is not allowed"},
		// ... and on a write, before it reaches the bus.
		{method: "POST", path: m + "A%00/credits", txn: "cr-nul",
			body: `{"points":5,"reason":"welcome"}`, field: "member", detail: nul},
		// The other path parameters, each with its own rule.
		{method: "GET", path: "/v1/programs/te%00lco", field: "program", detail: nul},
		{method: "GET", path: "/v1/programs/te%00lco/members", field: "program", detail: nul},
		{method: "GET", path: "/v1/programs/" + strings.Repeat("t", 65), field: "program",
			detail: "is 65 characters long, over the limit of 64"},
		{method: "GET", path: "/v1/programs/telco/rewards/r%00", field: "reward", detail: nul},
		{method: "GET", path: "/v1/programs/telco/partners/s%00", field: "partner",
			detail: nul},
		{method: "GET", path: "/v1/programs/telco/partners/s%00/settlement?from=2026-01-01" +
			"&to=2026-02-01", field: "partner", detail: nul},
		{method: "GET", path: "/v1/programs/telco/rules/r%00", field: "code", detail: nul},
		{method: "GET", path: "/v1/programs/telco/external/x%00", field: "code", detail: nul},
		{method: "GET", path: m + "A/orders/o%00", field: "order", detail: nul},
		{method: "GET", path: m + "A/conversions/c%00", field: "conversion", detail: nul},
		{method: "GET", path: "/v1/programs/telco/batches/b%00", field: "batch", detail: nul},
		{method: "POST", path: m + "A/holds/h%00/release", txn: "rel-nul", body: `{}`,
			field: "hold", detail: nul},
		{method: "GET", path: "/v1/commands/t%00", field: "txn", detail: nul},
		{method: "GET", path: "/v1/commands/" + long200, field: "txn",
			detail: "is 200 characters long, over the limit of 128"},
		// Query parameters that reach SQL.
		{method: "GET", path: "/v1/programs/telco/members?cursor=%00", field: "cursor",
			detail: nul},
		{method: "GET", path: "/v1/programs/telco/rewards?cursor=r%00", field: "cursor",
			detail: nul},
		{method: "GET", path: "/v1/programs/telco/rewards?cursor=r%FF", field: "cursor",
			detail: notUTF},
		{method: "GET", path: "/v1/programs/telco/rewards?cursor=No+Code", field: "cursor",
			detail: "is not a cursor from a previous page"},
		{method: "GET", path: m + "A/movements?cursor=%00", field: "cursor", detail: nul},
		{method: "GET", path: "/v1/programs/telco/simulate?type=bill_paid&amount=1" +
			"&partner=s%00&member=A", field: "partner", detail: nul},
		{method: "GET", path: "/v1/programs/telco/simulate?type=bill_paid&amount=1" +
			"&member=" + long200, field: "member", detail: "is 200 characters long"},
		// The simulation takes the dates an accrual takes (year 1 gave 10 points).
		{method: "GET", path: "/v1/programs/telco/simulate?type=bill_paid&amount=10" +
			"&member=A&occurred_at=0001-01-01T00:00:00Z", field: "occurred_at",
			detail: "is not a real date"},
		{method: "GET", path: "/v1/programs/telco/simulate?type=bill_paid&amount=10" +
			"&member=A&occurred_at=1969-12-31T23:59:59Z", field: "occurred_at",
			detail: "is before 1970-01-01T00:00:00Z"},
		// Who acts, stored with each posting and batch (an upload named
		// "ana\xff" answered 500).
		{method: "POST", path: m + "A/credits", txn: "cr-actor", actor: "ana\xff",
			body: `{"points":5,"reason":"welcome"}`, field: "X-Actor", detail: "is not valid UTF-8"},
		{method: "POST", path: "/v1/programs/telco/batches", actor: "ana\xff",
			body: "member,points,reason,txn_id\nA,5,bono,f-1\n", field: "X-Actor",
			detail: "is not valid UTF-8"},
		// Given twice, a header or a parameter was read once and the other
		// value dropped: a retry under the second key applied again.
		{method: "POST", path: m + "A/credits", txn: "cr-two|cr-three",
			body: `{"points":5,"reason":"welcome"}`, field: "Idempotency-Key",
			detail: "is given 2 times"},
		{method: "GET", path: m + "A/movements?limit=1&limit=2", field: "limit",
			detail: "is given 2 times"},
		{method: "POST", path: "/v1/programs/telco/batches?date_format=DD/MM/YYYY" +
			"&date_format=MM/DD/YYYY", body: "member,points,reason,txn_id\nA,5,bono,f-2\n",
			field: "date_format", detail: "is given 2 times"},
		// A timestamp that does not read is named, whichever it is (every
		// one was called occurred_at, or the body).
		{method: "POST", path: m + "A/credits", txn: "cr-exp-date",
			body:  `{"points":5,"reason":"welcome","expires_at":"2027-12-31"}`,
			field: "expires_at", detail: "must be an RFC 3339 timestamp"},
		{method: "POST", path: m + "A/credits", txn: "cr-exp-number",
			body:  `{"points":5,"reason":"welcome","expires_at":5}`,
			field: "expires_at", detail: "must be an RFC 3339 timestamp"},
		{method: "POST", path: "/v1/programs/telco/events/batches",
			body: `{"events":[{"member":"A","txn_id":"ts-1","type":"bill_paid",` +
				`"amount":"1","occurred_at":1733500000}]}`,
			field: "events[0].occurred_at", detail: "must be an RFC 3339 timestamp"},
		// The shape asked for, in JSON's words; a number too large says so.
		{method: "POST", path: m + "A/credits", txn: "cr-array", body: `[1]`,
			field: "body", detail: "must be a JSON object"},
		{method: "POST", path: m + "A/credits", txn: "cr-huge",
			body:  `{"points":99999999999999999999,"reason":"welcome"}`,
			field: "points", detail: "99999999999999999999 is out of range"},
		// An Idempotency-Key too long is told so, with the limit.
		{method: "POST", path: m + "A/credits", txn: long200,
			body: `{"points":5,"reason":"welcome"}`, field: "Idempotency-Key",
			detail: "is 200 characters long, over the limit of 128; it must be 1-128 letters"},
	})

	checkRefused(t, p.base, pkey, []paramCase{
		{method: "GET", path: "/v1/partner/members/m5%00/balance", field: "member",
			detail: nul},
		{method: "GET", path: "/v1/partner/members/" + long5000 + "/balance", field: "member",
			detail: "is 5000 characters long, over the limit of 128"},
		{method: "GET", path: "/v1/partner/members/%20A/balance", field: "member",
			detail: "begins with a space"},
		{method: "POST", path: "/v1/partner/members/A%00/purchases", txn: "buy-nul",
			body: `{"amount":"100"}`, field: "member", detail: nul},
		{method: "GET", path: "/v1/partner/transactions/t%00", field: "txn", detail: nul},
		{method: "POST", path: "/v1/partner/transactions/t%00/capture", txn: "cap-nul",
			body: `{}`, field: "txn", detail: nul},
		{method: "GET", path: "/v1/partner/commands/t%00", field: "txn", detail: nul},
		// The member of a payment, in the body: what is wrong, not "is required".
		{method: "POST", path: "/v1/partner/transactions", txn: "pay-200",
			body: `{"member":"` + long200 + `","points":10}`, field: "member",
			detail: "is 200 characters long, over the limit of 128; it must be 1-128 letters"},
		{method: "POST", path: "/v1/partner/transactions", txn: "pay-5000",
			body: `{"member":"` + long5000 + `","points":10}`, field: "member",
			detail: "is 5000 characters long, over the limit of 128"},
		{method: "POST", path: "/v1/partner/transactions", txn: "pay-space",
			body: `{"member":" A","points":10}`, field: "member",
			detail: "begins with a space; it must be 1-128 letters"},
		{method: "POST", path: "/v1/partner/transactions", txn: "pay-none",
			body: `{"points":10}`, field: "member",
			detail: "is required: the member's customer reference, 1-128 letters"},
		{method: "POST", path: "/v1/partner/transactions", txn: long200,
			body: `{"member":"A","points":10}`, field: "Idempotency-Key",
			detail: "is 200 characters long, over the limit of 128"},
	})

	// Nothing refused reached the ledger, and good values are still served.
	p.must(200, "GET", m+"A/balance", "", "")
	p.must(200, "GET", m+"A/movements", "", "")
	p.must(200, "GET", "/v1/programs/telco/rewards", "", "")
	status, raw, _ := sendAs(t, p.base, pkey, paramCase{method: "GET",
		path: "/v1/partner/members/A/balance"})
	if status != 200 || !strings.Contains(raw, `"spendable":10000`) {
		t.Fatalf("partner balance of A: %d %s, want 200 with 10000 spendable", status, raw)
	}
	status, raw, _ = sendAs(t, p.base, pkey, paramCase{method: "GET",
		path: "/v1/partner/members/GHOST/balance"})
	if status != 404 {
		t.Fatalf("partner balance of an unknown member: %d %s, want 404", status, raw)
	}
}
