package soap

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"

	"github.com/puntos-loyalty/puntos/contracts"
)

// endpoint serves a Server whose requests never get past the checks under
// test: the envelope limits, authentication and the operation's shape all
// come before anything reaches the bus or the ledger, so it has neither.
func endpoint(t testing.TB, users string) *httptest.Server {
	s := New(nil, nil, slog.New(slog.DiscardHandler), Options{Users: users})
	r := mux.NewRouter()
	s.Register(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

func post(t testing.TB, srv *httptest.Server, ctype, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", srv.URL+"/soap", strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	req.SetBasicAuth("billing", "billing-secret-01")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

const env11 = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" ` +
	`xmlns:p="urn:puntos:soap:v1"><s:Body>`

func wrap(op string) string { return env11 + op + `</s:Body></s:Envelope>` }

// TestLimitsAndShape sends envelopes that are oversized, too deep, too
// wide, malformed, or that do not match the operation's schema: each gets a
// Client.Invalid fault naming what is wrong, never a crash.
func TestLimitsAndShape(t *testing.T) {
	srv := endpoint(t, "billing:billing-secret-01:*")
	redeem := func(inner string) string {
		return wrap(`<p:Redeem><p:Program>telco</p:Program><p:CustomerRef>C1</p:CustomerRef>` +
			inner + `</p:Redeem>`)
	}
	cases := []struct {
		name, body, field string
	}{
		{"oversized", wrap(`<p:GetBalance><p:Program>` + strings.Repeat("x", 300<<10) +
			`</p:Program></p:GetBalance>`), "Envelope"},
		{"too deep", wrap(strings.Repeat("<p:Lot>", 40) + strings.Repeat("</p:Lot>", 40)),
			"Lot"},
		{"too many attributes", wrap(`<p:GetBalance` + attrs(40) + `/>`), "GetBalance"},
		{"doctype", `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">` +
			`<!ENTITY lol2 "&lol;&lol;&lol;">]>` + wrap(`<p:GetBalance/>`), "Envelope"},
		{"malformed", env11 + `<p:GetBalance><p:Program>telco</p:Program>`, "Envelope"},
		{"empty", ``, "Envelope"},
		{"not an envelope", `<Envelope><Body/></Envelope>`, "Envelope"},
		{"two operations", wrap(`<p:GetBalance/><p:GetMember/>`), "Body"},
		{"no body", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>`,
			"Body"},
		{"unknown operation", wrap(`<p:DropTables/>`), "Body"},
		{"foreign namespace", wrap(`<GetBalance xmlns="urn:other"/>`), "Body"},
		{"unknown element", redeem(`<p:TxnId>t1</p:TxnId><p:Points>5</p:Points>` +
			`<p:Pointz>4</p:Pointz>`), "Pointz"},
		{"points not a number", redeem(`<p:TxnId>t1</p:TxnId><p:Points>5.5</p:Points>`),
			"Points"},
		// A byte order mark before the envelope is read past: the fault is
		// the operation's, not "text outside the Envelope".
		{"byte order mark", "\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?>" +
			redeem(`<p:TxnId>t1</p:TxnId><p:Points>5.5</p:Points>`), "Points"},
		{"attribute not read", redeem(`<p:TxnId>t1</p:TxnId>` +
			`<p:Points currency="EUR">5</p:Points>`), "Points"},
		{"points twice", redeem(`<p:TxnId>t1</p:TxnId><p:Points>5</p:Points>` +
			`<p:Points>6</p:Points>`), "Points"},
		{"missing txn", redeem(`<p:Points>5</p:Points>`), "TxnId"},
		{"empty txn", redeem(`<p:TxnId/><p:Points>5</p:Points>`), "TxnId"},
		{"zero points", redeem(`<p:TxnId>t1</p:TxnId><p:Points>0</p:Points>`), "Points"},
		{"time without offset", wrap(`<p:Accrue><p:Program>telco</p:Program>` +
			`<p:CustomerRef>C1</p:CustomerRef><p:TxnId>t</p:TxnId><p:EventType>x</p:EventType>` +
			`<p:Amount>1</p:Amount><p:OccurredAt>2026-11-01T10:00:00</p:OccurredAt>` +
			`</p:Accrue>`), "OccurredAt"},
		{"header not understood", `<s:Envelope xmlns:s="` + nsSOAP11 + `"><s:Header>` +
			`<x:Tx xmlns:x="urn:x" s:mustUnderstand="1"/></s:Header><s:Body>` +
			`<p:GetBalance xmlns:p="urn:puntos:soap:v1"/></s:Body></s:Envelope>`, "Tx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := post(t, srv, "text/xml; charset=utf-8", c.body)
			if status != 500 || !strings.Contains(body, "<faultcode>soap:Client.Invalid<") ||
				!strings.Contains(body, "<Field>"+c.field+"</Field>") {
				t.Fatalf("status %d, want 500 and a Client.Invalid fault naming %s:\n%s",
					status, c.field, body)
			}
		})
	}

	// A SOAP 1.2 caller gets a SOAP 1.2 fault, even when its envelope is
	// unreadable: the content type says which version it speaks.
	status, body := post(t, srv, "application/soap+xml; charset=utf-8", "<not xml")
	if status != 400 || !strings.Contains(body, "<soap:Value>pt:Invalid</soap:Value>") {
		t.Fatalf("SOAP 1.2 malformed request: status %d:\n%s", status, body)
	}
}

func attrs(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(" a")
		b.WriteString(strings.Repeat("x", i+1))
		b.WriteString(`="1"`)
	}
	return b.String()
}

// FuzzEnvelope: whatever arrives, the answer is a fault or a success, never
// a crash. No credential is configured, so nothing gets past authentication.
func FuzzEnvelope(f *testing.F) {
	f.Add(wrap(`<p:GetBalance><p:Program>t</p:Program><p:CustomerRef>c</p:CustomerRef>` +
		`</p:GetBalance>`))
	f.Add(`<?xml version="1.0" encoding="ISO-8859-1"?><a/>`)
	f.Add(env11 + `<p:Redeem xmlns:p="urn:y"></s:Body>`)
	f.Add(`<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Header>` +
		`<wsse:Security xmlns:wsse="` + nsWSSE + `"><wsse:UsernameToken/></wsse:Security>` +
		`</s:Header><s:Body><p:GetMember xmlns:p="urn:puntos:soap:v1"/></s:Body></s:Envelope>`)
	srv := endpoint(f, "")
	f.Fuzz(func(t *testing.T, body string) {
		status, answer := post(t, srv, "text/xml", body)
		if (status != 500 && status != 400) || !strings.Contains(answer, "<Code>Client.") {
			t.Fatalf("status %d: %s", status, answer)
		}
	})
}

func TestParseUsers(t *testing.T) {
	good := "billing:billing-secret-01:*, cc:sha256:" + strings.Repeat("ab", 32) +
		":GetBalance|Accrue"
	users, err := ParseUsers(good)
	if err != nil || len(users) != 2 {
		t.Fatalf("ParseUsers(%q) = %v, %v", good, users, err)
	}
	if !users[0].Allows("Redeem") || users[1].Allows("Redeem") || !users[1].Allows("Accrue") {
		t.Fatalf("grants: %+v", users)
	}
	if users[1].secret != nil {
		t.Fatalf("a credential given as a hash kept a secret")
	}
	if got := MaskUsers(good); strings.Contains(got, "billing-secret") ||
		got != "billing:***:*,cc:***:Accrue|GetBalance" {
		t.Fatalf("MaskUsers = %q", got)
	}
	for _, bad := range []string{
		"billing", "billing:short:*", "billing:billing-secret-01:Nope",
		"billing:sha256:12:*", "bad name:billing-secret-01:*",
		"a:billing-secret-01:*,a:billing-secret-02:*",
		// A name Puntos gives its own commands is the source of the calls.
		"backoffice:billing-secret-01:*", "conversion:billing-secret-01:*",
	} {
		_, err := ParseUsers(bad)
		if err == nil {
			t.Errorf("ParseUsers(%q) accepted it", bad)
		} else if strings.Contains(err.Error(), "billing-secret") {
			t.Errorf("ParseUsers(%q) error shows the password: %v", bad, err)
		}
	}
}

// BenchmarkParseEnvelope measures reading and checking a typical accrual:
// the limit-checking pass, the shape check and the decoding pass.
func BenchmarkParseEnvelope(b *testing.B) {
	body := []byte(wrap(`<p:Accrue><p:Program>telco</p:Program><p:CustomerRef>7590-VHVEG` +
		`</p:CustomerRef><p:TxnId>bill-2026-11-000123</p:TxnId><p:EventType>bill_paid` +
		`</p:EventType><p:Amount>29.85</p:Amount><p:OccurredAt>2026-11-05T12:00:00-03:00` +
		`</p:OccurredAt></p:Accrue>`))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		env, err := parseEnvelope(body, DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		req := operations[env.op.name.Local].request()
		if err := checkElement(env.op, req); err != nil {
			b.Fatal(err)
		}
		if err := decodeOperation(body, req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestServedDocuments: the WSDL is served with its addresses pointing at the
// server that serves it, and the XSD it imports is served byte for byte.
func TestServedDocuments(t *testing.T) {
	srv := endpoint(t, "")
	get := func(query string) (int, string) {
		res, err := http.Get(srv.URL + "/soap?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, q := range []string{"wsdl", "WSDL"} {
		status, wsdl := get(q)
		if status != 200 || strings.Count(wsdl, `location="http://`+host+`/soap"`) != 2 ||
			!strings.Contains(wsdl, `schemaLocation="http://`+host+`/soap?xsd=puntos.xsd"`) ||
			strings.Contains(wsdl, "127.0.0.1:8080") {
			t.Fatalf("?%s: status %d, addresses not rewritten:\n%s", q, status, wsdl)
		}
	}
	status, xsd := get("xsd=puntos.xsd")
	if status != 200 || xsd != string(contracts.XSD) {
		t.Fatalf("?xsd=puntos.xsd: status %d", status)
	}
	if status, _ := get("xsd=../../etc/passwd"); status != 404 {
		t.Fatalf("an unknown document: status %d, want 404", status)
	}
}
