package app

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// jstr reads a string at a dotted path of a JSON reply.
func jstr(t *testing.T, r reply, path string) string {
	t.Helper()
	var cur any = r.body
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: not an object at %q in %s", path, k, r.raw)
		}
		cur = m[k]
	}
	s, ok := cur.(string)
	if !ok {
		t.Fatalf("%s: not a string in %s", path, r.raw)
	}
	return s
}

// Two partners pay with the same member's points over the partner API:
// they race for one balance, the winner captures part, refunds part (once
// per refund id, never more than captured), cannot be seen by the other
// partner, and settles; a revoked key stops working.
func TestPartnerAPIEndToEnd(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	op := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(op)
	op.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "7590-VHVEG"})
	op.must(201, "POST", "/v1/programs/telco/members/7590-VHVEG/credits", "cr-1",
		map[string]any{"points": 1000, "reason": "welcome"})

	// Two partners, a key each (shown once, kept only as a digest).
	partners := map[string]*client{}
	for i, code := range []string{"cafe", "shop"} {
		op.must(201, "POST", "/v1/programs/telco/partners", "partner-"+code, map[string]any{
			"code": code, "name": strings.ToUpper(code), "currency": "CLP",
			"point_value": []string{"1.5", "2"}[i], "can_burn": true, "can_earn": true})
		r := op.must(201, "POST", "/v1/programs/telco/partners/"+code+"/keys", "key-"+code,
			map[string]any{"scopes": []string{"balance", "authorize", "capture", "void",
				"refund", "earn", "settlement"}})
		key := jstr(t, r, "key")
		if !strings.HasPrefix(key, "pk_") || len(key) != 46 {
			t.Fatalf("key %q", key)
		}
		// The same call again (its answer lost, say) cannot show the key
		// twice, and says what to do instead of calling itself another
		// request.
		again := op.must(409, "POST", "/v1/programs/telco/partners/"+code+"/keys",
			"key-"+code, map[string]any{"scopes": []string{"balance", "authorize", "capture",
				"void", "refund", "earn", "settlement"}})
		if !strings.Contains(again.raw, "shown only once") ||
			!strings.Contains(again.raw, "revoke") {
			t.Fatalf("a key made again under its Idempotency-Key: %s", again.raw)
		}
		got := op.must(200, "GET", "/v1/programs/telco/partners/"+code, "", nil)
		if strings.Contains(got.raw, key) || !strings.Contains(got.raw, key[:10]) {
			t.Fatalf("the partner's key list shows the key or lacks its prefix: %s", got.raw)
		}
		partners[code] = &client{t: t, base: op.base, key: key}
	}
	// An operator key is no partner key, and the other way round.
	op.must(401, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
	partners["cafe"].must(401, "GET", "/v1/programs/telco/members/7590-VHVEG/balance", "", nil)

	r := partners["cafe"].must(200, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
	if jnum(t, r, "spendable") != 1000 {
		t.Fatalf("spendable: %s", r.raw)
	}

	// The race: 600 each from 1000.
	replies := map[string]reply{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for code, c := range partners {
		wg.Go(func() {
			r := c.send("POST", "/v1/partner/transactions", code+"-1",
				map[string]any{"member": "7590-VHVEG", "points": 600})
			mu.Lock()
			replies[code] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	winner, loser := "cafe", "shop"
	if replies["cafe"].status != 201 {
		winner, loser = "shop", "cafe"
	}
	if replies[winner].status != 201 || replies[loser].status != 422 {
		t.Fatalf("race: cafe %d %s, shop %d %s; want one 201 and one 422",
			replies["cafe"].status, replies["cafe"].raw, replies["shop"].status,
			replies["shop"].raw)
	}
	w, l := partners[winner], partners[loser]
	pay := "/v1/partner/transactions/" + winner + "-1"
	r = op.must(200, "GET", "/v1/programs/telco/members/7590-VHVEG/balance", "", nil)
	if jnum(t, r, "balance.available") != 400 || jnum(t, r, "balance.held") != 600 {
		t.Fatalf("after the race: %s", r.raw)
	}

	// The loser cannot see or touch the winner's payment.
	l.must(404, "GET", pay, "", nil)
	l.must(404, "POST", pay+"/capture", "steal-1", map[string]any{"points": 10})

	// Capture 450 of 600; refund 150, the same refund again, then too much.
	w.must(201, "POST", pay+"/capture", "cap-1", map[string]any{"points": 450})
	w.must(201, "POST", pay+"/refunds", "ref-1", map[string]any{"points": 150})
	again := w.must(201, "POST", pay+"/refunds", "ref-1", map[string]any{"points": 150})
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a repeated refund was not a replay: %s", again.raw)
	}
	w.must(400, "POST", pay+"/refunds", "ref-2", map[string]any{"points": 301})
	r = w.must(200, "GET", pay, "", nil)
	if jnum(t, r, "captured") != 450 || jnum(t, r, "refunded") != 150 ||
		jstr(t, r, "status") != "captured" {
		t.Fatalf("payment: %s", r.raw)
	}
	r = w.must(200, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
	if jnum(t, r, "spendable") != 700 {
		t.Fatalf("after capture and refund: %s", r.raw)
	}

	// A purchase paid in money earns at the program's rate, in the
	// program's currency. These partners settle in CLP and the program
	// counts in USD: a purchase that names no currency is in the partner's
	// own, and is refused instead of earning a dollar's points per peso.
	r = w.must(400, "POST", "/v1/partner/members/7590-VHVEG/purchases", "buy-0",
		map[string]any{"amount": "12990"})
	if jstr(t, r, "field") != "currency" || !strings.Contains(r.raw, "USD") {
		t.Fatalf("a purchase in the partner's CLP: %s, want currency refused naming USD", r.raw)
	}
	r = w.must(200, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
	if jnum(t, r, "spendable") != 700 {
		t.Fatalf("after the refused purchase: %s, want 700 spendable", r.raw)
	}
	// Named in USD it earns: 12.99 → 12 points.
	r = w.must(201, "POST", "/v1/partner/members/7590-VHVEG/purchases", "buy-1",
		map[string]any{"amount": "12.99", "currency": "USD"})
	if jnum(t, r, "data.points") != 12 {
		t.Fatalf("earn: %s", r.raw)
	}
	// Its refund follows the same rule: 12,990 with no currency is pesos,
	// refused; read as dollars it took every point the partner gave.
	r = w.must(400, "POST", "/v1/partner/members/7590-VHVEG/purchase-refunds", "back-0",
		map[string]any{"amount": "12990", "reason": "returned"})
	if jstr(t, r, "field") != "currency" || !strings.Contains(r.raw, "USD") {
		t.Fatalf("a refund in the partner's CLP: %s, want currency refused naming USD", r.raw)
	}
	r = w.must(200, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
	if jnum(t, r, "spendable") != 712 {
		t.Fatalf("after the refused refund: %s, want 712 spendable", r.raw)
	}
	r = w.must(201, "POST", "/v1/partner/members/7590-VHVEG/purchase-refunds", "back-1",
		map[string]any{"amount": "5.50", "currency": "USD", "reason": "returned"})
	if jnum(t, r, "data.points") != -5 {
		t.Fatalf("a refund of 5.50 USD: %s, want 5 points taken", r.raw)
	}
	r = w.must(200, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
	if jnum(t, r, "spendable") != 707 {
		t.Fatalf("after the refund: %s, want 707 spendable", r.raw)
	}
	// The partner moves to USD and refunds 1 dollar naming no currency;
	// the operator moves it back to CLP, and the partner's retry of the
	// same refund is the same request: a replay, not a 409.
	setCurrency := func(cur, txn string) {
		value := map[string]string{"cafe": "1.5", "shop": "2"}[winner]
		op.must(201, "POST", "/v1/programs/telco/partners", txn, map[string]any{
			"code": winner, "name": strings.ToUpper(winner), "currency": cur,
			"point_value": value, "can_burn": true, "can_earn": true})
	}
	setCurrency("USD", "partner-usd")
	w.must(201, "POST", "/v1/partner/members/7590-VHVEG/purchase-refunds", "back-2",
		map[string]any{"amount": "1.00", "reason": "returned"})
	setCurrency("CLP", "partner-clp")
	again = w.must(201, "POST", "/v1/partner/members/7590-VHVEG/purchase-refunds", "back-2",
		map[string]any{"amount": "1.00", "reason": "returned"})
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the retried refund was not a replay: %s", again.raw)
	}
	r = w.must(200, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
	if jnum(t, r, "spendable") != 706 {
		t.Fatalf("after the retried refund: %s, want 706 spendable", r.raw)
	}

	// Settlement of today: 450 captured, 150 refunded, worth 300 × the point value.
	q := url.Values{"from": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)},
		"to": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}
	r = w.must(200, "GET", "/v1/partner/settlement?"+q.Encode(), "", nil)
	wantValue := map[string]string{"cafe": "450", "shop": "600"}[winner]
	if jnum(t, r, "captured") != 450 || jnum(t, r, "refunded") != 150 ||
		jnum(t, r, "net") != 300 || jstr(t, r, "value") != wantValue {
		t.Fatalf("settlement: %s", r.raw)
	}
	q.Set("format", "csv")
	r = op.must(200, "GET", "/v1/programs/telco/partners/"+winner+"/settlement?"+q.Encode(),
		"", nil)
	csvLines := strings.Split(strings.TrimSpace(r.raw), "\n")
	if len(csvLines) != 4 || !strings.HasPrefix(csvLines[1], "capture,cap-1,"+winner+"-1,") ||
		!strings.HasPrefix(csvLines[2], "refund,ref-1,"+winner+"-1,7590-VHVEG,-150,") ||
		csvLines[3] != fmt.Sprintf("total,,,,300,%s,CLP,", wantValue) {
		t.Fatalf("settlement CSV:\n%s", r.raw)
	}
	r = l.must(200, "GET", "/v1/partner/settlement?"+url.Values{"from": q["from"],
		"to": q["to"]}.Encode(), "", nil)
	if jnum(t, r, "net") != 0 || jstr(t, r, "value") != "0" {
		t.Fatalf("the loser's settlement: %s", r.raw)
	}
	// Dates bound a settlement as they bound reports: days of the program's
	// time zone, from yesterday's first instant to tomorrow's.
	santiago, _ := time.LoadLocation("America/Santiago")
	days := url.Values{"from": {time.Now().In(santiago).AddDate(0, 0, -1).Format(time.DateOnly)},
		"to": {time.Now().In(santiago).AddDate(0, 0, 1).Format(time.DateOnly)}}
	r = w.must(200, "GET", "/v1/partner/settlement?"+days.Encode(), "", nil)
	if jnum(t, r, "net") != 300 || !strings.HasSuffix(jstr(t, r, "from"), "T03:00:00Z") &&
		!strings.HasSuffix(jstr(t, r, "from"), "T04:00:00Z") {
		t.Fatalf("settlement by dates %v: %s", days, r.raw)
	}
	days.Set("from", "2026-13-01")
	r = w.must(400, "GET", "/v1/partner/settlement?"+days.Encode(), "", nil)
	if r.body["field"] != "from" || !strings.Contains(jstr(t, r, "detail"), "2026-13-01") {
		t.Fatalf("a bad date: %s; want the field from and the value named", r.raw)
	}
	// Of two ends one would be dropped without a word; a fraction of a
	// second is refused as the settlement report refuses it.
	r = w.must(400, "GET", "/v1/partner/settlement?"+url.Values{
		"from": q["from"], "to": {q.Get("to"), "2030-01-01"}}.Encode(), "", nil)
	if r.body["field"] != "to" || !strings.Contains(jstr(t, r, "detail"), "2 times") {
		t.Fatalf("two ends: %s; want the field to refused", r.raw)
	}
	r = op.must(400, "GET", "/v1/programs/telco/partners/"+winner+"/settlement?"+url.Values{
		"from": q["from"], "to": q["to"], "fromat": {"csv"}}.Encode(), "", nil)
	if r.body["field"] != "fromat" {
		t.Fatalf("a misspelt parameter: %s; want it named", r.raw)
	}
	r = w.must(400, "GET", "/v1/partner/settlement?"+url.Values{"from": q["from"],
		"to": {"2030-01-01T00:00:00.5Z"}}.Encode(), "", nil)
	if r.body["field"] != "to" || !strings.Contains(jstr(t, r, "detail"), "fraction") {
		t.Fatalf("a fraction of a second: %s; want the field to refused", r.raw)
	}

	// Revoking the winner's key shuts it out.
	p := op.must(200, "GET", "/v1/programs/telco/partners/"+winner, "", nil)
	keyID := p.body["keys"].([]any)[0].(map[string]any)["id"].(string)
	op.must(201, "POST", "/v1/programs/telco/partners/"+winner+"/keys/"+keyID+"/revoke",
		"revoke-1", nil)
	w.must(401, "GET", "/v1/partner/members/7590-VHVEG/balance", "", nil)
}

// Two members order the last unit of a reward at once over REST: one order
// is placed, the other refused with 409 and nothing debited.
func TestCatalogLastUnitEndToEnd(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	op := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(op)
	for _, ref := range []string{"ana", "ben"} {
		op.must(201, "POST", "/v1/programs/telco/members", "enr-"+ref,
			map[string]any{"customer_ref": ref})
		op.must(201, "POST", "/v1/programs/telco/members/"+ref+"/credits", "cr-"+ref,
			map[string]any{"points": 5000, "reason": "welcome"})
	}
	op.must(201, "POST", "/v1/programs/telco/rewards", "rw-1", map[string]any{
		"code": "cinema", "name": "Cinema", "points": 4500, "stock": 1,
		"cancel_window_seconds": 3600})

	replies := map[string]reply{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ref := range []string{"ana", "ben"} {
		wg.Go(func() {
			r := op.send("POST", "/v1/programs/telco/members/"+ref+"/orders", "ord-"+ref,
				map[string]any{"reward": "cinema"})
			mu.Lock()
			replies[ref] = r
			mu.Unlock()
		})
	}
	wg.Wait()
	winner, loser := "ana", "ben"
	if replies["ana"].status != 201 {
		winner, loser = "ben", "ana"
	}
	if replies[winner].status != 201 || replies[loser].status != 409 {
		t.Fatalf("race: ana %d %s, ben %d %s", replies["ana"].status, replies["ana"].raw,
			replies["ben"].status, replies["ben"].raw)
	}
	voucher := jstr(t, replies[winner], "data.voucher")
	orderID := jstr(t, replies[winner], "data.id")
	for ref, want := range map[string]int64{winner: 500, loser: 5000} {
		r := op.must(200, "GET", "/v1/programs/telco/members/"+ref+"/balance", "", nil)
		if jnum(t, r, "balance.available") != want {
			t.Fatalf("%s: %s, want %d available", ref, r.raw, want)
		}
	}
	r := op.must(200, "GET", "/v1/programs/telco/rewards/cinema", "", nil)
	if jnum(t, r, "stock") != 0 || jnum(t, r, "redeemed") != 1 {
		t.Fatalf("reward: %s", r.raw)
	}
	r = op.must(200, "GET", "/v1/programs/telco/members/"+winner+"/orders/"+orderID, "", nil)
	if jstr(t, r, "voucher") != voucher || jstr(t, r, "status") != "placed" {
		t.Fatalf("order: %s", r.raw)
	}

	// Cancel: points and stock back, once.
	op.must(201, "POST", "/v1/programs/telco/members/"+winner+"/orders/"+orderID+"/cancel",
		"cancel-1", nil)
	op.must(409, "POST", "/v1/programs/telco/members/"+winner+"/orders/"+orderID+"/cancel",
		"cancel-2", nil)
	r = op.must(200, "GET", "/v1/programs/telco/members/"+winner+"/balance", "", nil)
	if jnum(t, r, "balance.available") != 5000 {
		t.Fatalf("after cancel: %s", r.raw)
	}
	r = op.must(200, "GET", "/v1/programs/telco/rewards/cinema", "", nil)
	if jnum(t, r, "stock") != 1 || jnum(t, r, "redeemed") != 0 {
		t.Fatalf("reward after cancel: %s", r.raw)
	}
}
