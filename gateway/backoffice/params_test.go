package backoffice

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
)

// newBusRig is newRig with a bus and a consumer on it (see connectBus and
// consume). Parameter changes reach the ledger only this way.
func newBusRig(t *testing.T, opt Options) *rig {
	t.Helper()
	rg := newRig(t, opt)
	rg.consume(rg.connectBus())
	return rg
}

// connectBus gives the back office a bus of its own: an embedded NATS
// server with one command partition; tune changes the bus's settings.
func (rg *rig) connectBus(tune ...func(*natsbus.Config)) *natsbus.Bus {
	t := rg.t
	t.Helper()
	srv, natsURL, err := natsbus.StartEmbedded(t.TempDir(), -1, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	rg.natsURL = natsURL
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := natsbus.Config{URL: natsURL, Partitions: 1, RetryDelay: 50 * time.Millisecond,
		MaxRetryDelay: 200 * time.Millisecond}
	for _, f := range tune {
		f(&cfg)
	}
	b, err := natsbus.Connect(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("connect bus: %v", err)
	}
	t.Cleanup(b.Close)
	rg.s.pub = b
	return b
}

// consume stands in for the core process, which this package cannot start:
// until the test ends it applies each batch of commands on b with
// Ledger.ApplyBatch and announces the results, as the core consumer does.
func (rg *rig) consume(b *natsbus.Bus) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Consume(ctx, 0, 16, 100*time.Millisecond,
			func(ctx context.Context, batch []*natsbus.Delivery) error {
				cmds := make([]bus.Command, len(batch))
				for i, d := range batch {
					cmds[i] = d.Command
				}
				out, err := rg.ledger().ApplyBatch(ctx, cmds)
				if err != nil {
					return err
				}
				for i, a := range out {
					_ = b.PublishResult(a.Result)
					if a.Dead != "" {
						// A refusal for good is dead-lettered apart, as core does.
						if err := b.DeadLetterRefused(ctx, batch[i], a.Dead); err != nil {
							return err
						}
						_ = batch[i].Term()
					}
				}
				return nil
			})
	}()
	rg.t.Cleanup(func() { cancel(); <-done })
}

// ledger is the rig's ledger.
func (rg *rig) ledger() *postgres.Ledger { return rg.s.read.(*postgres.Ledger) }

// apply runs one command through the ledger, as the core consumer would,
// and fails the test unless it is accepted.
func (rg *rig) apply(kind, program, member string, payload any) {
	rg.t.Helper()
	body, _ := json.Marshal(payload)
	cmd := bus.Command{ID: uuid.NewString(), Kind: kind, Source: "test",
		TxnID: uuid.NewString(), Program: program, Member: member, Actor: "test-setup",
		Payload: body}
	cmd.Seal()
	cmd.OccurredAt, cmd.ReceivedAt = rg.now, rg.now
	out, err := rg.ledger().ApplyBatch(context.Background(), []bus.Command{cmd})
	if err != nil || out[0].Result.Status != bus.StatusOK {
		rg.t.Fatalf("%s: %v %+v", kind, err, out)
	}
}

// telco makes program telco (1 point a dollar) with one member, m-1.
func (rg *rig) telco() {
	rg.t.Helper()
	rg.apply(core.KindProgramUpsert, "telco", "", map[string]any{"name": "Telco",
		"currency": "USD", "points_per_unit": "1", "time_zone": "America/Santiago"})
	rg.apply(core.KindEnroll, "telco", "m-1", core.Enroll{Channel: "web"})
}

// auditRows returns the audit entries of an action as "target before → after".
func (rg *rig) auditRows(action string) []string {
	rg.t.Helper()
	rows, err := rg.db.Query(context.Background(), `SELECT actor || ' ' || target || ' ' ||
			coalesce(before::text, 'null') || ' -> ' || coalesce(after::text, 'null')
		FROM bo_audit WHERE action = $1 ORDER BY id`, action)
	if err != nil {
		rg.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rg.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func mustStatus(t *testing.T, what string, res *http.Response, body string, want int) {
	t.Helper()
	if res.StatusCode != want {
		t.Fatalf("%s: status %d, want %d\n%s", what, res.StatusCode, want, problemText(body))
	}
}

var problemRE = regexp.MustCompile(`class="problem" role="alert">([^<]*)<`)

func problemText(body string) string {
	if m := problemRE.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// TestRuleChangesAreAuditedAndSimulated creates a rule in the browser's
// form, simulates an event against it, makes a second version and retires
// it; each change is one audit entry with the rule before and after.
func TestRuleChangesAreAuditedAndSimulated(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.user("olga", RoleOperator)
	b := rg.browser()
	token := b.mustSignIn("olga")

	rule := url.Values{"csrf": {token}, "mode": {"create"}, "code": {"base"},
		"name": {"Two a dollar"}, "event_type": {"bill_paid"}, "formula_kind": {"per_unit"},
		"rate": {"2"}, "rounding": {"down"}, "cap_event": {"100"}}
	res, body := b.post("/admin/rules/telco", rule)
	mustStatus(t, "create rule", res, body, http.StatusSeeOther)
	_, page, _ := b.get("/admin/rules?program=telco&simulate=1&member=m-1&type=bill_paid" +
		"&amount=29.85")
	if !strings.Contains(page, "Would earn <strong>59</strong> points") {
		t.Fatalf("simulation of 29.85 at 2 a dollar: want 59 points\n%s", page)
	}

	// A second version at 5 a dollar is capped at 100 points an event.
	rule.Set("mode", "update")
	rule.Set("rate", "5")
	res, body = b.post("/admin/rules/telco", rule)
	mustStatus(t, "new version", res, body, http.StatusSeeOther)
	_, page, _ = b.get("/admin/rules?program=telco&simulate=1&member=m-1&type=bill_paid" +
		"&amount=29.85")
	if !strings.Contains(page, "Would earn <strong>100</strong> points") {
		t.Fatalf("simulation with version 2: want 100 points (capped)\n%s", page)
	}
	created, updated := rg.auditRows("rule.created"), rg.auditRows("rule.updated")
	if len(created) != 1 || !strings.Contains(created[0], `olga telco/base null -> `) ||
		!strings.Contains(created[0], `"rate": "2"`) {
		t.Fatalf("audit of the creation: %q", created)
	}
	if len(updated) != 1 || !strings.Contains(updated[0], `"rate": "2"`) ||
		!strings.Contains(updated[0], `"rate": "5"`) || !strings.Contains(updated[0],
		`"version": 2`) {
		t.Fatalf("audit of the new version: %q", updated)
	}

	// Creating the same code again is refused, naming the field, and the
	// form keeps what was typed.
	rule.Set("mode", "create")
	res, body = b.post("/admin/rules/telco", rule)
	if res.StatusCode != http.StatusConflict || !strings.Contains(problemText(body), "code") ||
		!strings.Contains(body, `value="Two a dollar"`) {
		t.Fatalf("duplicate rule: status %d, problem %q", res.StatusCode, problemText(body))
	}

	// A condition that does not compile is refused with its position.
	bad := url.Values{"csrf": {token}, "code": {"promo"}, "event_type": {"bill_paid"},
		"condition": {"event.amont > 3"}, "formula_kind": {"fixed"}, "fixed_points": {"10"}}
	res, body = b.post("/admin/rules/telco", bad)
	if res.StatusCode != http.StatusBadRequest ||
		!strings.Contains(problemText(body), "condition") {
		t.Fatalf("bad condition: status %d, problem %q", res.StatusCode, problemText(body))
	}

	// Retired, it gives nothing.
	res, body = b.post("/admin/rules/telco/base/retire", url.Values{"csrf": {token}})
	mustStatus(t, "retire", res, body, http.StatusSeeOther)
	_, page, _ = b.get("/admin/rules?program=telco&simulate=1&member=m-1&type=bill_paid" +
		"&amount=29.85")
	if !strings.Contains(page, "No rule fired") {
		t.Fatalf("simulation after retirement: want no rule fired\n%s", page)
	}
	if got := rg.auditRows("rule.retired"); len(got) != 1 ||
		!strings.Contains(got[0], `"retired": true`) {
		t.Fatalf("audit of the retirement: %q", got)
	}
	if n := rg.count(`SELECT count(*) FROM bo_audit WHERE action LIKE 'rule.%'`); n != 3 {
		t.Fatalf("%d rule entries in the audit log, want 3 (refusals change nothing)", n)
	}
}

// TestCatalogPartnersExternalAreAudited edits tiers, a reward's stock, a
// partner with a key and an external program's ratio; each change is in the
// audit log and no secret is.
func TestCatalogPartnersExternalAreAudited(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.user("root", RoleAdministrator)
	b := rg.browser()
	token := b.mustSignIn("root")
	ctx := context.Background()
	l := rg.ledger()

	res, body := b.post("/admin/tiers/telco", url.Values{"csrf": {token},
		"window_days": {"365"}, "basis": {"points"},
		"level-0-code": {"blue"}, "level-0-min_points": {"0"}, "level-0-multiplier": {"1"},
		"level-1-code": {"gold"}, "level-1-min_points": {"20000"},
		"level-1-multiplier": {"1.5"}, "level-2-code": {""}})
	mustStatus(t, "tiers", res, body, http.StatusSeeOther)
	if tiers, err := l.Tiers(ctx, "telco"); err != nil || len(tiers.Levels) != 2 ||
		tiers.Levels[1].Multiplier != "1.5" {
		t.Fatalf("tiers after saving: %+v, %v", tiers, err)
	}

	reward := url.Values{"csrf": {token}, "code": {"movie"}, "name": {"Cinema ticket"},
		"points": {"1200"}, "stock": {"40"}, "active": {"1"}}
	res, body = b.post("/admin/catalog/telco", reward)
	mustStatus(t, "reward", res, body, http.StatusSeeOther)
	reward.Set("stock", "35")
	reward.Set("existing", "1") // the reward's own form, as its edit link draws it
	res, body = b.post("/admin/catalog/telco", reward)
	mustStatus(t, "restock", res, body, http.StatusSeeOther)
	if rw, err := l.Reward(ctx, "telco", "movie"); err != nil || rw.Stock == nil ||
		*rw.Stock != 35 {
		t.Fatalf("reward after restock: %+v, %v", rw, err)
	}
	if got := rg.auditRows("reward.saved"); len(got) != 2 ||
		!strings.Contains(got[1], `"stock": 40`) || !strings.Contains(got[1], `"stock": 35`) {
		t.Fatalf("audit of the stock change: %q", got)
	}

	res, body = b.post("/admin/partners/telco", url.Values{"csrf": {token},
		"code": {"cinemark"}, "name": {"Cinemark"}, "currency": {"USD"},
		"point_value": {"0.01"}, "can_burn": {"1"}, "active": {"1"}})
	mustStatus(t, "partner", res, body, http.StatusSeeOther)
	res, body = b.post("/admin/partners/telco/cinemark/keys", url.Values{"csrf": {token},
		"scopes": {"balance", "authorize"}})
	mustStatus(t, "issue key", res, body, http.StatusCreated)
	key := regexp.MustCompile(`pk_[A-Za-z0-9_-]{40,}`).FindString(body)
	if key == "" {
		t.Fatalf("the issued key is not shown:\n%s", body)
	}
	_, again, _ := b.get("/admin/partners?program=telco")
	if strings.Contains(again, key) {
		t.Fatalf("the key is shown a second time")
	}
	_, keys, err := l.Partner(ctx, "telco", "cinemark")
	if err != nil || len(keys) != 1 || !strings.HasPrefix(key, keys[0].Prefix) {
		t.Fatalf("partner keys: %+v, %v", keys, err)
	}
	res, body = b.post("/admin/partners/telco/cinemark/keys/"+keys[0].ID+"/revoke",
		url.Values{"csrf": {token}})
	mustStatus(t, "revoke", res, body, http.StatusSeeOther)
	if _, keys, _ := l.Partner(ctx, "telco", "cinemark"); keys[0].RevokedAt == nil {
		t.Fatalf("the key was not revoked")
	}

	ext := url.Values{"csrf": {token}, "code": {"latam"}, "name": {"LATAM Pass"},
		"ratio": {"0.5"}, "rounding": {"down"}, "min_points": {"100"},
		"max_points": {"100000"}, "identify": {"customer_ref"}, "flavour": {"http"},
		"endpoint": {"https://partner.example/api"}, "credentials": {"s3cret-token"},
		"enabled": {"1"}}
	res, body = b.post("/admin/external/telco", ext)
	mustStatus(t, "external", res, body, http.StatusSeeOther)
	ext.Set("ratio", "0.75")
	ext.Set("credentials", "")
	res, body = b.post("/admin/external/telco", ext)
	mustStatus(t, "external ratio", res, body, http.StatusSeeOther)
	cfg, err := l.PartnerConfig(ctx, "telco", "latam")
	if err != nil || strings.TrimRight(cfg.Ratio, "0") != "0.75" || cfg.Credentials != "s3cret-token" {
		t.Fatalf("external program after the ratio change: %+v, %v; want ratio 0.75 and "+
			"the credentials kept", cfg, err)
	}
	// A new one saved with the field blank has none (a file partner needs
	// none), rather than being refused for keeping what does not exist.
	file := url.Values{"csrf": {token}, "code": {"filep"}, "name": {"File partner"},
		"ratio": {"1"}, "rounding": {"down"}, "min_points": {"100"},
		"max_points": {"100000"}, "identify": {"customer_ref"}, "flavour": {"file"},
		"credentials": {""}, "enabled": {"1"}}
	res, body = b.post("/admin/external/telco", file)
	mustStatus(t, "new external with no credentials", res, body, http.StatusSeeOther)
	if cfg, err := l.PartnerConfig(ctx, "telco", "filep"); err != nil || cfg.Credentials != "" {
		t.Fatalf("new external program saved blank: %+v, %v; want it with no credentials",
			cfg, err)
	}
	if got := rg.auditRows("external.saved"); len(got) != 3 ||
		!strings.Contains(got[1], `"ratio": "0.5"`) ||
		!strings.Contains(got[1], `"ratio": "0.75"`) {
		t.Fatalf("audit of the ratio change: %q", got)
	}
	for _, action := range []string{"tiers.set", "partner.saved", "partner.key_issued",
		"partner.key_revoked"} {
		if got := rg.auditRows(action); len(got) != 1 || !strings.HasPrefix(got[0], "root ") {
			t.Errorf("audit of %s: %q, want one entry by root", action, got)
		}
	}
	if n := rg.count(`SELECT count(*) FROM bo_audit WHERE before::text LIKE '%s3cret%'
		OR after::text LIKE '%s3cret%' OR after::text LIKE $1`, "%"+key+"%"); n != 0 {
		t.Fatalf("%d audit entries hold a secret", n)
	}
}

// TestAuditEntryAndChangeCommitTogether makes the audit log refuse an entry:
// the change it records must not be applied either.
func TestAuditEntryAndChangeCommitTogether(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.user("olga", RoleOperator)
	if _, err := rg.db.Exec(context.Background(), `ALTER TABLE bo_audit
		ADD CONSTRAINT no_rewards CHECK (action <> 'reward.saved')`); err != nil {
		t.Fatal(err)
	}
	b := rg.browser()
	token := b.mustSignIn("olga")
	res, body := b.post("/admin/catalog/telco", url.Values{"csrf": {token},
		"code": {"movie"}, "name": {"Cinema ticket"}, "points": {"1200"}, "active": {"1"}})
	mustStatus(t, "reward without its audit entry", res, body,
		http.StatusInternalServerError)
	if !strings.Contains(body, "Something went wrong") {
		t.Fatalf("the page does not report the failure:\n%s", body)
	}
	if _, err := rg.ledger().Reward(context.Background(), "telco", "movie"); core.KindOf(err) !=
		core.NotFound {
		t.Fatalf("the reward exists without its audit entry: %v", err)
	}
	// The ledger stored the refusal, so the command is settled, not retried.
	if n := rg.count(`SELECT count(*) FROM commands WHERE kind = $1 AND status = 'rejected'
		AND result->'error'->>'field' = 'audit'`, core.KindRewardUpsert); n != 1 {
		t.Fatalf("%d refusals of the reward stored, want 1", n)
	}
	// Once the audit log takes entries again, the same form saves both.
	if _, err := rg.db.Exec(context.Background(),
		`ALTER TABLE bo_audit DROP CONSTRAINT no_rewards`); err != nil {
		t.Fatal(err)
	}
	res, body = b.post("/admin/catalog/telco", url.Values{"csrf": {token},
		"code": {"movie"}, "name": {"Cinema ticket"}, "points": {"1200"}, "active": {"1"}})
	mustStatus(t, "reward with its audit entry", res, body, http.StatusSeeOther)
	if r, err := rg.ledger().Reward(context.Background(), "telco", "movie"); err != nil ||
		r.Points != 1200 {
		t.Fatalf("reward after the audit log is back: %+v %v", r, err)
	}
	if got := rg.auditRows("reward.saved"); len(got) != 1 ||
		!strings.HasPrefix(got[0], "olga telco/movie null -> ") {
		t.Fatalf("audit of the reward: %q", got)
	}
}

// TestChangeAcceptedWhileLedgerIsSlow: when the ledger does not answer in
// time the page says the change was accepted and will apply, not that it
// failed; it then applies, with its audit entry, once core takes it.
func TestChangeAcceptedWhileLedgerIsSlow(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{Wait: 300 * time.Millisecond})
	rg.telco()
	rg.user("olga", RoleOperator)
	bs := rg.connectBus()
	b := rg.browser()
	token := b.mustSignIn("olga")
	res, body := b.post("/admin/catalog/telco", url.Values{"csrf": {token},
		"code": {"movie"}, "name": {"Cinema ticket"}, "points": {"1200"}, "active": {"1"}})
	mustStatus(t, "reward while core is away", res, body, http.StatusSeeOther)
	_, page, _ := b.get(res.Header.Get("Location"))
	if !strings.Contains(page, "accepted and will apply") {
		t.Fatalf("the page does not say the change will apply:\n%s", problemText(page))
	}
	if _, err := rg.ledger().Reward(context.Background(), "telco", "movie"); core.KindOf(err) !=
		core.NotFound {
		t.Fatalf("the reward exists before core applied it: %v", err)
	}
	rg.consume(bs)
	deadline := time.Now().Add(10 * time.Second)
	for len(rg.auditRows("reward.saved")) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if r, err := rg.ledger().Reward(context.Background(), "telco", "movie"); err != nil ||
		r.Points != 1200 {
		t.Fatalf("reward after core came back: %+v %v", r, err)
	}
	if got := rg.auditRows("reward.saved"); len(got) != 1 {
		t.Fatalf("audit of the reward: %q", got)
	}
}

// TestReadOnlyRolesCannotChangeParameters: analysts and auditors see the
// parameter pages without a single form that changes anything, and their
// forged posts are refused with 403 and change nothing.
func TestReadOnlyRolesCannotChangeParameters(t *testing.T) {
	t.Parallel()
	rg := newBusRig(t, Options{})
	rg.telco()
	rg.user("ana", RoleAnalyst)
	rg.user("aldo", RoleAuditor)
	posts := map[string]url.Values{
		"/admin/programs/telco": {"name": {"Hacked"}, "pending_days": {"0"}},
		"/admin/rules/telco": {"code": {"evil"}, "event_type": {"x"},
			"formula_kind": {"fixed"}, "fixed_points": {"9"}},
		"/admin/rules/telco/base/retire": {},
		"/admin/tiers/telco": {"window_days": {"1"}, "level-0-code": {"x"},
			"level-0-multiplier": {"1"}},
		"/admin/catalog/telco": {"code": {"evil"}, "name": {"Evil"}, "points": {"1"}},
		"/admin/partners/telco": {"code": {"evil"}, "name": {"Evil"}, "currency": {"USD"},
			"point_value": {"1"}},
		"/admin/partners/telco/evil/keys": {"scopes": {"balance"}},
		"/admin/external/telco":           {"code": {"evil"}, "name": {"Evil"}, "ratio": {"1"}},
		"/admin/users/disable":            {"name": {"ana"}},
	}
	for _, user := range []string{"ana", "aldo"} {
		b := rg.browser()
		token := b.mustSignIn(user)
		for _, page := range []string{"/admin/programs", "/admin/rules", "/admin/tiers",
			"/admin/catalog", "/admin/partners", "/admin/external"} {
			code, body, _ := b.get(page)
			if code != http.StatusOK {
				t.Errorf("%s opens %s: status %d", user, page, code)
			}
			if strings.Contains(body, `method="post" action="/admin/`) &&
				regexp.MustCompile(`method="post" action="/admin/(programs|rules|tiers|catalog|partners|external)`).
					MatchString(body) {
				t.Errorf("%s is shown a form that changes parameters on %s", user, page)
			}
		}
		for path, form := range posts {
			form.Set("csrf", token)
			if res, _ := b.post(path, form); res.StatusCode != http.StatusForbidden {
				t.Errorf("%s posts %s: status %d, want 403", user, path, res.StatusCode)
			}
		}
	}
	if n := rg.count(`SELECT count(*) FROM bo_audit WHERE action NOT IN
		('user.signed_in', 'user.created')`); n != 0 {
		t.Fatalf("%d changes recorded after forged posts, want 0", n)
	}
	if p, _ := rg.ledger().Program(context.Background(), "telco"); p.Name != "Telco" {
		t.Fatalf("program renamed to %q by a forged post", p.Name)
	}
}

// TestFailedApprovalIsMarkedAndCanBeSentAgain: with no bus, an approved
// adjustment cannot reach the ledger; it is marked failed with the reason
// and offered again, not left "submitted".
func TestFailedApprovalIsMarkedAndCanBeSentAgain(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	rg.user("bruno", RoleOperator)
	_, err := rg.db.Exec(context.Background(), `INSERT INTO bo_pending_adjustments (program,
		member, points, reason, requested_by) VALUES ('telco', 'm-1', 50000, 'goodwill', 'olga')`)
	if err != nil {
		t.Fatal(err)
	}
	b := rg.browser()
	token := b.mustSignIn("bruno")
	res, body := b.post("/admin/approvals/1/approve", url.Values{"csrf": {token}})
	mustStatus(t, "approve without a bus", res, body, http.StatusSeeOther)
	var status, outcome string
	if err := rg.db.QueryRow(context.Background(), `SELECT status, outcome
		FROM bo_pending_adjustments WHERE id = 1`).Scan(&status, &outcome); err != nil {
		t.Fatal(err)
	}
	if status != "failed" || !strings.Contains(outcome, "bus") {
		t.Fatalf("approval without a bus: %s (%s), want failed naming the bus", status, outcome)
	}
	_, page, _ := b.get("/admin/approvals")
	if !strings.Contains(page, "Send adjustment 1 again") || !strings.Contains(page, "failed") {
		t.Fatalf("the approvals page does not offer the failed adjustment again:\n%s", page)
	}
	if got := rg.auditRows("adjustment.failed"); len(got) != 1 {
		t.Fatalf("audit of the failure: %q", got)
	}
}

// TestPasswordChangeAndDisabledUsers: a user changes their password with the
// current one, which ends their other sessions; a disabled user is signed
// out and cannot sign in until enabled again.
func TestPasswordChangeAndDisabledUsers(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	rg.user("root", RoleAdministrator)
	b, other := rg.browser(), rg.browser()
	token := b.mustSignIn("olga")
	other.mustSignIn("olga")

	res, body := b.post("/admin/account/password", url.Values{"csrf": {token},
		"current": {"not-my-password"}, "new": {"a-brand-new-password"},
		"confirm": {"a-brand-new-password"}})
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(problemText(body),
		"current password") {
		t.Fatalf("wrong current password: status %d, %q", res.StatusCode, problemText(body))
	}
	res, body = b.post("/admin/account/password", url.Values{"csrf": {token},
		"current": {"olga-password-1"}, "new": {"a-brand-new-password"},
		"confirm": {"a-brand-new-password"}})
	mustStatus(t, "change password", res, body, http.StatusSeeOther)
	if code, _, _ := b.get("/admin/members"); code != http.StatusOK {
		t.Fatalf("the session that changed the password ended: %d", code)
	}
	if code, _, _ := other.get("/admin/members"); code != http.StatusSeeOther {
		t.Fatalf("the other session still works after the change: %d", code)
	}
	if res := rg.browser().signIn("olga", "olga-password-1"); res.StatusCode == http.StatusSeeOther {
		t.Fatalf("the old password still signs in")
	}
	if res := rg.browser().signIn("olga", "a-brand-new-password"); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("the new password does not sign in: %d", res.StatusCode)
	}

	root := rg.browser()
	rtoken := root.mustSignIn("root")
	res, body = root.post("/admin/users/disable", url.Values{"csrf": {rtoken}, "name": {"olga"}})
	mustStatus(t, "disable", res, body, http.StatusSeeOther)
	if code, _, _ := b.get("/admin/members"); code != http.StatusSeeOther {
		t.Fatalf("a disabled user's session still works: %d", code)
	}
	if res := rg.browser().signIn("olga", "a-brand-new-password"); res.StatusCode != http.StatusForbidden {
		t.Fatalf("a disabled user signs in: %d", res.StatusCode)
	}
	res, body = root.post("/admin/users/disable", url.Values{"csrf": {rtoken}, "name": {"root"}})
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("the administrator disables themself: %d", res.StatusCode)
	}
	res, body = root.post("/admin/users/enable", url.Values{"csrf": {rtoken}, "name": {"olga"}})
	mustStatus(t, "enable", res, body, http.StatusSeeOther)
	if res := rg.browser().signIn("olga", "a-brand-new-password"); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("an enabled user cannot sign in: %d", res.StatusCode)
	}
	for _, action := range []string{"user.password_changed", "user.disabled", "user.enabled"} {
		if got := rg.auditRows(action); len(got) != 1 {
			t.Errorf("audit of %s: %q, want one entry", action, got)
		}
	}
}
