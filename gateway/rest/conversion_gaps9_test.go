package rest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

const gaps9Key = "gaps9-test-key-0001"

// gaps9Platform is Puntos started as main starts it, on a fresh database
// and an embedded NATS, with the program "telco" and the members A, B and
// C holding 10000 points each.
type gaps9Platform struct {
	t    *testing.T
	app  *app.App
	base string
}

func startGaps9(t *testing.T, roles app.Roles) *gaps9Platform {
	t.Helper()
	cfg := &app.Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: testenv.Database(t),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 2, BatchSize: 64,
		ResultWait: 20 * time.Second, APIKeys: "crm=" + gaps9Key, LogLevel: "warn"}
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
	p := &gaps9Platform{t: t, app: a, base: "http://" + a.Addr()}
	p.must(201, "PUT", "/v1/programs/telco", "prog-1",
		`{"name":"Telco","currency":"CLP","points_per_unit":"1"}`)
	for _, m := range []string{"A", "B", "C"} {
		p.must(201, "POST", "/v1/programs/telco/members", "enr-"+m,
			`{"customer_ref":"`+m+`"}`)
		p.must(201, "POST", "/v1/programs/telco/members/"+m+"/credits", "cre-"+m,
			`{"points":10000,"reason":"welcome"}`)
	}
	return p
}

// send makes one request; it returns the status, the raw body and the body
// decoded as a JSON object.
func (p *gaps9Platform) send(method, path, txn, body string) (int, string, map[string]any) {
	p.t.Helper()
	req, err := http.NewRequest(method, p.base+path, bytes.NewReader([]byte(body)))
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+gaps9Key)
	req.Header.Set("Content-Type", "application/json")
	if txn != "" {
		req.Header.Set("Idempotency-Key", txn)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return res.StatusCode, string(raw), out
}

func (p *gaps9Platform) must(status int, method, path, txn, body string) map[string]any {
	p.t.Helper()
	got, raw, out := p.send(method, path, txn, body)
	if got != status {
		p.t.Fatalf("%s %s: %d %s, want %d", method, path, got, raw, status)
	}
	return out
}

// problem is what a client compares of two problem documents.
func gaps9Problem(out map[string]any) [4]any {
	return [4]any{out["status"], out["kind"], out["field"], out["detail"]}
}

// TestExternalProgramListGaps9: GET .../external lists a program's external
// programs by code, each exactly as the single GET shows it (credentials
// masked, or left out when there are none), never the secret itself.
func TestExternalProgramListGaps9(t *testing.T) {
	p := startGaps9(t, app.Roles{Gateway: true, Core: true})

	// None yet: an empty list, not null.
	if _, raw, _ := p.send("GET", "/v1/programs/telco/external", "", ""); !strings.Contains(
		raw, `"external_programs":[]`) {
		t.Fatalf("list with none: %s, want an empty list", raw)
	}

	p.must(201, "PUT", "/v1/programs/telco/external/skymiles", "x1", `{"name":"SkyMiles",`+
		`"ratio":"0.50","endpoint":"https://127.0.0.1:9/api","credentials":"sky-secret"}`)
	p.must(201, "PUT", "/v1/programs/telco/external/filep", "x2", `{"name":"Files",`+
		`"ratio":"1","flavour":"file"}`)
	p.must(201, "PUT", "/v1/programs/telco/external/avianca", "x3", `{"name":"LifeMiles",`+
		`"ratio":"2.5","endpoint":"https://127.0.0.1:9/lm","credentials":"lm-secret"}`)

	code, raw, out := p.send("GET", "/v1/programs/telco/external", "", "")
	if code != 200 || strings.Contains(raw, "sky-secret") || strings.Contains(raw, "lm-secret") {
		t.Fatalf("list: %d %s, want 200 without any secret", code, raw)
	}
	items, _ := out["external_programs"].([]any)
	var codes []string
	for _, it := range items {
		e := it.(map[string]any)
		c, _ := e["code"].(string)
		codes = append(codes, c)
		one := p.must(200, "GET", "/v1/programs/telco/external/"+c, "", "")
		if !reflect.DeepEqual(e, one) {
			t.Errorf("%s listed as %v, read alone as %v; want the same", c, e, one)
		}
	}
	if want := []string{"avianca", "filep", "skymiles"}; !slices.Equal(codes, want) {
		t.Fatalf("listed codes %v, want %v", codes, want)
	}
	for _, it := range items {
		e := it.(map[string]any)
		cred, has := e["credentials"]
		switch e["code"] {
		case "filep":
			if has {
				t.Errorf("filep has no credentials, listed with %v", cred)
			}
		default:
			if cred != "****" {
				t.Errorf("%s listed with credentials %v, want ****", e["code"], cred)
			}
		}
	}

	// An unknown program is a 404, as for the single read.
	code, _, out = p.send("GET", "/v1/programs/nowhere/external", "", "")
	if code != 404 || out["kind"] != "not_found" {
		t.Fatalf("unknown program: %d %v, want 404 not_found", code, out)
	}
}

// TestMemberConversionListGaps9: GET .../members/{m}/conversions pages a
// member's conversions newest first, with the statement's cursor and limit,
// each as the single GET answers it; an unknown member gets the 404 the
// statement gives.
func TestMemberConversionListGaps9(t *testing.T) {
	// No adapters: the conversions stay pending, so two reads agree.
	p := startGaps9(t, app.Roles{Gateway: true, Core: true})
	p.must(201, "PUT", "/v1/programs/telco/external/skymiles", "x1", `{"name":"SkyMiles",`+
		`"ratio":"0.5","endpoint":"https://127.0.0.1:9/api"}`)
	var ids []string // A's, oldest first
	for i, pts := range []int{100, 200, 300, 400, 500} {
		out := p.must(201, "POST", "/v1/programs/telco/members/A/conversions",
			"conv-A-"+string(rune('1'+i)), `{"external":"skymiles","points":`+
				itoa(pts)+`}`)
		ids = append(ids, out["data"].(map[string]any)["id"].(string))
	}
	other := p.must(201, "POST", "/v1/programs/telco/members/B/conversions", "conv-B",
		`{"external":"skymiles","points":150}`)["data"].(map[string]any)["id"].(string)

	// Pages of two: newest first, a cursor while more remain.
	const list = "/v1/programs/telco/members/A/conversions"
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		path := list + "?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		out := p.must(200, "GET", path, "", "")
		if out["member"] != "A" {
			t.Fatalf("page %d names member %v, want A", page, out["member"])
		}
		items, _ := out["conversions"].([]any)
		if len(items) == 0 || len(items) > 2 {
			t.Fatalf("page %d: %d conversions, want 1 or 2", page, len(items))
		}
		for _, it := range items {
			c := it.(map[string]any)
			id, _ := c["id"].(string)
			seen = append(seen, id)
			one := p.must(200, "GET", list+"/"+id, "", "")
			if !reflect.DeepEqual(c, one) {
				t.Errorf("conversion %s listed as %v, read alone as %v", id, c, one)
			}
		}
		next, _ := out["next_cursor"].(string)
		if next == "" {
			break
		}
		if page > 5 {
			t.Fatalf("the pages do not end")
		}
		cursor = next
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(seen, want) {
		t.Fatalf("listed %v, want A's conversions newest first %v", seen, want)
	}
	if slices.Contains(seen, other) {
		t.Fatalf("B's conversion %s is listed for A", other)
	}

	// Without a limit: the statement's 50, so one page here.
	out := p.must(200, "GET", list, "", "")
	if items, _ := out["conversions"].([]any); len(items) != 5 || out["next_cursor"] != nil {
		t.Fatalf("default page: %v, want the 5 conversions and no cursor", out)
	}
	// A member with none: an empty list.
	if _, raw, _ := p.send("GET", "/v1/programs/telco/members/C/conversions", "", ""); !strings.
		Contains(raw, `"conversions":[]`) {
		t.Fatalf("member without conversions: %s, want an empty list", raw)
	}

	// The statement's bounds and refusals, word for word.
	for _, q := range []string{"limit=0", "limit=501", "limit=ten", "cursor=not-a-cursor"} {
		_, _, conv := p.send("GET", list+"?"+q, "", "")
		_, _, mov := p.send("GET", "/v1/programs/telco/members/A/movements?"+q, "", "")
		if conv["status"] != 400.0 || gaps9Problem(conv) != gaps9Problem(mov) {
			t.Errorf("?%s: conversions answered %v, movements %v; want the same 400", q,
				conv, mov)
		}
	}

	// An unknown member: the same 404 as the member's other routes.
	_, _, conv := p.send("GET", "/v1/programs/telco/members/NOBODY/conversions", "", "")
	_, _, mov := p.send("GET", "/v1/programs/telco/members/NOBODY/movements", "", "")
	if conv["status"] != 404.0 || conv["field"] == nil ||
		gaps9Problem(conv) != gaps9Problem(mov) {
		t.Fatalf("unknown member: conversions answered %v, movements %v; want the same 404",
			conv, mov)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// TestExternalRatioTextGaps9: the ratio reads the same in the answer to the
// PUT, the single GET and the list, in the one form the contract names:
// no trailing fraction zeros.
func TestExternalRatioTextGaps9(t *testing.T) {
	p := startGaps9(t, app.Roles{Gateway: true, Core: true})
	const path = "/v1/programs/telco/external/skymiles"
	for i, tc := range []struct{ given, want string }{
		{"0.5", "0.5"}, {"0.50", "0.5"}, {"0.500000", "0.5"}, {"2.000", "2"}, {"3", "3"},
		{"0.123456", "0.123456"}, {"1000000", "1000000"}, {"007.25", "7.25"},
	} {
		put := p.must(201, "PUT", path, "ratio-"+itoa(i), `{"name":"SkyMiles","ratio":"`+
			tc.given+`","endpoint":"https://127.0.0.1:9/api"}`)
		fromPut := put["data"].(map[string]any)["ratio"]
		fromGet := p.must(200, "GET", path, "", "")["ratio"]
		listed := p.must(200, "GET", "/v1/programs/telco/external", "", "")
		fromList := listed["external_programs"].([]any)[0].(map[string]any)["ratio"]
		if fromPut != tc.want || fromGet != tc.want || fromList != tc.want {
			t.Errorf("ratio %q: PUT answered %v, GET %v, list %v; want %q everywhere",
				tc.given, fromPut, fromGet, fromList, tc.want)
		}
	}
}

// TestExternalEndpointRequiredGaps9: an http external program without an
// endpoint is told the field is required for that flavour; a malformed one
// still gets the URL-format error; a file one needs none.
func TestExternalEndpointRequiredGaps9(t *testing.T) {
	p := startGaps9(t, app.Roles{Gateway: true, Core: true})
	const path = "/v1/programs/telco/external/skymiles"
	for i, body := range []string{
		`{"name":"SkyMiles","ratio":"1"}`, // flavour http by default
		`{"name":"SkyMiles","ratio":"1","flavour":"http"}`,
		`{"name":"SkyMiles","ratio":"1","flavour":"http","endpoint":""}`,
		`{"name":"SkyMiles","ratio":"1","flavour":"http","endpoint":"  "}`,
	} {
		code, raw, out := p.send("PUT", path, "missing-"+itoa(i), body)
		detail, _ := out["detail"].(string)
		if code != 400 || out["field"] != "endpoint" || !strings.Contains(detail, "required") ||
			!strings.Contains(detail, "http") || strings.Contains(detail, "must be an http") {
			t.Errorf("%s: %d %s, want 400 saying endpoint is required for http", body, code,
				raw)
		}
	}
	for i, endpoint := range []string{"not a url", "ftp://127.0.0.1/x", "https://",
		"https://u:p@127.0.0.1/api"} {
		code, raw, out := p.send("PUT", path, "bad-"+itoa(i), `{"name":"SkyMiles",`+
			`"ratio":"1","endpoint":"`+endpoint+`"}`)
		detail, _ := out["detail"].(string)
		if code != 400 || out["field"] != "endpoint" ||
			!strings.Contains(detail, "must be an http or https URL") {
			t.Errorf("endpoint %q: %d %s, want 400 with the URL-format error", endpoint, code,
				raw)
		}
	}
	if code, _, _ := p.send("GET", path, "", ""); code != 404 {
		t.Fatalf("a refused PUT stored something: GET answered %d", code)
	}
	p.must(201, "PUT", "/v1/programs/telco/external/filep", "file-1",
		`{"name":"Files","ratio":"1","flavour":"file"}`)
}

// gaps9Partner is a partner of the JSON protocol that takes only the token
// it was given: it confirms a credit with it, answers 401 without it, and
// records the Authorization header of every call.
type gaps9Partner struct {
	mu    sync.Mutex
	token string
	auth  []string
	srv   *httptest.Server
}

func newGaps9Partner(t *testing.T, token string) *gaps9Partner {
	pt := &gaps9Partner{token: token}
	pt.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pt.mu.Lock()
		pt.auth = append(pt.auth, r.Header.Get("Authorization"))
		pt.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+pt.token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var in struct {
			TxnID string `json:"txn_id"`
		}
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&in) != nil {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"status":"unknown"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"txn_id": in.TxnID,
			"status": "confirmed", "reference": "SKY-" + in.TxnID[len(in.TxnID)-4:]})
	})) // listens on 127.0.0.1
	t.Cleanup(pt.srv.Close)
	return pt
}

func (pt *gaps9Partner) calls() []string {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return slices.Clone(pt.auth)
}

// TestExternalCredentialsOmittedGaps9: a PUT that leaves credentials out
// keeps the stored secret, which the conversion adapter still sends to the
// partner; "" removes it; a new external program left without them has
// none, and "****" for a new one is still refused.
func TestExternalCredentialsOmittedGaps9(t *testing.T) {
	p := startGaps9(t, app.Roles{Gateway: true, Core: true, Adapters: true})
	partner := newGaps9Partner(t, "tok-gaps9")
	ctx := context.Background()
	const path = "/v1/programs/telco/external/skymiles"
	p.must(201, "PUT", path, "x1", `{"name":"SkyMiles","ratio":"0.5","endpoint":"`+
		partner.srv.URL+`","credentials":"tok-gaps9"}`)

	// A change that leaves the credentials out: the answer and reads still
	// show some stored, and the adapter still holds the secret.
	put := p.must(201, "PUT", path, "x2", `{"name":"SkyMiles","ratio":"0.75","endpoint":"`+
		partner.srv.URL+`"}`)
	if data := put["data"].(map[string]any); data["credentials"] != "****" ||
		data["ratio"] != "0.75" {
		t.Fatalf("PUT without credentials answered %v, want ratio 0.75 and credentials ****",
			data)
	}
	if got := p.must(200, "GET", path, "", ""); got["credentials"] != "****" {
		t.Fatalf("GET after the PUT without credentials: %v, want ****", got)
	}
	cfg, err := p.app.Ledger.PartnerConfig(ctx, "telco", "skymiles")
	if err != nil || cfg.Credentials != "tok-gaps9" {
		t.Fatalf("the adapter's view: %+v %v, want the secret kept", cfg, err)
	}
	// null is the same as leaving the field out.
	p.must(201, "PUT", path, "x3", `{"name":"SkyMiles","ratio":"0.75","endpoint":"`+
		partner.srv.URL+`","credentials":null}`)

	// A conversion reaches the partner with the kept secret and is confirmed.
	conv := p.must(201, "POST", "/v1/programs/telco/members/A/conversions", "conv-1",
		`{"external":"skymiles","points":1000}`)["data"].(map[string]any)
	id := conv["id"].(string)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := p.must(200, "GET", "/v1/programs/telco/members/A/conversions/"+id, "", "")
		if c["status"] == "confirmed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("conversion still %v after 30s (last_error %v); the partner saw %q",
				c["status"], c["last_error"], partner.calls())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if calls := partner.calls(); len(calls) == 0 || calls[0] != "Bearer tok-gaps9" {
		t.Fatalf("the partner saw %q, want the kept secret", calls)
	}

	// "" removes the credentials.
	put = p.must(201, "PUT", path, "x4", `{"name":"SkyMiles","ratio":"0.75","endpoint":"`+
		partner.srv.URL+`","credentials":""}`)
	if data := put["data"].(map[string]any); data["credentials"] != nil {
		t.Fatalf("PUT with empty credentials answered %v, want none", data)
	}
	if got := p.must(200, "GET", path, "", ""); got["credentials"] != nil {
		t.Fatalf("GET after clearing: %v, want no credentials", got)
	}
	var column string
	if err := p.app.Pool.QueryRow(ctx, `SELECT e.credentials FROM external_programs e
		JOIN programs p ON p.id = e.program_id WHERE p.code = 'telco' AND e.code = 'skymiles'`).
		Scan(&column); err != nil || column != "" {
		t.Fatalf("credentials column after clearing: %q %v, want empty", column, err)
	}

	// A new external program left without credentials has none ...
	put = p.must(201, "PUT", "/v1/programs/telco/external/latam", "x5",
		`{"name":"LATAM","ratio":"1","endpoint":"https://127.0.0.1:9/api"}`)
	if data := put["data"].(map[string]any); data["credentials"] != nil {
		t.Fatalf("new external program without credentials answered %v", data)
	}
	if cfg, err := p.app.Ledger.PartnerConfig(ctx, "telco", "latam"); err != nil ||
		cfg.Credentials != "" {
		t.Fatalf("new external program without credentials: %+v %v", cfg, err)
	}
	// ... and "****" for a new one is refused, as before.
	code, raw, out := p.send("PUT", "/v1/programs/telco/external/iberia", "x6",
		`{"name":"Iberia","ratio":"1","endpoint":"https://127.0.0.1:9/api","credentials":"****"}`)
	if code != 400 || out["field"] != "credentials" {
		t.Fatalf("**** for a new external program: %d %s, want 400 on credentials", code, raw)
	}
}
