package backoffice_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// bulkCSV credits 1,200 and debits 200 points of one member; its line 3
// names a member who is not enrolled.
const bulkCSV = "member,points,reason,txn_id\n" +
	"7590-VHVEG,1200,Anniversary bonus,bulk-0001\n" +
	"NOPE-404,50,Bonus for nobody,bulk-0002\n" +
	"7590-VHVEG,-200,Correction of a duplicate load,bulk-0003\n"

// TestBulkLoadInChromium has an operator upload a small file through the
// browser and read its validation summary; the batch moves more points than
// one person may post alone, so a second operator approves and posts it and
// watches it finish. The member's balance is then exact, and an analyst may
// neither open the page nor upload.
func TestBulkLoadInChromium(t *testing.T) {
	exec := chromium(t)
	shots := screenshotDir(t)

	cfg := &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 2, BatchSize: 64,
		ResultWait: 10 * time.Second, APIKeys: "billing=" + apiKey, LogLevel: "error",
		BulkApproval: 1000}
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
	ctx := context.Background()
	for name, role := range map[string]backoffice.Role{"olga": backoffice.RoleOperator,
		"bruno": backoffice.RoleOperator, "carla": backoffice.RoleAnalyst} {
		if err := backoffice.CreateUser(ctx, a.Pool, name, role, name+"-password-1"); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
	}
	file := filepath.Join(t.TempDir(), "march-bonus.csv")
	if err := os.WriteFile(file, []byte(bulkCSV), 0o600); err != nil {
		t.Fatalf("write file: %v", err)
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
	available := func() int64 {
		t.Helper()
		m, err := a.Ledger.Member(ctx, "telco", "7590-VHVEG")
		if err != nil {
			t.Fatalf("read member: %v", err)
		}
		return int64(m.Balance.Available)
	}

	// The operator uploads; validation ends and the summary names line 3.
	signIn("olga")
	var lines, valid, invalid, credits, debits, errs, waiting string
	var canPost bool
	run("upload the file", chromedp.Navigate(base+"/admin/bulk"),
		chromedp.WaitVisible(chromedp.ID("upload")), shot("20-bulk-upload"),
		chromedp.SetValue(chromedp.ID("bulk-program"), "telco"),
		chromedp.SetUploadFiles(chromedp.ID("bulk-file"), []string{file}),
		chromedp.Click(chromedp.CSS(`#upload button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("line-errors")),
		into(&lines, chromedp.Text(chromedp.ID("lines"))),
		into(&valid, chromedp.Text(chromedp.ID("valid-lines"))),
		into(&invalid, chromedp.Text(chromedp.ID("invalid-lines"))),
		into(&credits, chromedp.Text(chromedp.ID("credit-points"))),
		into(&debits, chromedp.Text(chromedp.ID("debit-points"))),
		into(&errs, chromedp.Text(chromedp.ID("line-errors"))),
		into(&waiting, chromedp.Text(chromedp.ID("waiting"))),
		into(&canPost, chromedp.Evaluate[bool](`document.getElementById('post') !== null ||
			document.getElementById('approve') !== null`)),
		shot("21-bulk-validated"))
	if lines != "3" || valid != "2" || invalid != "1" || credits != "1,200" ||
		debits != "200" {
		t.Fatalf("summary lines %q valid %q invalid %q credits %q debits %q; "+
			"want 3, 2, 1, 1,200, 200", lines, valid, invalid, credits, debits)
	}
	var line3 string
	run("read line 3", into(&line3, chromedp.Text(chromedp.ID("line-3"))))
	if !strings.Contains(line3, "NOPE-404") || !strings.Contains(line3, "member") ||
		strings.Count(errs, "bulk-000") != 1 {
		t.Fatalf("errors table %q: want line 3 alone, for its member", errs)
	}
	if !strings.Contains(waiting, "must approve") || canPost {
		t.Fatalf("the uploader may post or approve a batch above the limit (%q)", waiting)
	}
	var batchURL string
	run("note the batch", into(&batchURL, chromedp.Location()))
	batchURL, _, _ = strings.Cut(batchURL, "?")
	if got := available(); got != 1500 {
		t.Fatalf("available %d after validation, want 1500 (nothing posted)", got)
	}
	signOut()

	// A second operator approves, posts and watches the progress page.
	signIn("bruno")
	var posted, resultURL string
	run("approve and post", chromedp.Navigate(batchURL),
		chromedp.WaitVisible(chromedp.ID("approve")),
		chromedp.Click(chromedp.ID("approve")),
		chromedp.WaitVisible(chromedp.ID("post")),
		chromedp.Click(chromedp.ID("post")),
		chromedp.WaitVisible(chromedp.ID("posted-summary")),
		into(&posted, chromedp.Text(chromedp.ID("posted-summary"))),
		into(&resultURL, chromedp.Evaluate[string](`document.getElementById('result').href`)),
		shot("22-bulk-posted"))
	code, result := fetchAs(t, bctx, base, "GET", resultURL, nil, "")
	if code != http.StatusOK {
		t.Fatalf("result file: status %d", code)
	}
	if !strings.HasPrefix(posted, "2 lines posted, 0 refused by the ledger, 1 invalid") {
		t.Fatalf("posted summary %q", posted)
	}
	wantResult := "line,txn_id,member,points,status,error_kind,error_field,error\n" +
		"2,bulk-0001,7590-VHVEG,1200,posted,,,\n"
	if !strings.HasPrefix(result, wantResult) ||
		!strings.Contains(result, "\n4,bulk-0003,7590-VHVEG,-200,posted,,,\n") ||
		!strings.Contains(result, "\n3,bulk-0002,NOPE-404,50,invalid,not_found,member,") {
		t.Fatalf("result file:\n%s", result)
	}
	if got := available(); got != 2500 {
		t.Fatalf("available %d after posting, want 2500", got)
	}
	b, err := a.Ledger.Batch(ctx, "telco", batchURL[strings.LastIndex(batchURL, "/")+1:])
	if err != nil || b.UploadedBy != "olga" || b.ApprovedBy != "bruno" || b.PostedBy != "bruno" {
		t.Fatalf("batch %+v, %v: want uploaded by olga, approved and posted by bruno", b, err)
	}
	signOut()

	// An analyst is refused the page and the upload, even with a forged form.
	signIn("carla")
	var problem, csrf string
	run("open bulk loads as an analyst", chromedp.Navigate(base+"/admin/bulk"),
		chromedp.WaitVisible(chromedp.CSS(".problem")),
		into(&problem, chromedp.Text(chromedp.CSS(".problem"))), shot("23-bulk-analyst"),
		into(&csrf, chromedp.Value(chromedp.CSS(".signout input[name=csrf]"))))
	if !strings.Contains(problem, "analyst role may not") {
		t.Fatalf("analyst opening bulk loads: %q, want a refusal", problem)
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("csrf", csrf)
	_ = mw.WriteField("program", "telco")
	fw, _ := mw.CreateFormFile("file", "analyst.csv")
	_, _ = fw.Write([]byte("member,points,reason,txn_id\n7590-VHVEG,999,analyst,carla-1\n"))
	_ = mw.Close()
	code, page := fetchAs(t, bctx, base, "POST", base+"/admin/bulk", &body,
		mw.FormDataContentType())
	if code != http.StatusForbidden || !strings.Contains(page, "analyst role may not") {
		t.Fatalf("analyst's upload: status %d, want 403:\n%s", code, page)
	}
	var n int
	if err := a.Pool.QueryRow(ctx, `SELECT count(*) FROM bulk_batches`).Scan(&n); err != nil ||
		n != 1 {
		t.Fatalf("batches after the analyst's upload: %d, %v; want 1", n, err)
	}
}

// fetchAs sends a request with the cookies of the browser's session, as a
// download or a hand-made form would, and returns the status and body.
func fetchAs(t *testing.T, bctx context.Context, base, method, url string, body io.Reader,
	contentType string) (int, string) {
	t.Helper()
	var cookies []*network.Cookie
	err := chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies,
			network.GetCookiesParams{URLs: []string{base + "/admin/"}})
		if err != nil {
			return err
		}
		cookies = res.Cookies
		return nil
	}))
	if err != nil {
		t.Fatalf("read the browser's cookies: %v", err)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, c := range cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return res.StatusCode, string(out)
}
