package app

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// expiriesOfLots adds up, from the lots of a balance read with lots=true,
// the free points (remaining less held) at each expiry instant, and
// returns the first twelve, as the API writes next_expiries.
func expiriesOfLots(t *testing.T, lots []any) []any {
	t.Helper()
	sums := map[int64]int64{}
	for _, l := range lots {
		l := l.(map[string]any)
		exp, ok := l["expires_at"].(string)
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, exp)
		if err != nil {
			t.Fatalf("lot expiry %q: %v", exp, err)
		}
		sums[at.UnixMicro()] += int64(l["remaining"].(float64) - l["held"].(float64))
	}
	var keys []int64
	for k, p := range sums {
		if p != 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	out := []any{}
	for _, k := range keys[:min(12, len(keys))] {
		out = append(out, map[string]any{
			"expires_at": time.UnixMicro(k).UTC().Format(time.RFC3339Nano),
			"points":     float64(sums[k])})
	}
	return out
}

// Through the running gateway: a member with fifteen expiry instants (two
// of them the same instant written in two zones), a held part and a lot
// held whole, and a member merged into it. The plain read and lots=false
// carry no lots and the same next_expiries as lots=true, which are those
// the lots add up to; a member without lots still gets "lots":[] when it
// asks. Unknown members and programs are 404 either way, a bad lots value
// a 400 naming lots, and the partner's balance route does not change.
func TestBalanceLotsThroughTheGateway(t *testing.T) {
	t.Parallel()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	c.must(201, "PUT", "/v1/programs/telco", "prog-1", map[string]any{
		"name": "Telco", "currency": "USD", "points_per_unit": "1", "hold_ttl_seconds": 3600})
	for _, ref := range []string{"S1", "M1", "E1"} {
		c.must(201, "POST", "/v1/programs/telco/members", "enr-"+ref,
			map[string]any{"customer_ref": ref})
	}
	base := time.Now().UTC().Add(30 * 24 * time.Hour).Truncate(time.Hour)
	for i := range 15 {
		at := base.Add(time.Duration(i) * 24 * time.Hour)
		exp := at.Format(time.RFC3339)
		if i%2 == 1 { // the same instant, written in +05:45
			exp = at.In(time.FixedZone("", 5*3600+45*60)).Format(time.RFC3339)
		}
		c.must(201, "POST", "/v1/programs/telco/members/S1/credits", fmt.Sprint("cr-", i),
			map[string]any{"points": 10 + i, "reason": "seed", "expires_at": exp})
		if i == 3 { // a second lot on the fourth instant, from the other zone
			c.must(201, "POST", "/v1/programs/telco/members/S1/credits", "cr-3b",
				map[string]any{"points": 5, "reason": "seed",
					"expires_at": at.In(time.FixedZone("", -3*3600)).Format(time.RFC3339)})
		}
	}
	c.must(201, "POST", "/v1/programs/telco/members/S1/credits", "cr-none",
		map[string]any{"points": 8, "reason": "no expiry"})
	// The first lot held whole, the second in part.
	c.must(201, "POST", "/v1/programs/telco/members/S1/holds", "hold-1",
		map[string]any{"points": 14})
	c.must(201, "POST", "/v1/programs/telco/members/M1/credits", "cr-m",
		map[string]any{"points": 4, "reason": "merged", "expires_at": base.Format(time.RFC3339)})
	c.must(201, "POST", "/v1/programs/telco/members/M1/merge", "merge-1",
		map[string]any{"into": "S1"})

	for _, ref := range []string{"S1", "M1"} {
		path := "/v1/programs/telco/members/" + ref + "/balance"
		plain := c.must(200, "GET", path, "", nil)
		off := c.must(200, "GET", path+"?lots=false", "", nil)
		full := c.must(200, "GET", path+"?lots=true", "", nil)
		for _, r := range []reply{plain, off} {
			if _, has := r.body["lots"]; has {
				t.Fatalf("%s: lots without asking: %s", path, r.raw)
			}
			if r.header.Get("Content-Type") != "application/json" {
				t.Fatalf("%s: Content-Type %q", path, r.header.Get("Content-Type"))
			}
		}
		if plain.body["member"] != "S1" || full.body["member"] != "S1" {
			t.Fatalf("%s: member %v / %v, want the survivor S1", path, plain.body["member"],
				full.body["member"])
		}
		if !reflect.DeepEqual(plain.body["balance"], full.body["balance"]) ||
			!reflect.DeepEqual(plain.body["balance"], off.body["balance"]) {
			t.Fatalf("%s: figures %v / %v / %v", path, plain.body["balance"],
				off.body["balance"], full.body["balance"])
		}
		lots, _ := full.body["lots"].([]any)
		if len(lots) != 18 {
			t.Fatalf("%s: %d lots with lots=true, want 18: %s", path, len(lots), full.raw)
		}
		want := expiriesOfLots(t, lots)
		for name, r := range map[string]reply{"plain": plain, "lots=false": off,
			"lots=true": full} {
			if !reflect.DeepEqual(r.body["next_expiries"], want) {
				got, _ := json.Marshal(r.body["next_expiries"])
				w, _ := json.Marshal(want)
				t.Fatalf("%s %s: next_expiries\n%s\nwant (from the lots)\n%s", path, name, got, w)
			}
		}
		// The first instant: 10 held whole, 4 merged in; the second 11, 4 of
		// them held; the fourth 13 and 5.
		exps := want
		first := exps[0].(map[string]any)
		if len(exps) != 12 || first["points"] != 4.0 || exps[1].(map[string]any)["points"] != 7.0 ||
			exps[3].(map[string]any)["points"] != 18.0 {
			t.Fatalf("%s: next_expiries %v; want 12, with 4, 7 and 18 points at the first, "+
				"second and fourth instants", path, exps)
		}
		if as := plain.body["as_of"].(string); !strings.HasSuffix(as, "Z") {
			t.Fatalf("%s: as_of %s is not in UTC", path, as)
		}
	}

	e := c.must(200, "GET", "/v1/programs/telco/members/E1/balance?lots=true", "", nil)
	if l, ok := e.body["lots"].([]any); !ok || len(l) != 0 || !strings.Contains(e.raw, `"lots":[]`) {
		t.Fatalf("member without lots, lots=true: %s; want \"lots\":[]", e.raw)
	}
	if ne, ok := e.body["next_expiries"].([]any); !ok || len(ne) != 0 {
		t.Fatalf("member without lots: next_expiries %v, want []", e.body["next_expiries"])
	}

	for path, field := range map[string]string{
		"/v1/programs/telco/members/nobody/balance": "member",
		"/v1/programs/nowhere/members/S1/balance":   "program"} {
		for _, q := range []string{"", "?lots=true", "?lots=false"} {
			r := c.send("GET", path+q, "", nil)
			if r.status != 404 || r.body["field"] != field {
				t.Fatalf("GET %s%s: status %d %s, want 404 naming %s", path, q, r.status,
					r.raw, field)
			}
		}
	}
	for _, q := range []string{"1", "TRUE", "yes"} {
		r := c.send("GET", "/v1/programs/telco/members/S1/balance?lots="+q, "", nil)
		if r.status != 400 || r.body["field"] != "lots" {
			t.Fatalf("lots=%s: status %d %s, want 400 naming lots", q, r.status, r.raw)
		}
	}

	// The partner's balance is the spendable figure alone, lots or not.
	pk := partnerCredential(c, "telco", "cafe")
	p := &client{t: t, base: c.base}
	for _, q := range []string{"", "?lots=true", "?lots=bogus"} {
		r := p.must(200, "GET", "/v1/partner/members/S1/balance"+q, "", nil, "X-Api-Key", pk)
		if _, has := r.body["lots"]; has || r.body["spendable"] == nil {
			t.Fatalf("partner balance%s: %s", q, r.raw)
		}
	}
}
