package app

import "testing"

// A body that gives a field twice (or twice in different case) is refused
// naming it, before its key is used: the same key then carries the
// corrected request, and only that one moves points.
func TestRESTRefusesRepeatedKeys(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	m := "/v1/programs/telco/members/m-1"
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "m-1"})
	for _, tc := range []struct{ path, body, field string }{
		{"/credits", `{"points":5,"points":5000,"reason":"dup"}`, "points"},
		{"/credits", `{"points":5,"Points":5000,"reason":"dup"}`, "Points"},
		{"/adjustments", `{"points":5,"reason":"a","REASON":"b"}`, "REASON"},
	} {
		r := c.must(400, "POST", m+tc.path, "dup-credit", tc.body, "X-Actor", "ana")
		if r.body["field"] != tc.field {
			t.Errorf("%s %s: %s; want the field %s named", tc.path, tc.body, r.raw, tc.field)
		}
	}
	c.must(201, "POST", m+"/credits", "dup-credit", `{"points":5,"reason":"once"}`)
	b := c.must(200, "GET", m+"/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 5 {
		t.Fatalf("available %d, want 5: only the corrected credit", got)
	}

	// In a batch, the event and its field are named.
	r := c.must(400, "POST", "/v1/programs/telco/events/batches", "", `{"events":[
		{"txn_id":"b-1","member":"m-1","type":"topup","amount":"10"},
		{"txn_id":"b-2","member":"m-1","type":"topup","amount":"10","amount":"99999"}]}`)
	if r.body["field"] != "events[1].amount" {
		t.Fatalf("batch: %s; want events[1].amount named", r.raw)
	}
	b = c.must(200, "GET", m+"/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 5 {
		t.Fatalf("available %d after the refused batch, want 5", got)
	}
}
