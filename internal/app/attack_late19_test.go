package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// late19SOAP sends one SOAP operation as the crm user and returns the
// status and body.
func late19SOAP(t *testing.T, base, op string) (int, string) {
	t.Helper()
	body := `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>` +
		`<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-` +
		`wss-wssecurity-secext-1.0.xsd"><wsse:UsernameToken><wsse:Username>crm` +
		`</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/` +
		`oasis-200401-wss-username-token-profile-1.0#PasswordText">late19-soap-secret` +
		`</wsse:Password></wsse:UsernameToken></wsse:Security></s:Header><s:Body>` + op +
		`</s:Body></s:Envelope>`
	req, _ := http.NewRequest("POST", base+"/soap", strings.NewReader(body))
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw)
}

// Reasons of exactly 500 characters of several bytes each go through REST
// and SOAP and come back whole on the statement; 501 are refused naming
// the field, and nothing moves.
func TestLate19ReasonsOf500MultiByteCharacters(t *testing.T) {
	cfg := testConfig(t)
	cfg.SOAPUsers = "crm:late19-soap-secret:*"
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	m := "/v1/programs/telco/members/m-1"
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "m-1"})
	euro := strings.Repeat("€", 500)  // 3 bytes each
	emoji := strings.Repeat("😀", 500) // 4 bytes each
	c.must(201, "POST", m+"/credits", "cr-1", map[string]any{"points": 100, "reason": euro})
	r := c.must(400, "POST", m+"/credits", "cr-2",
		map[string]any{"points": 100, "reason": euro + "€"})
	if r.body["field"] != "reason" {
		t.Fatalf("501 characters: %s; want the field reason named", r.raw)
	}
	c.must(201, "POST", m+"/adjustments", "adj-1",
		map[string]any{"points": -10, "reason": emoji}, "X-Actor", "ana")

	op := func(txn, reason string) string {
		return `<p:Redeem xmlns:p="urn:puntos:soap:v1"><p:Program>telco</p:Program>` +
			`<p:CustomerRef>m-1</p:CustomerRef><p:TxnId>` + txn + `</p:TxnId>` +
			`<p:Points>5</p:Points><p:Reason>` + reason + `</p:Reason></p:Redeem>`
	}
	if st, body := late19SOAP(t, c.base, op("soap-1", emoji)); st != 200 {
		t.Fatalf("SOAP redeem with 500 characters: %d %s", st, body)
	}
	st, body := late19SOAP(t, c.base, op("soap-2", emoji+"😀"))
	if st == 200 || !strings.Contains(body, "Reason") {
		t.Fatalf("SOAP redeem with 501 characters: %d %s; want a fault naming Reason", st, body)
	}
	b := c.must(200, "GET", m+"/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 85 {
		t.Fatalf("available %d; want 100 - 10 - 5", got)
	}
	mv := c.must(200, "GET", m+"/movements", "", nil)
	var seen []string
	for _, x := range mv.body["postings"].([]any) {
		if s, _ := x.(map[string]any)["reason"].(string); s != "" {
			seen = append(seen, s)
		}
	}
	for _, want := range []string{euro, emoji} {
		if !slices.Contains(seen, want) {
			t.Errorf("statement lacks a 500-character reason whole: %d reasons", len(seen))
		}
	}
}

// A program with rules refuses, naming the field type, an event type no rule
// names, on every way in: one event, a batch, SOAP, and the simulation.
// Once a rule of any type ("*") exists, a partner purchase and any other
// type earn by the rules.
func TestLate19EventTypeRefusedEverywhere(t *testing.T) {
	cfg := testConfig(t)
	cfg.SOAPUsers = "crm:late19-soap-secret:*"
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c) // 1 point per unit
	p := "/v1/programs/telco"
	c.must(201, "POST", p+"/members", "enr-1", map[string]any{"customer_ref": "m-1"})
	c.must(201, "POST", p+"/rules", "rule-1", map[string]any{"code": "base",
		"event_type": "bill_paid", "formula": map[string]any{"kind": "per_unit", "rate": "2"}})

	r := c.must(400, "POST", p+"/members/m-1/events", "ev-1",
		map[string]any{"type": "bil_paid", "amount": "10"})
	if r.body["field"] != "type" {
		t.Errorf("one event: %s; want the field type named", r.raw)
	}
	r = c.send("POST", p+"/events/batches", "", map[string]any{"events": []any{
		map[string]any{"member": "m-1", "txn_id": "b-1", "type": "bill_paid", "amount": "10"},
		map[string]any{"member": "m-1", "txn_id": "b-2", "type": "bil_paid", "amount": "10"},
	}})
	var ans struct {
		Items []struct {
			Status int `json:"status"`
			Error  *struct {
				Field string `json:"field"`
			} `json:"error"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.raw), &ans); err != nil || len(ans.Items) != 2 {
		t.Fatalf("batch: %d %s", r.status, r.raw)
	}
	if ans.Items[0].Status != 201 || ans.Items[1].Status != 400 || ans.Items[1].Error == nil ||
		ans.Items[1].Error.Field != "type" {
		t.Fatalf("batch: %s; want 201, then 400 naming type", r.raw)
	}
	b := c.must(200, "GET", p+"/members/m-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 20 {
		t.Fatalf("available %d; want 20 by the rule alone", got)
	}
	st, body := late19SOAP(t, c.base, `<p:Accrue xmlns:p="urn:puntos:soap:v1">`+
		`<p:Program>telco</p:Program><p:CustomerRef>m-1</p:CustomerRef><p:TxnId>s-1</p:TxnId>`+
		`<p:EventType>bil_paid</p:EventType><p:Amount>10</p:Amount></p:Accrue>`)
	if st == 200 || !strings.Contains(body, "<Field>EventType</Field>") {
		t.Errorf("SOAP accrue of an unknown type: %d %s; want a fault naming EventType",
			st, body)
	}
	sim := func(typ string) reply {
		return c.send("GET", p+"/simulate?"+url.Values{"member": {"m-1"}, "type": {typ},
			"amount": {"10"}}.Encode(), "", nil)
	}
	if r := sim("bil_paid"); r.status != 400 || r.body["field"] != "type" {
		t.Errorf("simulate unknown type: %d %s; want 400 naming type", r.status, r.raw)
	}
	// A rule for every type: the partner purchase earns by the rules.
	c.must(201, "POST", p+"/rules", "rule-2", map[string]any{"code": "any",
		"event_type": "*", "formula": map[string]any{"kind": "per_unit", "rate": "3"}})
	if r := sim("partner_purchase"); r.status != 200 || jnum(t, r, "points") != 30 {
		t.Errorf("simulate partner purchase under a * rule: %d %s; want 30 points",
			r.status, r.raw)
	}
	c.must(201, "POST", p+"/members/m-1/events", "ev-2",
		map[string]any{"type": "whatever", "amount": "10"})
	b = c.must(200, "GET", p+"/members/m-1/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 20+30 {
		t.Fatalf("available %d; want 20 + 30 by the * rule", got)
	}
}

// The members list pages through references with punctuation, in the
// database's order, each member once, whatever the page size; odd limits
// are refused naming limit.
func TestLate19MembersListOddInput(t *testing.T) {
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	refs := []string{"a", "A", "a-b", "ab", "a.b", "a_b", "~", "0", "Z", "z", "a'b", "a(b)"}
	for i, ref := range refs {
		c.must(201, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", i),
			map[string]any{"customer_ref": ref})
	}
	for _, limit := range []string{"1", "2", "5", "500"} {
		var got []string
		q := url.Values{"limit": {limit}}
		for pages := 0; ; pages++ {
			if pages > len(refs) {
				t.Fatalf("limit %s: more pages than members", limit)
			}
			r := c.must(200, "GET", "/v1/programs/telco/members?"+q.Encode(), "", nil)
			for _, m := range r.body["members"].([]any) {
				got = append(got, m.(map[string]any)["customer_ref"].(string))
			}
			next, _ := r.body["next_cursor"].(string)
			if next == "" {
				break
			}
			q.Set("cursor", next)
		}
		sorted := slices.Clone(got)
		slices.Sort(sorted)
		want := slices.Clone(refs)
		slices.Sort(want)
		if !slices.Equal(sorted, want) {
			t.Fatalf("limit %s: listed %q; want each of %q once", limit, got, refs)
		}
	}
	// A cursor past every reference is an empty last page; one that no
	// page could have given (no reference is that long, or holds NUL or
	// bytes that are not UTF-8) is refused naming cursor.
	r := c.must(200, "GET", "/v1/programs/telco/members?cursor="+strings.Repeat("~", 128),
		"", nil)
	if len(r.body["members"].([]any)) != 0 || r.body["next_cursor"] != nil {
		t.Fatalf("cursor past the end: %s", r.raw)
	}
	for _, cur := range []string{strings.Repeat("~", 5000), "%00", "a%FFb"} {
		r := c.must(400, "GET", "/v1/programs/telco/members?cursor="+cur, "", nil)
		if r.body["field"] != "cursor" {
			t.Errorf("cursor %.20s: %s; want the field cursor named", cur, r.raw)
		}
	}
	for _, limit := range []string{"-1", "1e3", "99999999999999999999", "0x10", "5.0"} {
		r := c.must(400, "GET", "/v1/programs/telco/members?limit="+url.QueryEscape(limit),
			"", nil)
		if r.body["field"] != "limit" {
			t.Errorf("limit %s: %s; want limit named", limit, r.raw)
		}
	}
}

// late19Raw sends a PUT of a program over a bare connection, so that a
// header may carry bytes an http.Client refuses to send, and returns the
// status line.
func late19Raw(t *testing.T, addr, actor, txn string) string {
	t.Helper()
	body := `{"name":"Telco","currency":"USD","points_per_unit":"2"}`
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "PUT /v1/programs/telco HTTP/1.1\r\nHost: %s\r\n"+
		"Authorization: Bearer %s\r\nIdempotency-Key: %s\r\nX-Actor: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		addr, testKey, txn, actor, len(body), body)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(line)
}

// What X-Actor carries cannot make a parameter change a server fault nor
// forge the audit entry's calling system: control characters are refused
// or kept as sent, a long name is kept whole, and the entry always starts
// with the calling system.
func TestLate19AuditActorFromHostileHeaders(t *testing.T) {
	cfg := testConfig(t)
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	long := strings.Repeat("ana", 10000)
	for i, actor := range []string{"ana\x01bob", "ana\tbob", long, "root) (api:backoffice",
		"ñandú 😀"} {
		line := late19Raw(t, a.Addr(), actor, fmt.Sprintf("prog-x%d", i))
		if strings.Contains(line, " 5") {
			t.Errorf("X-Actor %.20q: %s; want no server fault", actor, line)
		}
	}
	conn, err := pgx.Connect(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT actor FROM bo_audit
		WHERE action = 'program.updated' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	actors, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, ac := range actors {
		if !strings.HasPrefix(ac, "api:billing") {
			t.Errorf("audit actor %.40q does not start with the calling system", ac)
		}
	}
	if !slices.Contains(actors, "api:billing ("+long+")") {
		t.Errorf("the long actor is not kept whole among %d entries", len(actors))
	}
}
