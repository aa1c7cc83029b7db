package backoffice

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/bcrypt"

	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/secrets"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// rig is a back office on a fresh database with a clock the test moves.
type rig struct {
	t    *testing.T
	s    *Server
	db   *pgxpool.Pool
	url  string
	now  time.Time
	opts Options
	// natsURL is the bus's server, once connectBus made one.
	natsURL string
}

func TestMain(m *testing.M) {
	bcryptCost = bcrypt.MinCost // production hashes are tested for cost in TestPasswordHash
	os.Exit(m.Run())
}

func newRig(t *testing.T, opt Options) *rig {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(db.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := postgres.Migrate(ctx, db, log); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	rg := &rig{t: t, db: db, now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	l := postgres.New(db, log)
	if l.Secrets, _, err = secrets.Generate(); err != nil { // external programs' credentials
		t.Fatal(err)
	}
	rg.s = New(db, nil, l, log, opt)
	rg.s.now = func() time.Time { return rg.now }
	r := mux.NewRouter()
	rg.s.Register(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	rg.url = srv.URL
	return rg
}

func (rg *rig) user(name string, role Role) {
	rg.t.Helper()
	if err := CreateUser(context.Background(), rg.db, name, role, name+"-password-1", "test"); err != nil {
		rg.t.Fatalf("create user: %v", err)
	}
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t   *testing.T
	rg  *rig
	c   *http.Client
	jar *cookiejar.Jar
}

func (rg *rig) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: rg.t, rg: rg, jar: jar, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get returns the status, body and the page's CSRF token (if any).
func (b *browser) get(path string) (int, string, string) {
	b.t.Helper()
	res, err := b.c.Get(b.rg.url + path)
	if err != nil {
		b.t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	token := ""
	if m := csrfField.FindSubmatch(body); m != nil {
		token = string(m[1])
	}
	return res.StatusCode, string(body), token
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	res, err := b.c.PostForm(b.rg.url+path, form)
	if err != nil {
		b.t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func (b *browser) signIn(name, password string) *http.Response {
	b.t.Helper()
	res, _ := b.signInPage(name, password)
	return res
}

// signInPage signs in and returns the answer with its page.
func (b *browser) signInPage(name, password string) (*http.Response, string) {
	b.t.Helper()
	_, _, token := b.get("/admin/signin")
	return b.post("/admin/signin", url.Values{"csrf": {token}, "name": {name},
		"password": {password}})
}

// mustSignIn signs in and returns the session's CSRF token.
func (b *browser) mustSignIn(name string) string {
	b.t.Helper()
	if res := b.signIn(name, name+"-password-1"); res.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("sign in %s: status %d, want 303", name, res.StatusCode)
	}
	code, _, token := b.get("/admin/members")
	if code != http.StatusOK || token == "" {
		b.t.Fatalf("members page after sign-in: status %d, token %q", code, token)
	}
	return token
}

func (rg *rig) count(query string, args ...any) int {
	rg.t.Helper()
	var n int
	if err := rg.db.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		rg.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestCSRFIsCheckedOnEveryPost(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	b := rg.browser()
	token := b.mustSignIn("olga")
	form := url.Values{"program": {"telco"}, "member": {"m-1"}, "points": {"50000"},
		"reason": {"goodwill"}}

	// The forged token differs from the real one in its first character
	// (a fixed "x" matched it when the real one began with x).
	forged := "x" + token[1:]
	if token[0] == 'x' {
		forged = "y" + token[1:]
	}
	for name, value := range map[string]string{"missing": "", "forged": forged} {
		f := url.Values{"csrf": {value}}
		for k, v := range form {
			f[k] = v
		}
		res, body := b.post("/admin/members/adjust", f)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
			t.Fatalf("%s token: status %d, want 403 naming CSRF", name, res.StatusCode)
		}
	}
	if n := rg.count(`SELECT count(*) FROM bo_pending_adjustments`); n != 0 {
		t.Fatalf("%d adjustments queued by forged forms, want 0", n)
	}

	// The right token gets past the check (to "no such member").
	form.Set("csrf", token)
	if res, _ := b.post("/admin/members/adjust", form); res.StatusCode != http.StatusNotFound {
		t.Fatalf("right token: status %d, want 404 (no such member)", res.StatusCode)
	}

	// Sign-out needs the token too, and the session survives a forged one.
	if res, _ := b.post("/admin/signout", url.Values{}); res.StatusCode != 403 {
		t.Fatalf("sign-out without token: status %d, want 403", res.StatusCode)
	}
	if code, _, _ := b.get("/admin/members"); code != http.StatusOK {
		t.Fatalf("session after forged sign-out: status %d, want 200", code)
	}

	// The sign-in form has a token of its own, bound to a cookie.
	other := rg.browser()
	res, _ := other.post("/admin/signin", url.Values{"csrf": {token}, "name": {"olga"},
		"password": {"olga-password-1"}})
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-in with a token from elsewhere: status %d, want 403", res.StatusCode)
	}
}

func TestLockoutAfterFiveFailures(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	b := rg.browser()
	for i := 1; i <= 5; i++ {
		if res := b.signIn("olga", "wrong-password-00"); res.StatusCode != 401 {
			t.Fatalf("failure %d: status %d, want 401", i, res.StatusCode)
		}
	}
	var until time.Time
	err := rg.db.QueryRow(context.Background(),
		`SELECT locked_until FROM bo_users WHERE name = 'olga'`).Scan(&until)
	if err != nil || !until.Equal(rg.now.Add(15*time.Minute)) {
		t.Fatalf("locked_until %v (%v), want %v", until, err, rg.now.Add(15*time.Minute))
	}

	// While locked, every sign-in answers as one with an unknown name, in
	// the same words, the right password too: a guesser learns neither that
	// olga exists nor, by a different answer, that a guess was right (which
	// would let the guessing go on through the lock). The guesses do not
	// lengthen it.
	signIn := func(b *browser, name, password string) (int, string) {
		res, page := b.signInPage(name, password)
		return res.StatusCode, page
	}
	const refusal = "The name or the password is not right."
	unknown, unknownPage := signIn(rg.browser(), "nobody", "wrong-password-00")
	if unknown != http.StatusUnauthorized || !strings.Contains(unknownPage, refusal) {
		t.Fatalf("unknown name: status %d, want 401 saying %q", unknown, refusal)
	}
	rg.now = rg.now.Add(14 * time.Minute)
	for i, password := range []string{"wrong-password-00", "olga-password-1",
		"wrong-password-01", "olga-password-1"} {
		status, page := signIn(b, "olga", password)
		if status != unknown || !strings.Contains(page, refusal) {
			t.Fatalf("sign-in %d while locked (%s): status %d, want %d as for an unknown "+
				"name, with its words", i+1, password, status, unknown)
		}
	}
	if err := rg.db.QueryRow(context.Background(),
		`SELECT locked_until FROM bo_users WHERE name = 'olga'`).Scan(&until); err != nil ||
		!until.Equal(rg.now.Add(time.Minute)) {
		t.Fatalf("locked_until after guesses while locked: %v (%v), want it unmoved", until, err)
	}
	res := b.signIn("olga", "olga-password-1")
	for _, c := range res.Cookies() {
		if c.Name == cookieName && c.Value != "" {
			t.Fatalf("a session cookie was set while locked")
		}
	}
	if n := rg.count(`SELECT count(*) FROM bo_sessions`); n != 0 {
		t.Fatalf("%d sessions while locked, want 0", n)
	}

	// Fifteen minutes after the fifth failure the lock is gone.
	rg.now = rg.now.Add(time.Minute + time.Second)
	if res := b.signIn("olga", "olga-password-1"); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the lockout: status %d, want 303", res.StatusCode)
	}
	if n := rg.count(`SELECT count(*) FROM bo_audit WHERE action = 'user.locked'
		AND target = 'olga'`); n != 1 {
		t.Fatalf("%d lock entries in the audit log, want 1", n)
	}

	// An unknown name gets the same answer as a wrong password.
	res = b.signIn("nobody", "whatever-password")
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown user: status %d, want 401", res.StatusCode)
	}
}

func TestSessionCookieAndExpiry(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{SessionTTL: time.Hour})
	rg.user("ana", RoleAnalyst)
	b := rg.browser()
	res := b.signIn("ana", "ana-password-1")
	var c *http.Cookie
	for _, k := range res.Cookies() {
		if k.Name == cookieName {
			c = k
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/admin/" ||
		c.Secure || c.MaxAge != 3600 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path /admin/, "+
			"not Secure over plain HTTP, Max-Age 3600", c)
	}

	// Only a digest of the cookie is stored.
	sum := sha256.Sum256([]byte(c.Value))
	if n := rg.count(`SELECT count(*) FROM bo_sessions WHERE id_hash = $1`, sum[:]); n != 1 {
		t.Fatalf("%d sessions stored under the cookie's digest, want 1", n)
	}
	if n := rg.count(`SELECT count(*) FROM bo_sessions WHERE id_hash = $1`,
		[]byte(c.Value)); n != 0 {
		t.Fatalf("the raw cookie value is stored")
	}

	rg.now = rg.now.Add(59 * time.Minute)
	if code, _, _ := b.get("/admin/members"); code != http.StatusOK {
		t.Fatalf("before expiry: status %d, want 200", code)
	}
	rg.now = rg.now.Add(time.Minute)
	if code, _, _ := b.get("/admin/members"); code != http.StatusSeeOther {
		t.Fatalf("after expiry: status %d, want 303 to the sign-in page", code)
	}
	if res, _ := b.post("/admin/signout", url.Values{}); res.StatusCode != 401 {
		t.Fatalf("POST after expiry: status %d, want 401", res.StatusCode)
	}
}

func TestSecureCookieBehindTLSProxy(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{SecureCookies: true})
	rg.user("ana", RoleAnalyst)
	res := rg.browser().signIn("ana", "ana-password-1")
	for _, k := range res.Cookies() {
		if k.Name == cookieName && !k.Secure {
			t.Fatalf("session cookie is not Secure with SecureCookies set")
		}
	}
}

// Behind a proxy that ends TLS and says so, the cookies are Secure without
// any setting; on plain HTTP without the header they are not.
func TestSecureCookieFromForwardedProto(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	for proto, want := range map[string]bool{"https": true, "HTTPS": true, "http": false,
		"": false, "https, http": true, "http, https": false} {
		req, err := http.NewRequest(http.MethodGet, rg.url+"/admin/signin", nil)
		if err != nil {
			t.Fatal(err)
		}
		if proto != "" {
			req.Header.Set("X-Forwarded-Proto", proto)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if len(res.Cookies()) == 0 {
			t.Fatalf("X-Forwarded-Proto %q: no cookie set by the sign-in form", proto)
		}
		for _, k := range res.Cookies() {
			if k.Secure != want {
				t.Errorf("X-Forwarded-Proto %q: cookie %s Secure %v, want %v", proto, k.Name,
					k.Secure, want)
			}
		}
	}
}

func TestRolesThatOnlyRead(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("ana", RoleAnalyst)
	rg.user("aldo", RoleAuditor)
	rg.user("olga", RoleOperator)
	rg.user("root", RoleAdministrator)
	adjust := func(token string) url.Values {
		return url.Values{"csrf": {token}, "program": {"telco"}, "member": {"m-1"},
			"points": {"50"}, "reason": {"goodwill"}}
	}
	cases := []struct {
		user         string
		adjust       int // status of POST /admin/members/adjust (404: allowed, no member)
		audit, users int // status of GET /admin/audit and /admin/users
	}{
		{"ana", 403, 403, 403},
		{"aldo", 403, 200, 403},
		{"olga", 404, 403, 403},
		{"root", 404, 200, 200},
	}
	for _, c := range cases {
		b := rg.browser()
		token := b.mustSignIn(c.user)
		if res, _ := b.post("/admin/members/adjust", adjust(token)); res.StatusCode != c.adjust {
			t.Errorf("%s adjust: status %d, want %d", c.user, res.StatusCode, c.adjust)
		}
		if code, _, _ := b.get("/admin/audit"); code != c.audit {
			t.Errorf("%s audit: status %d, want %d", c.user, code, c.audit)
		}
		if code, _, _ := b.get("/admin/users"); code != c.users {
			t.Errorf("%s users: status %d, want %d", c.user, code, c.users)
		}
		res, _ := b.post("/admin/users", url.Values{"csrf": {token}, "name": {"x" + c.user},
			"role": {"administrator"}, "password": {"a-long-password"}})
		want := 403
		if c.user == "root" {
			want = 303
		}
		if res.StatusCode != want {
			t.Errorf("%s creates a user: status %d, want %d", c.user, res.StatusCode, want)
		}
	}
	if n := rg.count(`SELECT count(*) FROM bo_users WHERE name LIKE 'x%'`); n != 1 {
		t.Fatalf("%d users created, want 1 (by the administrator)", n)
	}
}

func TestFormatPoints(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000",
		-12500: "-12,500", 1234567: "1,234,567"} {
		if got := formatPoints(n); got != want {
			t.Errorf("formatPoints(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPasswordHash(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	var hash string
	err := rg.db.QueryRow(context.Background(),
		`SELECT password_hash FROM bo_users WHERE name = 'olga'`).Scan(&hash)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(hash, "olga-password-1") ||
		bcrypt.CompareHashAndPassword([]byte(hash), []byte("olga-password-1")) != nil {
		t.Fatalf("stored hash %q is not a bcrypt hash of the password", hash)
	}
	if cost, _ := bcrypt.Cost(dummyHash); cost != 12 {
		t.Fatalf("production cost %d, want 12", cost)
	}
	err = CreateUser(context.Background(), rg.db, "short", RoleOperator, "too-short", "test")
	if err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("short password: %v, want an error naming the password", err)
	}
	// Six accented letters are twelve bytes but six characters: too short.
	err = CreateUser(context.Background(), rg.db, "accents", RoleOperator, "ñáéíóú", "test")
	if err == nil || !strings.Contains(err.Error(), "at least 12 characters") {
		t.Fatalf("password of 6 accented letters: %v, want refused as too short", err)
	}
	// Forty accented letters are 80 bytes, past what bcrypt reads.
	err = CreateUser(context.Background(), rg.db, "long", RoleOperator, strings.Repeat("ñ", 40),
		"test")
	if err == nil || !strings.Contains(err.Error(), "72 bytes") {
		t.Fatalf("password of 80 bytes: %v, want refused naming the 72-byte limit", err)
	}
	if err := CreateUser(context.Background(), rg.db, "twelve", RoleOperator,
		"ñandú-ñandú!", "test"); err != nil {
		t.Fatalf("password of 12 characters (15 bytes): %v, want it taken", err)
	}
}

func TestRequesterCannotApproveOwnAdjustment(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	rg.user("root", RoleAdministrator)
	ctx := context.Background()
	_, err := rg.db.Exec(ctx, `INSERT INTO bo_pending_adjustments (program, member, points,
		reason, requested_by) VALUES ('telco', 'm-1', 50000, 'goodwill', 'olga')`)
	if err != nil {
		t.Fatal(err)
	}
	b := rg.browser()
	token := b.mustSignIn("olga")
	res, body := b.post("/admin/approvals/1/approve", url.Values{"csrf": {token}})
	if res.StatusCode != http.StatusConflict || !strings.Contains(body, "second person") {
		t.Fatalf("own approval: status %d, want 409 asking for a second person",
			res.StatusCode)
	}
	if n := rg.count(`SELECT count(*) FROM bo_pending_adjustments
		WHERE status = 'pending'`); n != 1 {
		t.Fatalf("%d pending after a self-approval, want 1", n)
	}

	// The database refuses it too, whatever the code above it does.
	_, err = rg.db.Exec(ctx, `UPDATE bo_pending_adjustments SET status = 'applied',
		decided_by = 'olga' WHERE id = 1`)
	if err == nil || !strings.Contains(err.Error(), "check") {
		t.Fatalf("self-approval in SQL: %v, want a check violation", err)
	}

	// Another administrator rejects it; it is then closed for everyone.
	root := rg.browser()
	rtoken := root.mustSignIn("root")
	if res, _ := root.post("/admin/approvals/1/reject",
		url.Values{"csrf": {rtoken}}); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("reject: status %d, want 303", res.StatusCode)
	}
	if res, _ := root.post("/admin/approvals/1/approve",
		url.Values{"csrf": {rtoken}}); res.StatusCode != http.StatusConflict {
		t.Fatalf("approve after reject: status %d, want 409", res.StatusCode)
	}
	if n := rg.count(`SELECT count(*) FROM bo_audit WHERE action = 'adjustment.rejected'
		AND actor = 'root' AND target = 'telco/m-1'`); n != 1 {
		t.Fatalf("%d rejection entries in the audit log, want 1", n)
	}
}

// From the attack on the lockout: whoever holds a session (a stolen one, a
// shared desk) could lock the account on purpose and then guess its
// password on the password page without limit, since the right one
// answered 429 and a wrong one 400. During a lock both answer the same.
func TestPasswordPageDuringALockTellsNothing(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	b := rg.browser()
	token := b.mustSignIn("olga")
	for range 5 {
		rg.browser().signIn("olga", "wrong-password-00")
	}
	change := func(current string) (int, string) {
		res, body := b.post("/admin/account/password", url.Values{"csrf": {token},
			"current": {current}, "new": {"a-brand-new-password"},
			"confirm": {"a-brand-new-password"}})
		return res.StatusCode, problemText(body)
	}
	wrongStatus, wrongText := change("not-my-password")
	rightStatus, rightText := change("olga-password-1")
	if wrongStatus != rightStatus || wrongText != rightText || wrongStatus != 400 {
		t.Fatalf("during a lock: wrong password %d %q, right one %d %q; want the same 400",
			wrongStatus, wrongText, rightStatus, rightText)
	}
	if res := rg.browser().signIn("olga", "a-brand-new-password"); res.StatusCode ==
		http.StatusSeeOther {
		t.Fatalf("the password changed during the lock")
	}
}

// From the attack on sign-in without a row lock: a sign-in with the old
// password that was being checked while the password changed made a
// session that outlived the change. The session is stored only while the
// user keeps the password it was checked against.
func TestSignInDuringAPasswordChangeGetsNoSession(t *testing.T) {
	t.Parallel()
	rg := newRig(t, Options{})
	rg.user("olga", RoleOperator)
	ctx := context.Background()
	u, err := rg.s.checkPassword(ctx, "olga", "olga-password-1")
	if err != nil {
		t.Fatalf("the right password: %v", err)
	}
	// The password changes while that sign-in is between its check and
	// its session.
	if _, err := rg.db.Exec(ctx, `UPDATE bo_users SET password_hash = 'changed'
		WHERE name = 'olga'`); err != nil {
		t.Fatal(err)
	}
	if _, err := rg.s.newSession(ctx, u); !errors.Is(err, errBadCredentials) {
		t.Fatalf("session after the change: %v; want refused as bad credentials", err)
	}
	if n := rg.count(`SELECT count(*) FROM bo_sessions`); n != 0 {
		t.Fatalf("%d sessions after the change, want 0", n)
	}

	// Likewise a user disabled between the check and the session: the
	// session came back when the user was enabled again.
	rg.user("bea", RoleOperator)
	if u, err = rg.s.checkPassword(ctx, "bea", "bea-password-1"); err != nil {
		t.Fatalf("the right password: %v", err)
	}
	if _, err := rg.db.Exec(ctx, `UPDATE bo_users SET disabled_at = now()
		WHERE name = 'bea'`); err != nil {
		t.Fatal(err)
	}
	if _, err := rg.s.newSession(ctx, u); !errors.Is(err, errBadCredentials) {
		t.Fatalf("session of a user disabled meanwhile: %v; want refused", err)
	}
	if n := rg.count(`SELECT count(*) FROM bo_sessions`); n != 0 {
		t.Fatalf("%d sessions after the disabling, want 0", n)
	}
}
