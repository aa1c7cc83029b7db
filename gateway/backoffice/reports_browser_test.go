package backoffice_test

import (
	"fmt"
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
	tomorrow := time.Now().Add(24 * time.Hour).Format(time.DateOnly)
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

	now := time.Now().In(mustZone(t, "America/Santiago")).Format("2006-01")
	want := []string{"2026-09 29 0 0 29 1", "2026-10 129 0 0 129 2", now + " 0 40 0 -40 1"}
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
	c.run("open the reports without a filter", chromedp.Navigate(base+"/admin/reports"),
		chromedp.WaitVisible(chromedp.ID("csv")),
		into(&link, chromedp.AttributeValue(chromedp.ID("csv"), "href")))
	code, body := c.fetch("GET", base+link.Value, nil, "")
	if code != 200 || !strings.Contains(link.Value, "program=telco") ||
		strings.Count(strings.TrimSpace(body), "\n") < 2 {
		t.Errorf("default CSV %s: %d\n%s\nwant the September and October rows", link.Value,
			code, body)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("zone %s: %v", name, err)
	}
	return loc
}
