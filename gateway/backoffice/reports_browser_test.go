package backoffice_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// TestReportsInChromium runs a small scenario through the whole platform
// with the reporting sink on, then an analyst opens the reports page: the
// chart has a bar for each figure that is not zero, and the table shows the
// figures of the scenario.
func TestReportsInChromium(t *testing.T) {
	exec := chromium(t)
	shots := screenshotDir(t)
	ch, chDB := chtest.Database(t)

	cfg := &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 2, BatchSize: 64,
		ResultWait: 10 * time.Second, APIKeys: "billing=" + apiKey, LogLevel: "error",
		ClickHouseAddr: chtest.Addr(), ClickHouseDB: chDB}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	a, err := app.Start(context.Background(), cfg, log,
		app.Roles{Gateway: true, Core: true, Adapters: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	base := "http://" + a.Addr()

	// Telco (America/Santiago, 1 point a dollar): 29 points in September,
	// 129 in October, and 40 redeemed now.
	api(t, base, "PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco",
		"currency": "USD", "points_per_unit": "1", "expiry_unit": "months",
		"expiry_length": 24, "expiry_round": "month"}, 201)
	api(t, base, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{
		"customer_ref": "C1", "channel": "web", "enrolled_at": "2026-08-31T23:30:00-04:00"}, 201)
	api(t, base, "POST", "/v1/programs/telco/members", "enr-2", map[string]any{
		"customer_ref": "C2", "channel": "store", "enrolled_at": "2026-10-06T10:00:00-03:00"},
		201)
	for i, b := range []struct{ member, at, amount string }{
		{"C1", "2026-09-05T12:00:00-04:00", "29.85"},
		{"C1", "2026-10-05T12:00:00-03:00", "29.85"},
		{"C2", "2026-10-06T12:00:00-03:00", "100"},
	} {
		api(t, base, "POST", "/v1/programs/telco/members/"+b.member+"/events",
			fmt.Sprintf("bill-%d", i), map[string]any{"type": "bill_paid", "amount": b.amount,
				"occurred_at": b.at}, 201)
	}
	api(t, base, "POST", "/v1/programs/telco/members/C2/redemptions", "red-1",
		map[string]any{"points": 40}, 201)
	from := time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)
	if n := chtest.Reconciled(t, ch, a.Pool, "telco", from, time.Now().Add(time.Hour),
		30*time.Second); n != 4 {
		t.Fatalf("%d postings reconciled; want 4", n)
	}
	ctx := context.Background()
	if err := backoffice.CreateUser(ctx, a.Pool, "carla", backoffice.RoleAnalyst,
		"carla-password-1"); err != nil {
		t.Fatalf("create carla: %v", err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exec),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1366, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	run := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 60*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, t)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	run("sign in as carla",
		chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("name"), "carla"),
		chromedp.SendKeys(chromedp.ID("password"), "carla-password-1"),
		chromedp.Click(chromedp.CSS(`form[action="/admin/signin"] button`)),
		chromedp.WaitVisible(chromedp.ID("whoami")))

	// The analyst opens the reports from the menu and filters by month from
	// September to tomorrow.
	tomorrow := time.Now().Add(24 * time.Hour).Format(time.DateOnly)
	var table, outstanding string
	var bars []map[string]string
	run("open the reports",
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
		shot("12-reports"))

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
	run("read the CSV link", into(&link, chromedp.AttributeValue(chromedp.ID("csv"), "href")))
	wantLink := "/admin/reports.csv?bucket=month&from=2026-09-01&program=telco&to=" + tomorrow
	if link.Value != wantLink {
		t.Errorf("CSV link %q, want %q", link.Value, wantLink)
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
