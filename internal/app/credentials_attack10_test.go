package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/puntos-loyalty/puntos/gateway/backoffice"
	"github.com/puntos-loyalty/puntos/internal/secrets"
)

// lockedBuffer collects log lines written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// boSession signs a back-office user in on base and returns a client that
// keeps the session's cookies.
func boSession(t *testing.T, base, name, password string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	res, err := hc.Get(base + "/admin/signin")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	csrf := csrfOf(t, string(page))
	res, err = hc.PostForm(base+"/admin/signin", url.Values{"csrf": {csrf}, "name": {name},
		"password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("sign in: %d", res.StatusCode)
	}
	return hc
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf field in the page: %.400s", page)
	}
	return m[1]
}

func getPage(t *testing.T, hc *http.Client, u string) string {
	t.Helper()
	res, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %.300s", u, res.StatusCode, b)
	}
	return string(b)
}

// dumpTables is every row of every table of the ledger's database, as text.
func dumpTables(t *testing.T, a *App) string {
	t.Helper()
	ctx := context.Background()
	rows, err := a.Pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, n := range names {
		var text string
		q := fmt.Sprintf(`SELECT coalesce(string_agg(t::text, E'\n'), '') FROM %s t`,
			pgx.Identifier{n}.Sanitize())
		if err := a.Pool.QueryRow(ctx, q).Scan(&text); err != nil {
			t.Fatalf("dump %s: %v", n, err)
		}
		out.WriteString("== " + n + "\n" + text + "\n")
	}
	return out.String()
}

// TestSecretNowhereInClearAttack10 sets partners' secrets every way a user
// can (REST: new, replayed, changed, refused by the gateway, refused by the
// ledger after it opened the value, for a program that does not exist;
// the back office's form) on one process logging at debug level, then
// looks for the secrets in every answer, every back-office page that
// shows external programs, the audit log and dead letters, every row of
// every table of the database, the whole log, and the NATS store on disk.
func TestSecretNowhereInClearAttack10(t *testing.T) {
	const (
		restSecret = "Zq7-rest-hunter2-attack10"
		newSecret  = "Zq7-rest-changed-attack10"
		boSecret   = "Zq7-backoffice-attack10"
		badSecret  = "Zq7-refused-attack10"
	)
	all := []string{restSecret, newSecret, boSecret, badSecret}
	_, key, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.SecretsKey = key
	cfg.ResultWait = 5 * time.Second
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := Start(context.Background(), cfg, log, Roles{Gateway: true, Core: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	base := "http://" + a.Addr()
	c := &client{t: t, base: base, key: testKey}
	setupProgram(c)

	var answers []string
	keep := func(r reply) reply { answers = append(answers, r.raw); return r }
	ext := func(secret any) map[string]any {
		m := map[string]any{"name": "SkyMiles", "ratio": "0.5", "flavour": "http",
			"endpoint": "https://127.0.0.1:9/api"}
		if secret != nil {
			m["credentials"] = secret
		}
		return m
	}
	const path = "/v1/programs/telco/external/sky"
	keep(c.must(201, "PUT", path, "a10-ext-1", ext(restSecret)))
	keep(c.must(201, "PUT", path, "a10-ext-1", ext(restSecret)))                  // replay
	keep(c.must(409, "PUT", path, "a10-ext-1", ext(newSecret)))                   // another secret
	keep(c.must(201, "PUT", path, "a10-ext-2", ext(newSecret)))                   // changed
	keep(c.must(201, "PUT", path, "a10-ext-3", ext(nil)))                         // kept
	keep(c.must(400, "PUT", path, "a10-ext-4", map[string]any{"name": "SkyMiles", // gateway
		"ratio": "zero", "flavour": "http", "endpoint": "https://127.0.0.1:9/api",
		"credentials": badSecret}))
	keep(c.must(400, "PUT", "/v1/programs/telco/external/bad.code", "a10-ext-5",
		ext(badSecret))) // the ledger, after opening it
	keep(c.must(404, "PUT", "/v1/programs/nosuch/external/sky", "a10-ext-6", ext(badSecret)))
	keep(c.must(400, "PUT", path, "a10-ext-7", ext(badSecret+"\nline two")))
	for _, txn := range []string{"a10-ext-1", "a10-ext-2", "a10-ext-5", "a10-ext-6"} {
		keep(c.must(200, "GET", "/v1/commands/"+txn, "", nil))
	}
	keep(c.must(200, "GET", path, "", nil))
	keep(c.must(200, "GET", "/v1/programs/telco/external", "", nil))

	// The back office's form, then its pages.
	if err := backoffice.CreateUser(context.Background(), a.Pool, "ana",
		backoffice.RoleAdministrator, "correct-horse-battery-a10", "test"); err != nil {
		t.Fatal(err)
	}
	hc := boSession(t, base, "ana", "correct-horse-battery-a10")
	page := getPage(t, hc, base+"/admin/external?program=telco")
	res, err := hc.PostForm(base+"/admin/external/telco", url.Values{
		"csrf": {csrfOf(t, page)}, "code": {"bo"}, "name": {"BO Miles"}, "ratio": {"2"},
		"rounding": {"down"}, "identify": {"customer_ref"}, "flavour": {"http"},
		"endpoint": {"https://127.0.0.1:9/bo"}, "credentials": {boSecret}, "enabled": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	answers = append(answers, string(b))
	if e, err := a.Ledger.PartnerConfig(context.Background(), "telco", "bo"); err != nil ||
		e.Credentials != boSecret {
		t.Fatalf("the back office's secret: %+v %v", e, err)
	}
	for _, p := range []string{"/admin/external?program=telco",
		"/admin/external?program=telco&edit=bo", "/admin/external?program=telco&edit=sky",
		"/admin/audit", "/admin/deadletters"} {
		answers = append(answers, getPage(t, hc, base+p))
	}

	// The adapter still reads the latest REST secret.
	if e, err := a.Ledger.PartnerConfig(context.Background(), "telco", "sky"); err != nil ||
		e.Credentials != newSecret {
		t.Fatalf("partner config of sky: %+v %v, want %q", e, err, newSecret)
	}

	db := dumpTables(t, a)
	logText := logs.String()
	for _, s := range all {
		for i, ans := range answers {
			if strings.Contains(ans, s) {
				t.Errorf("answer %d holds secret %q: %.600s", i, s, ans)
			}
		}
		if i := strings.Index(db, s); i >= 0 {
			t.Errorf("the database holds secret %q: ...%s...", s, db[max(0, i-300):i+len(s)])
		}
		if i := strings.Index(logText, s); i >= 0 {
			t.Errorf("the log holds secret %q: ...%s...", s,
				logText[max(0, i-300):min(len(logText), i+100)])
		}
		if files := filesHolding(t, cfg.DataDir, s); len(files) != 0 {
			t.Errorf("files holding secret %q in clear: %v", s, files)
		}
	}
}
