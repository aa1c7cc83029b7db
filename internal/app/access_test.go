package app

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
)

// apiRoute is one method on one /v1 path template of the running gateway.
type apiRoute struct{ method, tpl string }

// apiRoutes walks the router of a running gateway and returns every /v1
// route, so that a route added later is covered without editing the test.
func apiRoutes(t *testing.T, a *App) []apiRoute {
	t.Helper()
	router, ok := a.http.Handler.(*mux.Router)
	if !ok {
		t.Fatalf("the HTTP handler is a %T, not a router", a.http.Handler)
	}
	var out []apiRoute
	err := router.Walk(func(rt *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := rt.GetPathTemplate()
		if err != nil || !strings.HasPrefix(tpl, "/v1/") {
			return nil
		}
		methods, err := rt.GetMethods()
		if err != nil {
			return nil // a subrouter's prefix, not a route
		}
		for _, m := range methods {
			out = append(out, apiRoute{m, tpl})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk the routes: %v", err)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].tpl+out[i].method < out[j].tpl+out[j].method
	})
	return out
}

var regexpVar = regexp.MustCompile(`\{[^}]+\}`)

// samplePath fills a path template's variables with plausible values.
func samplePath(tpl string) string {
	return regexpVar.ReplaceAllStringFunc(tpl, func(v string) string {
		switch v {
		case "{program}":
			return "telco"
		case "{member}":
			return "C1"
		}
		return "x-1"
	})
}

// partnerCredential makes a partner with every scope in program and returns
// its API key.
func partnerCredential(c *client, program, code string) string {
	c.t.Helper()
	c.must(201, "POST", "/v1/programs/"+program+"/partners", "partner-"+code, map[string]any{
		"code": code, "name": strings.ToUpper(code), "currency": "CLP", "point_value": "1",
		"can_burn": true, "can_earn": true})
	r := c.must(201, "POST", "/v1/programs/"+program+"/partners/"+code+"/keys", "key-"+code,
		map[string]any{"scopes": []string{"balance", "authorize", "capture", "void",
			"refund", "earn", "settlement"}})
	key, _ := r.body["key"].(string)
	if key == "" {
		c.t.Fatalf("no key in %s", r.raw)
	}
	return key
}

// TestEveryRouteRefusesStrangers walks every /v1 route the gateway serves
// and calls it without credentials, with a wrong key, and with the key of
// the other kind of caller (a partner's on operator routes, an operator's
// on partner routes): each answer is 401 with a problem document, and
// nothing reaches the ledger.
func TestEveryRouteRefusesStrangers(t *testing.T) {
	t.Parallel()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	op := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(op)
	op.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})
	op.must(201, "POST", "/v1/programs/telco/members/C1/credits", "cr-1",
		map[string]any{"points": 100, "reason": "seed"})
	partnerKey := partnerCredential(op, "telco", "cafe")

	routes := apiRoutes(t, a)
	if len(routes) < 40 {
		t.Fatalf("only %d /v1 routes found: %v", len(routes), routes)
	}
	partnerRoutes := 0
	for _, rt := range routes {
		partner := strings.HasPrefix(rt.tpl, "/v1/partner/")
		other := partnerKey
		if partner {
			partnerRoutes++
			other = testKey
		}
		path := samplePath(rt.tpl)
		for _, cred := range []struct{ name, header, value string }{
			{"no credentials", "", ""},
			{"wrong key", "Authorization", "Bearer wrong-key-0123456789"},
			{"wrong partner key", "X-Api-Key", "pk_" + strings.Repeat("A", 43)},
			{"empty bearer", "Authorization", "Bearer "},
			{"basic", "Authorization", "Basic YmlsbGluZzp0ZXN0LWtleS0wMTIzNDU2Nzg5"},
			{"the other caller's key", "Authorization", "Bearer " + other},
		} {
			anon := &client{t: t, base: op.base}
			var hdr []string
			if cred.header != "" {
				hdr = []string{cred.header, cred.value}
			}
			r := anon.send(rt.method, path, "strange-1", `{"points":1,"reason":"r"}`, hdr...)
			if r.status != 401 || r.header.Get("Content-Type") != "application/problem+json" ||
				r.body["kind"] != "unauthorized" || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %s: status %d %s, want 401 problem", rt.method, path,
					cred.name, r.status, r.raw)
			}
		}
	}
	t.Logf("%d routes checked, %d of them partner routes", len(routes), partnerRoutes)
	if partnerRoutes < 8 {
		t.Errorf("only %d partner routes found", partnerRoutes)
	}

	// Nothing a stranger sent was applied.
	b := op.must(200, "GET", "/v1/programs/telco/members/C1/balance", "", nil)
	if jnum(t, b, "balance.available") != 100 || jnum(t, b, "balance.held") != 0 {
		t.Errorf("balance after strangers: %s", b.raw)
	}
	var commands int
	err := a.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM commands WHERE txn_id = 'strange-1'`).Scan(&commands)
	if err != nil || commands != 0 {
		t.Errorf("%d commands from strangers (%v), want 0", commands, err)
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
}

// TestPartnerSeesOnlyItsOwn: a partner cannot read or act on another
// partner's transaction, nor reach members of another program, nor read
// another partner's command results or settlement.
func TestPartnerSeesOnlyItsOwn(t *testing.T) {
	t.Parallel()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	op := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(op)
	op.must(201, "PUT", "/v1/programs/other", "prog-2", map[string]any{
		"name": "Other", "currency": "USD", "points_per_unit": "1",
		"expiry_unit": "months", "expiry_length": 24, "expiry_round": "month"})
	op.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})
	op.must(201, "POST", "/v1/programs/other/members", "enr-2", map[string]any{"customer_ref": "X9"})
	op.must(201, "POST", "/v1/programs/telco/members/C1/credits", "cr-1",
		map[string]any{"points": 1000, "reason": "seed"})
	op.must(201, "POST", "/v1/programs/other/members/X9/credits", "cr-2",
		map[string]any{"points": 500, "reason": "seed"})
	cafe := &client{t: t, base: op.base, key: partnerCredential(op, "telco", "cafe")}
	shop := &client{t: t, base: op.base, key: partnerCredential(op, "telco", "shop")}
	far := &client{t: t, base: op.base, key: partnerCredential(op, "other", "far")}

	cafe.must(201, "POST", "/v1/partner/transactions", "pay-1",
		map[string]any{"member": "C1", "points": 300})
	pay := "/v1/partner/transactions/pay-1"

	// The other partners: the payment does not exist for them.
	for name, p := range map[string]*client{"shop": shop, "far": far} {
		p.must(404, "GET", pay, "", nil)
		p.must(404, "POST", pay+"/capture", "steal-"+name, map[string]any{"points": 10})
		p.must(404, "POST", pay+"/void", "void-"+name, nil)
		p.must(404, "POST", pay+"/refunds", "ref-"+name, map[string]any{"points": 10})
		r := p.must(404, "GET", "/v1/partner/commands/pay-1", "", nil)
		if strings.Contains(r.raw, "C1") {
			t.Errorf("%s reads cafe's command result: %s", name, r.raw)
		}
	}
	// Members of another program are unknown to a partner.
	far.must(404, "GET", "/v1/partner/members/C1/balance", "", nil)
	cafe.must(404, "GET", "/v1/partner/members/X9/balance", "", nil)
	far.must(404, "POST", "/v1/partner/transactions", "far-1",
		map[string]any{"member": "C1", "points": 1})

	// Settlements are each partner's own.
	cafe.must(201, "POST", pay+"/capture", "cap-1", map[string]any{"points": 200})
	q := url.Values{"from": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)},
		"to": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}.Encode()
	if r := cafe.must(200, "GET", "/v1/partner/settlement?"+q, "", nil); jnum(t, r, "net") != 200 {
		t.Errorf("cafe's settlement: %s", r.raw)
	}
	for name, p := range map[string]*client{"shop": shop, "far": far} {
		r := p.must(200, "GET", "/v1/partner/settlement?"+q, "", nil)
		if jnum(t, r, "net") != 0 || strings.Contains(r.raw, "pay-1") {
			t.Errorf("%s's settlement shows cafe's capture: %s", name, r.raw)
		}
	}

	// The ledger: 200 captured, the other 100 of the hold still held.
	b := op.must(200, "GET", "/v1/programs/telco/members/C1/balance", "", nil)
	if jnum(t, b, "balance.available") != 800 {
		t.Errorf("C1: %s", b.raw)
	}
	b = op.must(200, "GET", "/v1/programs/other/members/X9/balance", "", nil)
	if jnum(t, b, "balance.available") != 500 || jnum(t, b, "balance.held") != 0 {
		t.Errorf("X9: %s", b.raw)
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretsNeverLogged runs the platform with a JSON log at debug level,
// a database password in its URL, operator, partner and SOAP credentials,
// and sends requests with right and wrong secrets of each kind: no secret
// appears in the log, which does hold the refusals.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	const (
		opSecret   = "op-secret-7c1f9e2a44"
		soapSecret = "soap-secret-5d8b3a17"
		dbSecret   = "db-secret-91e0c6f2"
	)
	cfg := testConfig(t)
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), dbSecret) // trust auth ignores it
	cfg.DatabaseURL = u.String()
	cfg.APIKeys = "billing=" + opSecret
	cfg.SOAPUsers = "crm:" + soapSecret + ":*"
	cfg.LogLevel = "debug"
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Info("Starting Puntos", cfg.Masked()...) // as main logs it

	a, err := Start(context.Background(), cfg, log, Roles{Gateway: true, Core: true})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	op := &client{t: t, base: "http://" + a.Addr(), key: opSecret}
	setupProgram(op)
	op.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})
	partnerSecret := partnerCredential(op, "telco", "cafe")
	secrets := map[string]string{"operator key": opSecret, "SOAP password": soapSecret,
		"database password": dbSecret, "partner key": partnerSecret}

	// Wrong secrets that are near the right ones, and the right ones.
	(&client{t: t, base: op.base, key: opSecret + "x"}).must(401, "GET",
		"/v1/programs/telco", "", nil)
	(&client{t: t, base: op.base, key: partnerSecret + "x"}).must(401, "GET",
		"/v1/partner/members/C1/balance", "", nil)
	(&client{t: t, base: op.base, key: partnerSecret}).must(200, "GET",
		"/v1/partner/members/C1/balance", "", nil)
	(&client{t: t, base: op.base, key: partnerSecret}).must(401, "GET",
		"/v1/programs/telco", "", nil)
	op.must(400, "POST", "/v1/programs/telco/members/C1/credits", "bad-1",
		map[string]any{"points": -1, "reason": opSecret})
	soapCall := func(password string) int {
		body := `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>` +
			`<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-` +
			`wss-wssecurity-secext-1.0.xsd"><wsse:UsernameToken><wsse:Username>crm` +
			`</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/` +
			`oasis-200401-wss-username-token-profile-1.0#PasswordText">` + password +
			`</wsse:Password></wsse:UsernameToken></wsse:Security></s:Header><s:Body>` +
			`<p:GetBalance xmlns:p="urn:puntos:soap:v1"><p:Program>telco</p:Program>` +
			`<p:CustomerRef>C1</p:CustomerRef></p:GetBalance></s:Body></s:Envelope>`
		req, _ := http.NewRequest("POST", op.base+"/soap", strings.NewReader(body))
		req.Header.Set("Content-Type", "text/xml; charset=utf-8")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("SOAP call: %v", err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := soapCall(soapSecret); got != 200 {
		t.Errorf("SOAP with the right password: %d", got)
	}
	if got := soapCall(soapSecret + "x"); got != 500 && got != 401 {
		t.Errorf("SOAP with a wrong password: %d", got)
	}
	req, _ := http.NewRequest("POST", op.base+"/soap", strings.NewReader("<x/>"))
	req.SetBasicAuth("crm", soapSecret+"y")
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
	}

	// A database that does not exist: the error and the log keep the
	// password out.
	bad := *cfg
	u.Path = "/puntos_no_such_database"
	bad.DatabaseURL = u.String()
	if _, err := Start(context.Background(), &bad, log, Roles{Core: true}); err == nil {
		t.Errorf("start on a missing database succeeded")
	} else if strings.Contains(err.Error(), dbSecret) {
		t.Errorf("start error shows the database password: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = a.Shutdown(ctx)
	logged := buf.String()
	for name, s := range secrets {
		if strings.Contains(logged, s) {
			i := strings.Index(logged, s)
			t.Errorf("the %s appears in the log: ...%s...", name,
				logged[max(0, i-200):min(len(logged), i+len(s)+50)])
		}
	}
	// The log did record the refusals, so the check above looked at them.
	if !strings.Contains(logged, `"msg":"Request refused"`) ||
		!strings.Contains(logged, `"msg":"Starting Puntos"`) {
		t.Errorf("the log lacks the refusals or the start line:\n%s", logged)
	}
}
