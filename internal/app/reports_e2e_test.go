package app

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// reportRows reads the rows of a JSON report as cells written back as JSON
// text, in the order of its columns.
func reportRows(t *testing.T, r reply) []string {
	t.Helper()
	var doc struct {
		Columns []string                     `json:"columns"`
		Rows    []map[string]json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal([]byte(r.raw), &doc); err != nil {
		t.Fatalf("report: %v: %s", err, r.raw)
	}
	var out []string
	for _, row := range doc.Rows {
		var cells []string
		for _, c := range doc.Columns {
			cells = append(cells, string(row[c]))
		}
		out = append(out, strings.Join(cells, " "))
	}
	return out
}

// TestReportsEndToEnd runs a scenario through the whole platform with the
// reporting sink on, waits until ClickHouse has every posting (the
// reconciliation check), then reads the reports over REST, in JSON and CSV.
func TestReportsEndToEnd(t *testing.T) {
	ch, db := chtest.Database(t)
	cfg := testConfig(t)
	cfg.ClickHouseAddr, cfg.ClickHouseDB = chtest.Addr(), db
	a := startApp(t, cfg, Roles{Gateway: true, Core: true, Adapters: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c) // telco: America/Santiago, 1 point a dollar, 24 months

	// C1 enrolls on 31 August in Santiago (1 September in UTC), C2 in October.
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{
		"customer_ref": "C1", "channel": "web", "enrolled_at": "2026-08-31T23:30:00-04:00"})
	c.must(201, "POST", "/v1/programs/telco/members", "enr-2", map[string]any{
		"customer_ref": "C2", "channel": "store", "enrolled_at": "2026-10-06T10:00:00-03:00"})
	bills := []struct{ member, at, amount string }{
		{"C1", "2026-09-05T23:30:00-04:00", "29.85"}, // the night before clocks skip midnight
		{"C1", "2026-10-05T12:00:00-03:00", "29.85"},
		{"C2", "2026-10-06T12:00:00-03:00", "100"},
	}
	for i, b := range bills {
		c.must(201, "POST", "/v1/programs/telco/members/"+b.member+"/events",
			"bill-"+string(rune('a'+i)), map[string]any{"type": "bill_paid",
				"amount": b.amount, "occurred_at": b.at})
	}
	// Now (December 2026 or later): C2 spends 40, C1 loses 5.
	c.must(201, "POST", "/v1/programs/telco/members/C2/redemptions", "red-1",
		map[string]any{"points": 40})
	c.must(201, "POST", "/v1/programs/telco/members/C1/adjustments", "adj-1",
		map[string]any{"points": -5, "reason": "correction"}, "X-Actor", "ana")
	// C1 holds 10 for a payment not yet captured: still C1's, still owed.
	c.must(201, "POST", "/v1/programs/telco/members/C1/holds", "hold-1",
		map[string]any{"points": 10})

	// The reconciliation check: ClickHouse catches up with the ledger.
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if n := chtest.Reconciled(t, ch, a.Pool, "telco", from, time.Now().Add(time.Hour),
		30*time.Second); n != 6 {
		t.Fatalf("%d postings reconciled; want 6", n)
	}

	base := "/v1/programs/telco/reports/"

	// Flows per month, in Santiago (-04 in September, -03 from October).
	r := c.must(200, "GET", base+"flows?bucket=month&from=2026-09-01&to=2026-12-01", "", nil)
	want := []string{
		`"2026-09-01T00:00:00-04:00" 29 0 0 0 0 0 0 0 29 1`,
		`"2026-10-01T00:00:00-03:00" 129 0 0 0 0 0 0 0 129 2`,
	}
	if got := reportRows(t, r); !slices.Equal(got, want) {
		t.Errorf("flows\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The same by partner, as CSV.
	r = c.must(200, "GET", base+"flows?bucket=month&from=2026-09-01&to=2026-12-01&by=partner"+
		"&format=csv", "", nil)
	wantCSV := "start,partner,issued,redeemed,expired,adjusted_down,clawed_back,returned," +
		"forfeited,moved,net,events\n" +
		"2026-09-01T00:00:00-04:00,,29,0,0,0,0,0,0,0,29,1\n" +
		"2026-10-01T00:00:00-03:00,,129,0,0,0,0,0,0,0,129,2\n"
	if r.raw != wantCSV {
		t.Errorf("flows by partner CSV\n%s\nwant\n%s", r.raw, wantCSV)
	}

	// By tier: the program has no tiers, so every event is in the group of ''.
	r = c.must(200, "GET", base+"flows?bucket=month&from=2026-09-01&to=2026-12-01&by=tier",
		"", nil)
	wantTier := []string{
		`"2026-09-01T00:00:00-04:00" "" 29 0 0 0 0 0 0 0 29 1`,
		`"2026-10-01T00:00:00-03:00" "" 129 0 0 0 0 0 0 0 129 2`,
	}
	if got := reportRows(t, r); !slices.Equal(got, wantTier) {
		t.Errorf("flows by tier\n%s\nwant\n%s", strings.Join(got, "\n"),
			strings.Join(wantTier, "\n"))
	}

	// Liability: 29 + 29 + 100 - 40 - 5 points, 10 of them held, at 0.5
	// each; CSV by Accept. Before the hold was placed, nothing was held.
	r = c.must(200, "GET", base+"liability?value_per_point=0.5", "", nil)
	if got := reportRows(t, r); !slices.Equal(got, []string{`113 10 6 "0.5" "56.5"`}) {
		t.Errorf("liability %v", got)
	}
	r = c.must(200, "GET", base+"liability?value_per_point=0.5", "", nil, "Accept", "text/csv")
	if r.raw != "points,held,events,value_per_point,value\n113,10,6,0.5,56.5\n" {
		t.Errorf("liability CSV %q", r.raw)
	}
	r = c.must(200, "GET", base+"liability?at=2026-11-30", "", nil)
	if got := reportRows(t, r); !slices.Equal(got, []string{`158 0 3 "0" "0"`}) {
		t.Errorf("liability at the end of November %v; want 158, none held", got)
	}

	// Santiago skips 6 September's midnight (00:00 -04 is 01:00 -03): the
	// 5th runs to 04:00 UTC, and C1's bill at 23:30 is in it. Day bounds
	// used to fall at 03:00 UTC, the 5th's 23:00, and moved it to the 6th.
	r = c.must(200, "GET", base+"liability?at=2026-09-05", "", nil)
	if got := reportRows(t, r); !slices.Equal(got, []string{`29 0 1 "0" "0"`}) {
		t.Errorf("liability at the end of 5 September %v; want C1's 29", got)
	}
	r = c.must(200, "GET", base+"flows?bucket=day&from=2026-09-05&to=2026-09-07", "", nil)
	if got := reportRows(t, r); !slices.Equal(got, []string{
		`"2026-09-05T00:00:00-04:00" 29 0 0 0 0 0 0 0 29 1`}) {
		t.Errorf("flows of 5 and 6 September %v; want C1's 29 on the 5th", got)
	}
	r = c.must(200, "GET", base+"flows?bucket=day&from=2026-09-06&to=2026-09-07", "", nil)
	if got := reportRows(t, r); len(got) != 0 {
		t.Errorf("flows of 6 September %v; want none", got)
	}

	// Expiring, seen from 1 September 2028: the September lot (29 less the 5
	// taken first and the 10 the open hold reserves, which do not expire
	// while held) ends on 1 October 03:00 UTC, the October ones a month on.
	r = c.must(200, "GET", base+"expiring?at=2028-09-01T00:00:00Z&days=30,31,62", "", nil)
	if got := reportRows(t, r); !slices.Equal(got, []string{"30 0 0 0", "31 14 1 1",
		"62 103 3 2"}) {
		t.Errorf("expiring %v", got)
	}

	// Membership: C1 counts in August, in Santiago; active members by month.
	r = c.must(200, "GET", base+"membership?from=2026-08-01&to=2027-01-01", "", nil)
	wantM := []string{`"2026-08-01T00:00:00-04:00" 1 0`, `"2026-09-01T00:00:00-04:00" 0 1`,
		`"2026-10-01T00:00:00-03:00" 1 2`}
	got := reportRows(t, r)
	if len(got) < 3 || !slices.Equal(got[:3], wantM) {
		t.Errorf("membership %v; want first %v", got, wantM)
	}

	// Breakage with nothing expired; settlement and top rewards empty.
	r = c.must(200, "GET", base+"breakage?from=2026-09-01&to=2026-11-01", "", nil)
	if got := reportRows(t, r); !slices.Equal(got, []string{
		`"2026-09-01T00:00:00-04:00" "2026-11-01T00:00:00-03:00" 158 0 "0.0000"`}) {
		t.Errorf("breakage %v", got)
	}
	for _, name := range []string{"settlement", "top-rewards"} {
		r = c.must(200, "GET", base+name+"?from=2026-09-01&to=2027-01-01", "", nil)
		if got := reportRows(t, r); len(got) != 0 {
			t.Errorf("%s: %v; want no rows", name, got)
		}
	}

	// Mistakes.
	c.must(404, "GET", base+"nope", "", nil)
	c.must(404, "GET", "/v1/programs/nope/reports/flows", "", nil)
	c.must(400, "GET", base+"flows?bucket=year", "", nil)
	c.must(400, "GET", base+"flows?by=member", "", nil)
	c.must(400, "GET", base+"flows?format=xml", "", nil)
	c.must(400, "GET", base+"breakage?to=2026-11-01", "", nil)
	c.must(400, "GET", base+"liability?value_per_point=abc", "", nil)
	c.must(400, "GET", base+"flows?from=2026-11-01&to=2026-09-01", "", nil)
	// Reports count whole seconds; a misspelt or repeated parameter would
	// answer another period than the one asked.
	for query, field := range map[string]string{
		"liability?at=2026-09-06T03:30:00.5Z":                    "at",
		"flows?frm=2026-09-01":                                   "frm",
		"flows?from=2026-10-01&from=2026-09-01":                  "from",
		"flows?by=channel&by=tier":                               "by",
		"flows?by=channel;by=tier":                               "query",
		"flows?from=2026-09-01T00:00:00.250-04:00&to=2026-10-01": "from",
	} {
		r := c.must(400, "GET", base+query, "", nil)
		if r.body["field"] != field {
			t.Errorf("%s: %s; want an error naming %s", query, r.raw, field)
		}
	}
	(&client{t: t, base: c.base}).must(401, "GET", base+"flows", "", nil)
}
