package backoffice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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

// The fixture of the browser tests: the whole platform as `puntos run`
// starts it, and a headless Chromium at laptop size signed in through the
// real pages.

const apiKey = "billing-key-0123456789"

// member is the member every browser test starts with: 1,500 points in
// program telco.
const member = "7590-VHVEG"

// platform is a running Puntos for one test, stopped when the test ends.
type platform struct {
	t    *testing.T
	a    *app.App
	base string
}

// startPlatform starts gateway and core (plus whatever roles adds) on a
// fresh database; tweak, when set, changes the configuration first.
func startPlatform(t *testing.T, roles app.Roles, tweak func(*app.Config)) *platform {
	t.Helper()
	cfg := &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 2, BatchSize: 64,
		ResultWait: 10 * time.Second, APIKeys: "billing=" + apiKey, LogLevel: "error"}
	if tweak != nil {
		tweak(cfg)
	}
	roles.Gateway, roles.Core = true, true
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	a, err := app.Start(context.Background(), cfg, log, roles)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return &platform{t: t, a: a, base: "http://" + a.Addr()}
}

// api calls the REST gateway and fails the test on an unexpected status.
func (p *platform) api(method, path, txn string, body any, want int) {
	p.t.Helper()
	buf, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, p.base+path, bytes.NewReader(buf))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Idempotency-Key", txn)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	res.Body.Close()
	if res.StatusCode != want {
		p.t.Fatalf("%s %s: status %d, want %d", method, path, res.StatusCode, want)
	}
}

// telco creates program telco (USD, 1 point a dollar, 24-month expiry) and,
// with credit, the member with 1,500 points.
func (p *platform) telco(credit bool) {
	p.t.Helper()
	p.api("PUT", "/v1/programs/telco", "prog-1", map[string]any{"name": "Telco",
		"currency": "USD", "points_per_unit": "1", "expiry_unit": "months",
		"expiry_length": 24, "expiry_round": "month"}, 201)
	if !credit {
		return
	}
	p.api("POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": member, "channel": "web"}, 201)
	p.api("POST", "/v1/programs/telco/members/"+member+"/credits", "cr-1",
		map[string]any{"points": 1500, "reason": "welcome"}, 201)
}

// users creates back-office users; each one's password is name-password-1.
func (p *platform) users(roles map[string]backoffice.Role) {
	p.t.Helper()
	for name, role := range roles {
		err := backoffice.CreateUser(context.Background(), p.a.Pool, name, role,
			name+"-password-1", "test")
		if err != nil {
			p.t.Fatalf("create %s: %v", name, err)
		}
	}
}

// available is the member's spendable balance as the ledger has it.
func (p *platform) available() int64 {
	p.t.Helper()
	m, err := p.a.Ledger.Member(context.Background(), "telco", member)
	if err != nil {
		p.t.Fatalf("read member: %v", err)
	}
	return int64(m.Balance.Available)
}

// count runs a count query on the platform's database.
func (p *platform) count(query string, args ...any) int {
	p.t.Helper()
	var n int
	if err := p.a.Pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		p.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// chrome is a headless Chromium with a laptop-sized window, for one test.
type chrome struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
}

// newChrome starts Chromium for a test against the platform at base; it
// closes when the test ends.
func newChrome(t *testing.T, base string) *chrome {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1366, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return &chrome{t: t, ctx: bctx, base: base, shots: screenshotDir(t)}
}

// run does one step, within a minute, and fails the test if it fails.
func (c *chrome) run(step string, actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	sctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		c.t.Fatalf("%s: %v", step, err)
	}
}

// shot writes a PNG of the whole page for review.
func (c *chrome) shot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		png, err := chromedp.FullScreenshot(100)(ctx, t)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(c.shots, name+".png"), png, 0o644)
	})
}

// signIn signs in through the sign-in page.
func (c *chrome) signIn(name string) {
	c.t.Helper()
	c.run("sign in as "+name,
		chromedp.Navigate(c.base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("password")),
		chromedp.SendKeys(chromedp.ID("name"), name),
		chromedp.SendKeys(chromedp.ID("password"), name+"-password-1"),
		chromedp.Click(chromedp.CSS(`form[action="/admin/signin"] button`)),
		chromedp.WaitVisible(chromedp.ID("whoami")))
}

func (c *chrome) signOut() {
	c.t.Helper()
	c.run("sign out", chromedp.Click(chromedp.CSS(".signout button")),
		chromedp.WaitVisible(chromedp.ID("password")))
}

// text reads the text of the element with id.
func (c *chrome) text(id string) string {
	c.t.Helper()
	var s string
	c.run("read #"+id, chromedp.WaitVisible(chromedp.ID(id)),
		into(&s, chromedp.Text(chromedp.ID(id))))
	return s
}

// has tells whether the page has an element matching the CSS selector.
func (c *chrome) has(selector string) bool {
	c.t.Helper()
	var ok bool
	js := fmt.Sprintf(`document.querySelector(%q) !== null`, selector)
	c.run("look for "+selector, into(&ok, chromedp.Evaluate[bool](js)))
	return ok
}

// a11y checks the page for what a screen reader or a laptop screen needs:
// one h1, a label (or aria-label) for every field, and no sideways scroll.
// It returns what is wrong, or "".
func (c *chrome) a11y() string {
	c.t.Helper()
	var problems []string
	const js = `(() => {
		const out = [];
		if (document.querySelectorAll('h1').length !== 1) out.push('not one h1');
		for (const e of document.querySelectorAll(
				'input:not([type=hidden]), select, textarea, output')) {
			const labelled = (e.id && document.querySelector('label[for="' + e.id + '"]')) ||
				e.getAttribute('aria-label') || e.closest('label');
			if (!labelled) out.push('no label: ' + (e.name || e.id || e.tagName));
		}
		if (document.documentElement.scrollWidth > window.innerWidth)
			out.push('wider than the window: ' + document.documentElement.scrollWidth + 'px');
		return out; })()`
	c.run("check accessibility", into(&problems, chromedp.Evaluate[[]string](js)))
	return strings.Join(problems, "; ")
}

// forge posts a form the page does not offer, built by script with the
// session's CSRF token, as someone tampering with the page would; it
// returns the problem the answer shows.
func (c *chrome) forge(action string, fields map[string]string) string {
	c.t.Helper()
	var b strings.Builder
	for k, v := range fields {
		fmt.Fprintf(&b, "add(%q, %q);", k, v)
	}
	js := fmt.Sprintf(`(() => {
		const f = document.createElement('form');
		f.method = 'post'; f.action = %q;
		const add = (n, v) => { const i = document.createElement('input');
			i.type = 'hidden'; i.name = n; i.value = v; f.appendChild(i); };
		add('csrf', document.querySelector('.signout input[name=csrf]').value);
		%s
		document.body.appendChild(f); f.submit(); return true; })()`, action, b.String())
	var ok bool
	var problem string
	c.run("forge a post to "+action, into(&ok, chromedp.Evaluate[bool](js)),
		chromedp.WaitVisible(chromedp.CSS(".problem")),
		into(&problem, chromedp.Text(chromedp.CSS(".problem"))))
	return problem
}

// fetch sends a request with the cookies of the browser's session, as a
// download or a hand-made form would, and returns the status and body.
func (c *chrome) fetch(method, url string, body io.Reader, contentType string) (int, string) {
	c.t.Helper()
	var cookies []*network.Cookie
	err := chromedp.Do(c.ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies,
			network.GetCookiesParams{URLs: []string{c.base + "/admin/"}})
		if err != nil {
			return err
		}
		cookies = res.Cookies
		return nil
	}))
	if err != nil {
		c.t.Fatalf("read the browser's cookies: %v", err)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		c.t.Fatalf("request: %v", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, ck := range cookies {
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("read %s: %v", url, err)
	}
	return res.StatusCode, string(out)
}

// screenshotDir is where the browser tests leave PNGs of the main pages for
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

// into runs a, keeping its value in dst.
func into[T any](dst *T, a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		v, err := a(ctx, t)
		*dst = v
		return chromedp.Void{}, err
	}
}
