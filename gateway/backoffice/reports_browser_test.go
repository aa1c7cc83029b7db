package backoffice_test

import (
	"encoding/csv"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// TestReportsInChromium runs a small scenario through the whole platform
// with the reporting sink on, then an analyst opens the reports page: the
// chart has a bar for each figure that is not zero, and the table shows the
// figures of the scenario.
func TestReportsInChromium(t *testing.T) {
	ch, chDB := chtest.Database(t)
	p := startPlatform(t, app.Roles{Adapters: true}, func(cfg *app.Config) {
		cfg.ClickHouseAddr, cfg.ClickHouseDB = chtest.Addr(), chDB
	})
	base := p.base

	// Telco (America/Santiago, 1 point a dollar): 29 points in September,
	// 129 in October, and 40 redeemed now.
	p.api("PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco",
		"currency": "USD", "points_per_unit": "1", "expiry_unit": "months",
		"expiry_length": 24, "expiry_round": "month"}, 201)
	p.api("POST", "/v1/programs/telco/members", "enr-1", map[string]any{
		"customer_ref": "C1", "channel": "web", "enrolled_at": "2026-08-31T23:30:00-04:00"}, 201)
	p.api("POST", "/v1/programs/telco/members", "enr-2", map[string]any{
		"customer_ref": "C2", "channel": "store", "enrolled_at": "2026-10-06T10:00:00-03:00"},
		201)
	for i, b := range []struct{ member, at, amount string }{
		{"C1", "2026-09-05T12:00:00-04:00", "29.85"},
		{"C1", "2026-10-05T12:00:00-03:00", "29.85"},
		{"C2", "2026-10-06T12:00:00-03:00", "100"},
	} {
		p.api("POST", "/v1/programs/telco/members/"+b.member+"/events",
			fmt.Sprintf("bill-%d", i), map[string]any{"type": "bill_paid", "amount": b.amount,
				"occurred_at": b.at}, 201)
	}
	p.api("POST", "/v1/programs/telco/members/C2/redemptions", "red-1",
		map[string]any{"points": 40}, 201)
	// The redemption happened when core applied it: its month and the day
	// after it, in the program's zone, are read once from the ledger, so
	// that a month (or day) that ends while the test runs changes nothing.
	santiago := mustZone(t, "America/Santiago")
	redeemed := occurredAt(t, p, "C2", "red-1").In(santiago)
	redeemedMonth := redeemed.Format("2006-01")
	tomorrow := redeemed.AddDate(0, 0, 1).Format(time.DateOnly)
	from := time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)
	if n := chtest.Reconciled(t, ch, p.a.Pool, "telco", from, time.Now().Add(time.Hour),
		30*time.Second); n != 4 {
		t.Fatalf("%d postings reconciled; want 4", n)
	}
	p.users(map[string]backoffice.Role{"carla": backoffice.RoleAnalyst})
	c := newChrome(t, base)
	c.signIn("carla")

	// The analyst opens the reports from the menu and filters by month from
	// September to tomorrow.
	var table, outstanding string
	var bars []map[string]string
	c.run("open the reports",
		chromedp.Click(chromedp.CSS(`nav a[href="/admin/reports"]`)),
		chromedp.WaitVisible(chromedp.ID("from")),
		chromedp.SetValue(chromedp.ID("from"), "2026-09-01"),
		chromedp.SetValue(chromedp.ID("to"), tomorrow),
		chromedp.SetValue(chromedp.ID("bucket"), "month"),
		chromedp.Submit(chromedp.ID("from")),
		chromedp.WaitVisible(chromedp.CSS(`#flows-chart`)),
		into(&table, chromedp.Text(chromedp.CSS("#flows tbody"))),
		into(&outstanding, chromedp.Text(chromedp.ID("outstanding"))),
		into(&bars, chromedp.AttributesAll(chromedp.CSSAll("#flows-chart rect.bar"))),
		c.shot("12-reports"))

	want := []string{"2026-09 29 0 0 0 0 0 0 0 29 1", "2026-10 129 0 0 0 0 0 0 0 129 2",
		redeemedMonth + " 0 40 0 0 0 0 0 0 -40 1"}
	if got := strings.Fields(table); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("flows table %q\nwant %q", strings.Join(got, " "), strings.Join(want, " "))
	}
	if outstanding != "118" {
		t.Errorf("outstanding %q, want 118 (29 + 29 + 100 - 40)", outstanding)
	}

	// Nine bars, three per month; the tallest is October's 129 issued.
	if len(bars) != 9 {
		t.Fatalf("%d bars in the chart, want 9", len(bars))
	}
	var drawn []string
	for _, b := range bars {
		if b["height"] != "0" {
			drawn = append(drawn, b["class"]+" "+b["height"])
		}
	}
	// 29 × 200 / 129 = 44 (whole units); 40 × 200 / 129 = 62.
	wantDrawn := "bar issued 44,bar issued 200,bar redeemed 62"
	if strings.Join(drawn, ",") != wantDrawn {
		t.Errorf("bars drawn %q, want %q", strings.Join(drawn, ","), wantDrawn)
	}

	// The CSV link keeps the filter.
	var link chromedp.AttributeResult
	c.run("read the CSV link", into(&link, chromedp.AttributeValue(chromedp.ID("csv"), "href")))
	wantLink := "/admin/reports.csv?bucket=month&from=2026-09-01&program=telco&to=" + tomorrow
	if link.Value != wantLink {
		t.Errorf("CSV link %q, want %q", link.Value, wantLink)
	}

	// Opened without a filter, the page's defaults go into the link too, and
	// the file holds the months the page shows.
	// The defaults follow the day the page is read (the twelve months up to
	// it, in the program's zone): either day if midnight passes meanwhile.
	before := time.Now()
	c.run("open the reports without a filter", chromedp.Navigate(base+"/admin/reports"),
		chromedp.WaitVisible(chromedp.ID("csv")),
		into(&link, chromedp.AttributeValue(chromedp.ID("csv"), "href")))
	after := time.Now()
	u, err := url.Parse(link.Value)
	if err != nil {
		t.Fatalf("default CSV link %q: %v", link.Value, err)
	}
	var defaults []string
	for _, at := range []time.Time{before, after} {
		d := at.In(santiago)
		defaults = append(defaults, url.Values{"bucket": {"month"}, "program": {"telco"},
			"from": {time.Date(d.Year(), d.Month()-11, 1, 0, 0, 0, 0, santiago).
				Format(time.DateOnly)},
			"to": {d.AddDate(0, 0, 1).Format(time.DateOnly)}}.Encode())
	}
	if !slices.Contains(defaults, u.RawQuery) {
		t.Fatalf("default CSV link %q, want /admin/reports.csv?%s", link.Value, defaults[0])
	}
	start, _ := time.ParseInLocation(time.DateOnly, u.Query().Get("from"), santiago)
	end, _ := time.ParseInLocation(time.DateOnly, u.Query().Get("to"), santiago)
	// The file holds the months of the scenario that fall in that period.
	code, body := c.fetch("GET", base+link.Value, nil, "")
	var wantMonths []string
	for _, at := range []time.Time{time.Date(2026, 9, 5, 16, 0, 0, 0, time.UTC),
		time.Date(2026, 10, 5, 15, 0, 0, 0, time.UTC), redeemed} {
		m := at.In(santiago).Format("2006-01")
		if !at.Before(start) && at.Before(end) && !slices.Contains(wantMonths, m) {
			wantMonths = append(wantMonths, m)
		}
	}
	var gotMonths []string
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	for i, row := range rows {
		if i > 0 && len(row) > 1 && len(row[1]) >= 7 {
			gotMonths = append(gotMonths, row[1][:7])
		}
	}
	if code != 200 || err != nil || len(wantMonths) == 0 ||
		!slices.Equal(gotMonths, wantMonths) {
		t.Errorf("default CSV %s: %d (%v)\n%s\nwant the rows of %v", link.Value, code, err,
			body, wantMonths)
	}
}

// occurredAt is when the ledger says the posting of txn happened, from
// member's statement in program telco.
func occurredAt(t *testing.T, p *platform, member, txn string) time.Time {
	t.Helper()
	page, err := p.a.Ledger.Statement(t.Context(), "telco", member, "", 50)
	if err != nil {
		t.Fatalf("statement of %s: %v", member, err)
	}
	for _, posting := range page.Postings {
		if posting.TxnID == txn {
			return posting.OccurredAt
		}
	}
	t.Fatalf("no posting of %s in the statement of %s: %+v", txn, member, page.Postings)
	return time.Time{}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("zone %s: %v", name, err)
	}
	return loc
}
