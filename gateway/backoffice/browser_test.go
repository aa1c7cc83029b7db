package backoffice_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
)

// TestBackOfficeInChromium walks the member pages: an operator asks for a
// large adjustment, a second one approves it, an operator changes a program
// parameter, an analyst can neither adjust nor change parameters, and the
// auditor finds every change in the audit log.
func TestBackOfficeInChromium(t *testing.T) {
	p := startPlatform(t, app.Roles{}, nil)
	p.telco(true)
	p.api("POST", "/v1/programs/telco/rules", "rule-1", map[string]any{"code": "base",
		"name": "Two points a dollar", "event_type": "bill_paid",
		"formula": map[string]any{"kind": "per_unit", "rate": "2"}}, 201)
	p.api("PUT", "/v1/programs/telco/tiers", "tiers-1", map[string]any{
		"window_days": 365, "levels": []map[string]any{
			{"code": "blue", "min_points": 0, "multiplier": "1"},
			{"code": "gold", "min_points": 20000, "multiplier": "1.25"}}}, 201)
	p.users(map[string]backoffice.Role{"olga": backoffice.RoleOperator,
		"bruno": backoffice.RoleOperator, "carla": backoffice.RoleAnalyst,
		"dora": backoffice.RoleAuditor, "root": backoffice.RoleAdministrator})
	c := newChrome(t, p.base)
	ctx := context.Background()
	search := func() string {
		t.Helper()
		c.run("search the member",
			chromedp.Navigate(p.base+"/admin/members"),
			chromedp.WaitVisible(chromedp.ID("member")),
			chromedp.SetValue(chromedp.ID("program"), "telco"),
			chromedp.SendKeys(chromedp.ID("member"), member),
			chromedp.Submit(chromedp.ID("member")))
		return c.text("available")
	}

	// The sign-in page, then an operator finds the member.
	c.run("open the sign-in page", chromedp.Navigate(p.base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("password")), c.shot("01-sign-in"))
	c.signIn("olga")
	if got := search(); got != "1,500" {
		t.Fatalf("available shown %q, want 1,500", got)
	}
	tier := c.text("tier")
	c.run("screenshot the member", c.shot("02-member"))
	if tier != "blue" {
		t.Fatalf("tier shown %q, want blue", tier)
	}

	// 20,000 is above the threshold: it waits, nothing is posted yet.
	var notice string
	c.run("ask for a large adjustment",
		chromedp.SendKeys(chromedp.ID("points"), "20000"),
		chromedp.SendKeys(chromedp.ID("reason"), "Goodwill after the March outage"),
		chromedp.Click(chromedp.CSS(`form[action="/admin/members/adjust"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".notice")),
		into(&notice, chromedp.Text(chromedp.CSS(".notice"))), c.shot("03-adjustment-queued"))
	if !strings.Contains(notice, "waits for a second person") {
		t.Fatalf("notice %q, want the approval notice", notice)
	}
	if got := p.available(); got != 1500 {
		t.Fatalf("available %d before approval, want 1500", got)
	}

	// The requester cannot approve their own request.
	var queue string
	c.run("open approvals as the requester", chromedp.Navigate(p.base+"/admin/approvals"),
		chromedp.WaitVisible(chromedp.ID("approvals")),
		into(&queue, chromedp.OuterHTML(chromedp.ID("approvals"))))
	if strings.Contains(queue, "Approve adjustment") || !strings.Contains(queue, "your request") {
		t.Fatalf("the requester is offered an approve button: %s", queue)
	}
	c.signOut()

	// A second operator approves; the ledger posts it.
	c.signIn("bruno")
	c.run("approve as a second operator", chromedp.Navigate(p.base+"/admin/approvals"),
		chromedp.WaitVisible(chromedp.ID("approvals")), c.shot("04-approvals"),
		chromedp.Click(chromedp.CSS(`button[aria-label="Approve adjustment 1"]`)),
		chromedp.WaitVisible(chromedp.ID("available")),
		into(&notice, chromedp.Text(chromedp.CSS(".notice"))), c.shot("05-member-after-approval"))
	if after := c.text("available"); after != "21,500" || !strings.Contains(notice, "approved") {
		t.Fatalf("after approval: available %q, notice %q; want 21,500 and approved", after,
			notice)
	}
	if got := p.available(); got != 21500 {
		t.Fatalf("ledger available %d after approval, want 21500", got)
	}
	st, err := p.a.Ledger.Statement(ctx, "telco", member, "", 1)
	if err != nil || len(st.Postings) != 1 {
		t.Fatalf("statement: %v", err)
	}
	if pst := st.Postings[0]; pst.Points != 20000 || pst.Source != "backoffice" ||
		pst.Actor != "bruno" || !strings.Contains(pst.Reason, "requested by olga") {
		t.Fatalf("posting %+v: want 20000 from backoffice by bruno, requested by olga", pst)
	}

	// An operator changes a program parameter; the ledger has it.
	c.run("change the pending period", chromedp.Navigate(p.base+"/admin/programs"),
		chromedp.WaitVisible(chromedp.ID("p-telco")),
		chromedp.Click(chromedp.CSS("summary")),
		chromedp.SetValue(chromedp.ID("telco-pending"), "14"),
		c.shot("06-program-edit"),
		chromedp.Click(chromedp.CSS(`form[action="/admin/programs/telco"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".notice")))
	if shown := c.text("pending-telco"); shown != "14 days" {
		t.Fatalf("pending period shown %q, want 14 days", shown)
	}
	if prog, err := p.a.Ledger.Program(ctx, "telco"); err != nil || prog.PendingDays != 14 {
		t.Fatalf("program after edit: %+v, %v; want pending_days 14", prog, err)
	}
	c.signOut()

	// An analyst sees the member but cannot adjust, not even with a forged form.
	c.signIn("carla")
	if got := search(); got != "21,500" {
		t.Fatalf("analyst sees %q, want 21,500", got)
	}
	if c.has(`form[action="/admin/members/adjust"]`) {
		t.Fatalf("the analyst is shown the adjustment form")
	}
	problem := c.forge("/admin/members/adjust", map[string]string{"program": "telco",
		"member": member, "points": "500", "reason": "analyst tries"})
	c.run("screenshot the refusal", c.shot("07-analyst-refused"))
	if !strings.Contains(problem, "analyst role may not") {
		t.Fatalf("analyst's adjustment answered %q, want a refusal", problem)
	}
	if got := p.available(); got != 21500 {
		t.Fatalf("available %d after the analyst's attempt, want 21500", got)
	}
	c.signOut()

	// The auditor finds who changed what; the programs page shows parameters.
	c.signIn("dora")
	var audit, programs string
	c.run("search the audit log", chromedp.Navigate(p.base+"/admin/audit?q="+member),
		chromedp.WaitVisible(chromedp.ID("audit")),
		into(&audit, chromedp.Text(chromedp.ID("audit"))), c.shot("08-audit"),
		chromedp.Navigate(p.base+"/admin/programs"),
		chromedp.WaitVisible(chromedp.ID("p-telco")),
		into(&programs, chromedp.Text(chromedp.CSS("main"))), c.shot("09-programs"))
	for _, want := range []string{"adjustment.approved", "adjustment.requested", "bruno",
		"olga", `"available": 21500`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %q:\n%s", want, audit)
		}
	}
	c.run("search the audit log for programs",
		chromedp.Navigate(p.base+"/admin/audit?q=program"),
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
	c.run("simulate an event", chromedp.Navigate(p.base+"/admin/rules"),
		chromedp.WaitVisible(chromedp.ID("rules")),
		chromedp.SendKeys(chromedp.ID("sim-member"), member),
		chromedp.SendKeys(chromedp.ID("sim-type"), "bill_paid"),
		chromedp.SendKeys(chromedp.ID("sim-amount"), "29.85"),
		chromedp.Submit(chromedp.ID("sim-amount")),
		chromedp.WaitVisible(chromedp.ID("sim-points")), c.shot("10-rules-simulate"))
	if simulated := c.text("sim-points"); !strings.Contains(simulated,
		"Would earn 59 points") {
		t.Fatalf("simulation shows %q, want 59 points", simulated)
	}
	if got := p.available(); got != 21500 {
		t.Fatalf("available %d after a simulation, want 21500 (nothing posted)", got)
	}
	c.signOut()

	// The administrator's users page.
	c.signIn("root")
	c.run("open users", chromedp.Navigate(p.base+"/admin/users"),
		chromedp.WaitVisible(chromedp.ID("users")), c.shot("11-users"))
}
