package backoffice_test

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
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
	p := startPlatform(t, app.Roles{}, func(cfg *app.Config) { cfg.BulkApproval = 1000 })
	p.telco(true)
	p.users(map[string]backoffice.Role{"olga": backoffice.RoleOperator,
		"bruno": backoffice.RoleOperator, "carla": backoffice.RoleAnalyst})
	file := filepath.Join(t.TempDir(), "march-bonus.csv")
	if err := os.WriteFile(file, []byte(bulkCSV), 0o600); err != nil {
		t.Fatalf("write file: %v", err)
	}
	c := newChrome(t, p.base)
	ctx := context.Background()

	// The operator uploads; validation ends and the summary names line 3.
	c.signIn("olga")
	var lines, valid, invalid, credits, debits, errs, waiting string
	var canPost bool
	c.run("upload the file", chromedp.Navigate(p.base+"/admin/bulk"),
		chromedp.WaitVisible(chromedp.ID("upload")), c.shot("20-bulk-upload"),
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
		c.shot("21-bulk-validated"))
	if lines != "3" || valid != "2" || invalid != "1" || credits != "1,200" ||
		debits != "200" {
		t.Fatalf("summary lines %q valid %q invalid %q credits %q debits %q; "+
			"want 3, 2, 1, 1,200, 200", lines, valid, invalid, credits, debits)
	}
	var line3 string
	c.run("read line 3", into(&line3, chromedp.Text(chromedp.ID("line-3"))))
	if !strings.Contains(line3, "NOPE-404") || !strings.Contains(line3, "member") ||
		strings.Count(errs, "bulk-000") != 1 {
		t.Fatalf("errors table %q: want line 3 alone, for its member", errs)
	}
	if !strings.Contains(waiting, "must approve") || canPost {
		t.Fatalf("the uploader may post or approve a batch above the limit (%q)", waiting)
	}
	var batchURL string
	c.run("note the batch", into(&batchURL, chromedp.Location()))
	batchURL, _, _ = strings.Cut(batchURL, "?")
	if got := p.available(); got != 1500 {
		t.Fatalf("available %d after validation, want 1500 (nothing posted)", got)
	}
	c.signOut()

	// A second operator approves, posts and watches the progress page.
	c.signIn("bruno")
	var posted, resultURL string
	c.run("approve and post", chromedp.Navigate(batchURL),
		chromedp.WaitVisible(chromedp.ID("approve")),
		chromedp.Click(chromedp.ID("approve")),
		chromedp.WaitVisible(chromedp.ID("post")),
		chromedp.Click(chromedp.ID("post")),
		chromedp.WaitVisible(chromedp.ID("posted-summary")),
		into(&posted, chromedp.Text(chromedp.ID("posted-summary"))),
		into(&resultURL, chromedp.Evaluate[string](`document.getElementById('result').href`)),
		c.shot("22-bulk-posted"))
	code, result := c.fetch("GET", resultURL, nil, "")
	if code != http.StatusOK {
		t.Fatalf("result file: status %d", code)
	}
	if !strings.HasPrefix(posted, "2 lines posted, 0 refused by the ledger, 1 invalid") {
		t.Fatalf("posted summary %q", posted)
	}
	wantResult := "line,txn_id,member,points,status,error_kind,error_field,error,replayed\n" +
		"2,bulk-0001,7590-VHVEG,1200,posted,,,,\n"
	if !strings.HasPrefix(result, wantResult) ||
		!strings.Contains(result, "\n4,bulk-0003,7590-VHVEG,-200,posted,,,,\n") ||
		!strings.Contains(result, "\n3,bulk-0002,NOPE-404,50,invalid,not_found,member,") {
		t.Fatalf("result file:\n%s", result)
	}
	if got := p.available(); got != 2500 {
		t.Fatalf("available %d after posting, want 2500", got)
	}
	b, err := p.a.Ledger.Batch(ctx, "telco", batchURL[strings.LastIndex(batchURL, "/")+1:])
	if err != nil || b.UploadedBy != "olga" || b.ApprovedBy != "bruno" || b.PostedBy != "bruno" {
		t.Fatalf("batch %+v, %v: want uploaded by olga, approved and posted by bruno", b, err)
	}
	c.signOut()

	// An analyst is refused the page and the upload, even with a forged form.
	c.signIn("carla")
	var problem, csrf string
	c.run("open bulk loads as an analyst", chromedp.Navigate(p.base+"/admin/bulk"),
		chromedp.WaitVisible(chromedp.CSS(".problem")),
		into(&problem, chromedp.Text(chromedp.CSS(".problem"))), c.shot("23-bulk-analyst"),
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
	code, page := c.fetch("POST", p.base+"/admin/bulk", &body,
		mw.FormDataContentType())
	if code != http.StatusForbidden || !strings.Contains(page, "analyst role may not") {
		t.Fatalf("analyst's upload: status %d, want 403:\n%s", code, page)
	}
	var n int
	if err := p.a.Pool.QueryRow(ctx, `SELECT count(*) FROM bulk_batches`).Scan(&n); err != nil ||
		n != 1 {
		t.Fatalf("batches after the analyst's upload: %d, %v; want 1", n, err)
	}
}
