package backoffice_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/app"
)

// TestParametersInChromium has an operator change the program's parameters
// in the browser: a new rule and a new version of it, each simulated; a
// reward with its stock; a partner with a key shown once and then revoked;
// the tiers; an external program's ratio. The auditor finds each change
// with its before and after, and neither an auditor nor an analyst is shown
// a form that changes parameters or gets a forged one through.
func TestParametersInChromium(t *testing.T) {
	p := startPlatform(t, app.Roles{}, nil)
	p.telco(true)
	p.api("POST", "/v1/programs/telco/rules", "rule-1", map[string]any{"code": "base",
		"name": "Two points a dollar", "event_type": "bill_paid",
		"formula": map[string]any{"kind": "per_unit", "rate": "2"}}, 201)
	p.users(map[string]backoffice.Role{"olga": backoffice.RoleOperator,
		"carla": backoffice.RoleAnalyst, "dora": backoffice.RoleAuditor})
	c := newChrome(t, p.base)
	ctx := context.Background()
	simulate := func(amount string) string {
		t.Helper()
		c.run("simulate "+amount,
			chromedp.WaitVisible(chromedp.ID("sim-member")),
			chromedp.SetValue(chromedp.ID("sim-member"), member),
			chromedp.SetValue(chromedp.ID("sim-type"), "bill_paid"),
			chromedp.SetValue(chromedp.ID("sim-amount"), amount),
			chromedp.Submit(chromedp.ID("sim-amount")))
		return c.text("sim-points")
	}

	// A bonus of 50 points on bills of 20 dollars or more, then 80.
	c.signIn("olga")
	c.run("write a new rule", chromedp.Navigate(p.base+"/admin/rules?program=telco"),
		chromedp.WaitVisible(chromedp.ID("rule-code")),
		chromedp.SendKeys(chromedp.ID("rule-code"), "big-bill"),
		chromedp.SendKeys(chromedp.ID("rule-name"), "Bonus on big bills"),
		chromedp.SendKeys(chromedp.ID("rule-event"), "bill_paid"),
		chromedp.SendKeys(chromedp.ID("rule-condition"), "event.amount_cents >= 2000"),
		chromedp.SetValue(chromedp.ID("rule-kind"), "fixed"),
		chromedp.SendKeys(chromedp.ID("rule-points"), "50"),
		chromedp.SendKeys(chromedp.ID("cap-day"), "200"),
		c.shot("30-rule-new"),
		chromedp.Click(chromedp.ID("rule-save")),
		chromedp.WaitVisible(chromedp.CSS(".notice")))
	if got := simulate("29.85"); !strings.Contains(got, "Would earn 109 points") {
		t.Fatalf("simulation with the new rule: %q, want 109 points (59 + 50)", got)
	}
	if got := simulate("10"); !strings.Contains(got, "Would earn 20 points") {
		t.Fatalf("simulation of a small bill: %q, want 20 points (no bonus)", got)
	}
	c.run("make a new version", chromedp.Navigate(p.base+"/admin/rules?program=telco"),
		chromedp.Click(chromedp.CSS(`a[aria-label="New version of rule big-bill"]`)),
		chromedp.WaitVisible(chromedp.ID("rule-points")),
		chromedp.SetValue(chromedp.ID("rule-points"), "80"),
		c.shot("31-rule-new-version"),
		chromedp.Click(chromedp.ID("rule-save")),
		chromedp.WaitVisible(chromedp.CSS(".notice")))
	if got := simulate("29.85"); !strings.Contains(got, "Would earn 139 points") {
		t.Fatalf("simulation with version 2: %q, want 139 points (59 + 80)", got)
	}
	c.run("screenshot the simulation", c.shot("32-rule-simulated"))
	versions, err := p.a.Ledger.RuleVersions(ctx, "telco", "big-bill")
	if err != nil || len(versions) != 2 || versions[1].Formula.Points != 80 ||
		versions[1].Caps.PerDay != 200 {
		t.Fatalf("rule versions %+v, %v: want 2, the second of 80 points capped at 200 a day",
			versions, err)
	}

	// A reward with 40 in stock.
	c.run("add a reward", chromedp.Navigate(p.base+"/admin/catalog?program=telco"),
		chromedp.WaitVisible(chromedp.ID("rw-code")),
		chromedp.SendKeys(chromedp.ID("rw-code"), "movie"),
		chromedp.SendKeys(chromedp.ID("rw-name"), "Cinema ticket"),
		chromedp.SendKeys(chromedp.ID("rw-points"), "1200"),
		chromedp.SendKeys(chromedp.ID("rw-stock"), "40"),
		chromedp.Click(chromedp.ID("reward-save")),
		chromedp.WaitVisible(chromedp.CSS(".notice")), c.shot("33-catalog"))
	if stock := c.text("stock-movie"); stock != "40" {
		t.Fatalf("stock shown %q, want 40", stock)
	}

	// A partner and a key, shown once, then revoked.
	c.run("add a partner", chromedp.Navigate(p.base+"/admin/partners?program=telco"),
		chromedp.WaitVisible(chromedp.ID("pa-code")),
		chromedp.SendKeys(chromedp.ID("pa-code"), "cinemark"),
		chromedp.SendKeys(chromedp.ID("pa-name"), "Cinemark"),
		chromedp.SendKeys(chromedp.ID("pa-currency"), "USD"),
		chromedp.SendKeys(chromedp.ID("pa-value"), "0.01"),
		chromedp.Click(chromedp.ID("partner-save")),
		chromedp.WaitVisible(chromedp.ID("keys-cinemark")),
		chromedp.Click(chromedp.ID("scope-cinemark-balance")),
		chromedp.Click(chromedp.CSS(`button[aria-label="Issue a key for cinemark"]`)),
		chromedp.WaitVisible(chromedp.ID("new-key")), c.shot("34-partner-key"))
	key := c.text("new-key")
	_, keys, err := p.a.Ledger.Partner(ctx, "telco", "cinemark")
	if err != nil || len(keys) != 1 || !strings.HasPrefix(key, "pk_") ||
		!strings.HasPrefix(key, keys[0].Prefix) {
		t.Fatalf("key shown %q, keys %+v, %v", key, keys, err)
	}
	c.run("revoke the key", chromedp.Navigate(p.base+"/admin/partners?program=telco"),
		chromedp.WaitVisible(chromedp.ID("keys-cinemark")),
		chromedp.Click(chromedp.CSS(`button[aria-label="Revoke key `+keys[0].Prefix+`"]`)),
		chromedp.WaitVisible(chromedp.CSS(".notice")))
	if page := c.text("main"); strings.Contains(page, key) || !strings.Contains(page,
		"revoked") {
		t.Fatalf("after revoking: the key is shown again or not marked revoked")
	}

	// Gold members earn half as much again; miles at 0.5 a point.
	c.run("set the tiers", chromedp.Navigate(p.base+"/admin/tiers?program=telco"),
		chromedp.WaitVisible(chromedp.ID("level-0-code")),
		chromedp.SendKeys(chromedp.ID("level-0-code"), "blue"),
		chromedp.SendKeys(chromedp.ID("level-0-min_points"), "0"),
		chromedp.SendKeys(chromedp.ID("level-0-multiplier"), "1"),
		chromedp.SendKeys(chromedp.ID("level-1-code"), "gold"),
		chromedp.SendKeys(chromedp.ID("level-1-min_points"), "20000"),
		chromedp.SendKeys(chromedp.ID("level-1-multiplier"), "1.5"),
		chromedp.Click(chromedp.ID("tiers-save")),
		chromedp.WaitVisible(chromedp.CSS(".notice")), c.shot("35-tiers"))
	if mult := c.text("mult-gold"); mult != "1.5" {
		t.Fatalf("gold multiplier shown %q, want 1.5", mult)
	}
	c.run("add an external program", chromedp.Navigate(p.base+"/admin/external?program=telco"),
		chromedp.WaitVisible(chromedp.ID("ext-code")),
		chromedp.SendKeys(chromedp.ID("ext-code"), "latam"),
		chromedp.SendKeys(chromedp.ID("ext-name"), "LATAM Pass"),
		chromedp.SendKeys(chromedp.ID("ext-ratio"), "0.5"),
		chromedp.SendKeys(chromedp.ID("ext-endpoint"), "https://partner.example/api"),
		chromedp.SendKeys(chromedp.ID("ext-credentials"), "s3cret-token"),
		chromedp.Click(chromedp.ID("ext-save")),
		chromedp.WaitVisible(chromedp.CSS(".notice")), c.shot("36-external"))
	if ratio := c.text("ratio-latam"); ratio != "0.5" {
		t.Fatalf("ratio shown %q, want 0.5", ratio)
	}
	if cred := c.text("cred-latam"); cred != "stored" {
		t.Fatalf("credentials shown %q, want stored (and never the secret)", cred)
	}

	// Every page an operator uses has its fields labelled and fits the screen.
	for _, page := range []string{"members", "approvals", "programs", "rules", "tiers",
		"catalog", "partners", "external", "reports", "bulk", "account"} {
		c.run("open "+page, chromedp.Navigate(p.base+"/admin/"+page),
			chromedp.WaitVisible(chromedp.CSS("main h1")))
		if problem := c.a11y(); problem != "" {
			t.Errorf("page %s: %s", page, problem)
		}
		if page == "account" {
			c.run("screenshot the account page", c.shot("39-account"))
		}
	}
	c.signOut()

	// The auditor finds each change, who made it, before and after.
	c.signIn("dora")
	c.run("search the audit log", chromedp.Navigate(p.base+"/admin/audit?q=telco%2F"),
		chromedp.WaitVisible(chromedp.ID("audit")), c.shot("37-audit-parameters"))
	audit := c.text("audit")
	if problem := c.a11y(); problem != "" {
		t.Errorf("audit page: %s", problem)
	}
	for _, want := range []string{"rule.created", "rule.updated", `"points": 50`,
		`"points": 80`, "reward.saved", `"stock": 40`, "partner.saved",
		"partner.key_issued", "partner.key_revoked", "external.saved", `"ratio": "0.5"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log lacks %q", want)
		}
	}
	if strings.Count(audit, "olga") < 7 || strings.Contains(audit, "s3cret") ||
		strings.Contains(audit, key) {
		t.Errorf("audit log: want olga on every change and no secret:\n%s", audit)
	}
	c.signOut()

	// Neither an auditor nor an analyst may change parameters.
	forged := map[string]map[string]string{
		"/admin/rules/telco": {"code": "evil", "event_type": "bill_paid",
			"formula_kind": "fixed", "fixed_points": "1000"},
		"/admin/rules/telco/big-bill/retire":  {},
		"/admin/catalog/telco":                {"code": "movie", "name": "Free", "points": "1"},
		"/admin/partners/telco/cinemark/keys": {"scopes": "balance"},
		"/admin/programs/telco":               {"name": "Hacked", "pending_days": "0"},
	}
	for _, user := range []string{"dora", "carla"} {
		c.signIn(user)
		for _, page := range []string{"rules", "catalog", "partners", "tiers", "external",
			"programs"} {
			c.run("open "+page+" as "+user,
				chromedp.Navigate(p.base+"/admin/"+page+"?program=telco"),
				chromedp.WaitVisible(chromedp.CSS("main h1")))
			if c.has(`main form[method="post"]`) || c.has("details") {
				t.Errorf("%s is shown a form that changes %s", user, page)
			}
			if page == "rules" {
				c.run("screenshot", c.shot("38-rules-"+user))
			}
		}
		for action, fields := range forged {
			if problem := c.forge(action, fields); !strings.Contains(problem, "role may not") {
				t.Errorf("%s posting %s: %q, want a refusal", user, action, problem)
			}
		}
		var csrf string
		c.run("read the CSRF token", into(&csrf,
			chromedp.Value(chromedp.CSS(".signout input[name=csrf]"))))
		form := url.Values{"csrf": {csrf}, "code": {"evil"}, "event_type": {"bill_paid"},
			"formula_kind": {"fixed"}, "fixed_points": {"1000"}}
		code, _ := c.fetch("POST", p.base+"/admin/rules/telco",
			strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
		if code != 403 {
			t.Errorf("%s's forged rule: status %d, want 403", user, code)
		}
		c.signOut()
	}
	rules, err := p.a.Ledger.Rules(ctx, "telco")
	if err != nil || len(rules) != 2 {
		t.Fatalf("rules after the forged posts: %d, %v; want 2 (base, big-bill)", len(rules), err)
	}
	if rw, err := p.a.Ledger.Reward(ctx, "telco", "movie"); err != nil || rw.Points != 1200 {
		t.Fatalf("reward after the forged posts: %+v, %v", rw, err)
	}
	if n := p.count(`SELECT count(*) FROM bo_audit WHERE actor IN ('dora', 'carla')
		AND action <> 'user.signed_in'`); n != 0 {
		t.Fatalf("%d changes by the auditor or the analyst, want 0", n)
	}
}
