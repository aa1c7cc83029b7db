package backoffice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

const apiKey = "billing-key-0123456789"

// screenshotDir is where the browser test leaves PNGs of the main pages for
// review: $PUNTOS_SCREENSHOTS, or testdata/screenshots (ignored by git).
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("PUNTOS_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("testdata", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("screenshot folder: %v", err)
	}
	return dir
}

// chromium finds the browser. A missing browser fails the test: the back
// office is not tested without it.
func chromium(t *testing.T) string {
	path := os.Getenv("PUNTOS_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Chromium is required for the back-office browser test and is not at %s: "+
			"install it (apt-get install -y chromium) or set PUNTOS_CHROMIUM", path)
	}
	return path
}

// api calls the REST gateway and fails the test on an unexpected status.
func api(t *testing.T, base, method, path, txn string, body any, want int) {
	t.Helper()
	buf, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, base+path, bytes.NewReader(buf))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Idempotency-Key", txn)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	res.Body.Close()
	if res.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d", method, path, res.StatusCode, want)
	}
}

func TestBackOfficeInChromium(t *testing.T) {
	exec := chromium(t)
	shots := screenshotDir(t)

	// The whole platform, as `puntos run` starts it, with one member of 1,500.
	cfg := &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 2, BatchSize: 64,
		ResultWait: 10 * time.Second, APIKeys: "billing=" + apiKey, LogLevel: "error"}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	a, err := app.Start(context.Background(), cfg, log, app.Roles{Gateway: true, Core: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	base := "http://" + a.Addr()
	api(t, base, "PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco",
		"currency": "USD", "points_per_unit": "1", "expiry_unit": "months",
		"expiry_length": 24, "expiry_round": "month"}, 201)
	api(t, base, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "7590-VHVEG", "channel": "web"}, 201)
	api(t, base, "POST", "/v1/programs/telco/members/7590-VHVEG/credits", "cr-1",
		map[string]any{"points": 1500, "reason": "welcome"}, 201)
	api(t, base, "POST", "/v1/programs/telco/rules", "rule-1", map[string]any{"code": "base",
		"name": "Two points a dollar", "event_type": "bill_paid",
		"formula": map[string]any{"kind": "per_unit", "rate": "2"}}, 201)
	api(t, base, "PUT", "/v1/programs/telco/tiers", "tiers-1", map[string]any{
		"window_days": 365, "levels": []map[string]any{
			{"code": "blue", "min_points": 0, "multiplier": "1"},
			{"code": "gold", "min_points": 20000, "multiplier": "1.25"}}}, 201)
	ctx := context.Background()
	for name, role := range map[string]backoffice.Role{"olga": backoffice.RoleOperator,
		"bruno": backoffice.RoleOperator, "carla": backoffice.RoleAnalyst,
		"dora": backoffice.RoleAuditor, "root": backoffice.RoleAdministrator} {
		if err := backoffice.CreateUser(ctx, a.Pool, name, role, name+"-password-1"); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}

	// A headless Chromium with a laptop-sized window.
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

	// Each step has a time limit; the browser lives as long as bctx.
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
	signIn := func(name string) {
		t.Helper()
		run("sign in as "+name,
			chromedp.Navigate(base+"/admin/"),
			chromedp.WaitVisible(chromedp.ID("password")),
			chromedp.SendKeys(chromedp.ID("name"), name),
			chromedp.SendKeys(chromedp.ID("password"), name+"-password-1"),
			chromedp.Click(chromedp.CSS(`form[action="/admin/signin"] button`)),
			chromedp.WaitVisible(chromedp.ID("whoami")))
	}
	signOut := func() {
		t.Helper()
		run("sign out", chromedp.Click(chromedp.CSS(".signout button")),
			chromedp.WaitVisible(chromedp.ID("password")))
	}
	search := func() string {
		t.Helper()
		var available string
		run("search the member",
			chromedp.Navigate(base+"/admin/members"),
			chromedp.WaitVisible(chromedp.ID("member")),
			chromedp.SetValue(chromedp.ID("program"), "telco"),
			chromedp.SendKeys(chromedp.ID("member"), "7590-VHVEG"),
			chromedp.Submit(chromedp.ID("member")),
			chromedp.WaitVisible(chromedp.ID("available")),
			into(&available, chromedp.Text(chromedp.ID("available"))))
		return available
	}
	ledgerAvailable := func() int64 {
		t.Helper()
		m, err := a.Ledger.Member(ctx, "telco", "7590-VHVEG")
		if err != nil {
			t.Fatalf("read member: %v", err)
		}
		return int64(m.Balance.Available)
	}

	// The sign-in page, then an operator finds the member.
	run("open the sign-in page", chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("password")), shot("01-sign-in"))
	signIn("olga")
	if got := search(); got != "1,500" {
		t.Fatalf("available shown %q, want 1,500", got)
	}
	var tier string
	run("screenshot the member", into(&tier, chromedp.Text(chromedp.ID("tier"))),
		shot("02-member"))
	if tier != "blue" {
		t.Fatalf("tier shown %q, want blue", tier)
	}

	// 20,000 is above the threshold: it waits, nothing is posted yet.
	var notice string
	run("ask for a large adjustment",
		chromedp.SendKeys(chromedp.ID("points"), "20000"),
		chromedp.SendKeys(chromedp.ID("reason"), "Goodwill after the March outage"),
		chromedp.Click(chromedp.CSS(`form[action="/admin/members/adjust"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".notice")),
		into(&notice, chromedp.Text(chromedp.CSS(".notice"))), shot("03-adjustment-queued"))
	if !strings.Contains(notice, "waits for a second person") {
		t.Fatalf("notice %q, want the approval notice", notice)
	}
	if got := ledgerAvailable(); got != 1500 {
		t.Fatalf("available %d before approval, want 1500", got)
	}

	// The requester cannot approve their own request.
	var queue string
	run("open approvals as the requester", chromedp.Navigate(base+"/admin/approvals"),
		chromedp.WaitVisible(chromedp.ID("approvals")),
		into(&queue, chromedp.OuterHTML(chromedp.ID("approvals"))))
	if strings.Contains(queue, "Approve adjustment") || !strings.Contains(queue, "your request") {
		t.Fatalf("the requester is offered an approve button: %s", queue)
	}
	signOut()

	// A second operator approves; the ledger posts it.
	signIn("bruno")
	var after string
	run("approve as a second operator", chromedp.Navigate(base+"/admin/approvals"),
		chromedp.WaitVisible(chromedp.ID("approvals")), shot("04-approvals"),
		chromedp.Click(chromedp.CSS(`button[aria-label="Approve adjustment 1"]`)),
		chromedp.WaitVisible(chromedp.ID("available")),
		into(&after, chromedp.Text(chromedp.ID("available"))),
		into(&notice, chromedp.Text(chromedp.CSS(".notice"))), shot("05-member-after-approval"))
	if after != "21,500" || !strings.Contains(notice, "approved") {
		t.Fatalf("after approval: available %q, notice %q; want 21,500 and approved", after,
			notice)
	}
	if got := ledgerAvailable(); got != 21500 {
		t.Fatalf("ledger available %d after approval, want 21500", got)
	}
	st, err := a.Ledger.Statement(ctx, "telco", "7590-VHVEG", "", 1)
	if err != nil || len(st.Postings) != 1 {
		t.Fatalf("statement: %v", err)
	}
	if p := st.Postings[0]; p.Points != 20000 || p.Source != "backoffice" ||
		p.Actor != "bruno" || !strings.Contains(p.Reason, "requested by olga") {
		t.Fatalf("posting %+v: want 20000 from backoffice by bruno, requested by olga", p)
	}

	// An operator changes a program parameter; the ledger has it.
	var pendingShown string
	run("change the pending period", chromedp.Navigate(base+"/admin/programs"),
		chromedp.WaitVisible(chromedp.ID("p-telco")),
		chromedp.Click(chromedp.CSS("summary")),
		chromedp.SetValue(chromedp.ID("telco-pending"), "14"),
		shot("06-program-edit"),
		chromedp.Click(chromedp.CSS(`form[action="/admin/programs/telco"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".notice")),
		into(&pendingShown, chromedp.Text(chromedp.ID("pending-telco"))))
	if pendingShown != "14 days" {
		t.Fatalf("pending period shown %q, want 14 days", pendingShown)
	}
	if p, err := a.Ledger.Program(ctx, "telco"); err != nil || p.PendingDays != 14 {
		t.Fatalf("program after edit: %+v, %v; want pending_days 14", p, err)
	}
	signOut()

	// An analyst sees the member but cannot adjust, not even with a forged form.
	signIn("carla")
	if got := search(); got != "21,500" {
		t.Fatalf("analyst sees %q, want 21,500", got)
	}
	var hasForm bool
	var problem string
	run("look for the adjustment form as an analyst",
		into(&hasForm, chromedp.Evaluate[bool](
			`document.querySelector('form[action="/admin/members/adjust"]') !== null`)))
	if hasForm {
		t.Fatalf("the analyst is shown the adjustment form")
	}
	forge := fmt.Sprintf(`(() => {
		const f = document.createElement('form');
		f.method = 'post'; f.action = '/admin/members/adjust';
		const add = (n, v) => { const i = document.createElement('input');
			i.type = 'hidden'; i.name = n; i.value = v; f.appendChild(i); };
		add('csrf', document.querySelector('.signout input[name=csrf]').value);
		add('program', 'telco'); add('member', '7590-VHVEG');
		add('points', '%d'); add('reason', 'analyst tries');
		document.body.appendChild(f); f.submit(); return true; })()`, 500)
	var ok bool
	run("post an adjustment as an analyst", into(&ok, chromedp.Evaluate[bool](forge)),
		chromedp.WaitVisible(chromedp.CSS(".problem")),
		into(&problem, chromedp.Text(chromedp.CSS(".problem"))), shot("07-analyst-refused"))
	if !strings.Contains(problem, "analyst role may not") {
		t.Fatalf("analyst's adjustment answered %q, want a refusal", problem)
	}
	if got := ledgerAvailable(); got != 21500 {
		t.Fatalf("available %d after the analyst's attempt, want 21500", got)
	}

	// Nor change a program parameter.
	var canEdit bool
	run("look for the program form as an analyst", chromedp.Navigate(base+"/admin/programs"),
		chromedp.WaitVisible(chromedp.ID("p-telco")),
		into(&canEdit, chromedp.Evaluate[bool](`document.querySelector('details') !== null`)))
	if canEdit {
		t.Fatalf("the analyst is shown the program form")
	}
	forgeProgram := `(() => {
		const f = document.createElement('form');
		f.method = 'post'; f.action = '/admin/programs/telco';
		const add = (n, v) => { const i = document.createElement('input');
			i.type = 'hidden'; i.name = n; i.value = v; f.appendChild(i); };
		add('csrf', document.querySelector('.signout input[name=csrf]').value);
		add('name', 'Hacked'); add('pending_days', '0');
		document.body.appendChild(f); f.submit(); return true; })()`
	run("post a program change as an analyst", into(&ok, chromedp.Evaluate[bool](forgeProgram)),
		chromedp.WaitVisible(chromedp.CSS(".problem")),
		into(&problem, chromedp.Text(chromedp.CSS(".problem"))))
	if !strings.Contains(problem, "analyst role may not") {
		t.Fatalf("analyst's program change answered %q, want a refusal", problem)
	}
	if p, err := a.Ledger.Program(ctx, "telco"); err != nil || p.PendingDays != 14 ||
		p.Name != "Telco" {
		t.Fatalf("program after the analyst's attempt: %+v, %v", p, err)
	}
	signOut()

	// The auditor finds who changed what; the programs page shows parameters.
	signIn("dora")
	var audit, programs string
	run("search the audit log", chromedp.Navigate(base+"/admin/audit?q=7590-VHVEG"),
		chromedp.WaitVisible(chromedp.ID("audit")),
		into(&audit, chromedp.Text(chromedp.ID("audit"))), shot("08-audit"),
		chromedp.Navigate(base+"/admin/programs"),
		chromedp.WaitVisible(chromedp.ID("p-telco")),
		into(&programs, chromedp.Text(chromedp.CSS("main"))), shot("09-programs"))
	for _, want := range []string{"adjustment.approved", "adjustment.requested", "bruno",
		"olga", `"available": 21500`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %q:\n%s", want, audit)
		}
	}
	run("search the audit log for programs", chromedp.Navigate(base+"/admin/audit?q=program"),
		chromedp.WaitVisible(chromedp.ID("audit")),
		into(&audit, chromedp.Text(chromedp.ID("audit"))))
	if !strings.Contains(audit, "program.updated") || !strings.Contains(audit, "bruno") ||
		!strings.Contains(audit, `"pending_days": 0`) ||
		!strings.Contains(audit, `"pending_days": 14`) {
		t.Errorf("audit log lacks the program change from 0 to 14 pending days:\n%s", audit)
	}
	if !strings.Contains(programs, "24 months") || !strings.Contains(programs, "USD") {
		t.Errorf("programs page lacks the expiry or currency:\n%s", programs)
	}

	// Anyone may simulate an event against the rules: 29.85 at 2 a dollar.
	var simulated string
	run("simulate an event", chromedp.Navigate(base+"/admin/rules"),
		chromedp.WaitVisible(chromedp.ID("rules")),
		chromedp.SendKeys(chromedp.ID("sim-member"), "7590-VHVEG"),
		chromedp.SendKeys(chromedp.ID("sim-type"), "bill_paid"),
		chromedp.SendKeys(chromedp.ID("sim-amount"), "29.85"),
		chromedp.Submit(chromedp.ID("sim-amount")),
		chromedp.WaitVisible(chromedp.ID("sim-points")),
		into(&simulated, chromedp.Text(chromedp.ID("sim-points"))), shot("10-rules-simulate"))
	if !strings.Contains(simulated, "Would earn 59 points") {
		t.Fatalf("simulation shows %q, want 59 points", simulated)
	}
	if got := ledgerAvailable(); got != 21500 {
		t.Fatalf("available %d after a simulation, want 21500 (nothing posted)", got)
	}
	signOut()

	// The administrator's users page.
	signIn("root")
	run("open users", chromedp.Navigate(base+"/admin/users"),
		chromedp.WaitVisible(chromedp.ID("users")), shot("11-users"))
}

// into runs a, keeping its value in dst.
func into[T any](dst *T, a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		v, err := a(ctx, t)
		*dst = v
		return chromedp.Void{}, err
	}
}
