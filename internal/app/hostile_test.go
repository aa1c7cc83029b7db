package app

import (
	"context"
	"encoding/csv"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Strings an attacker tries in text fields: SQL injection, spreadsheet
// formulas, markup, control characters.
var (
	sqlInjection     = `'; DROP TABLE members; --`
	formulaInjection = `=cmd|' /C calc'!A0`
	hostileTexts     = []string{sqlInjection, formulaInjection, `+SUM(1,2)`, `@HYPERLINK("x")`,
		`-2+3`, `<script>alert(1)</script>`, `Robert"); DELETE FROM postings;--`,
		"tab\there", "ñandú ☃ 𝄞"}
)

// TestHostileInput sends hostile bodies to every write of the REST API:
// oversized and deeply nested documents, numbers beyond int64, invalid
// UTF-8, SQL and formula injection. Each is refused with 400 naming the
// field at fault, or, where free text is allowed, stored verbatim; the
// ledger ends unchanged by the refusals and balanced.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1", map[string]any{"customer_ref": "C1"})
	c.must(201, "POST", "/v1/programs/telco/members", "enr-2", map[string]any{"customer_ref": "C2"})
	c.must(201, "POST", "/v1/programs/telco/members/C1/credits", "seed-1",
		map[string]any{"points": 1000, "reason": "seed"})

	m := "/v1/programs/telco/members/C1"
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	// Beyond the JSON decoder's depth limit, yet within the size limit.
	deepObj := strings.Repeat(`{"a":`, 12000) + "1" + strings.Repeat("}", 12000)
	big := `{"points":5,"reason":"` + strings.Repeat("x", 70<<10) + `"}`
	type tc struct {
		path, body, field string
	}
	var cases []tc

	// Numbers a points field must refuse, on every route that takes points.
	for route, rest := range map[string]string{"/credits": `"reason":"r"`,
		"/redemptions": `"reason":"r"`, "/holds": `"reason":"r"`,
		"/adjustments": `"reason":"r"`, "/transfers": `"to":"C2"`} {
		for _, n := range []string{"9223372036854775808", "-9223372036854775809", "1e30",
			"-0", "1.5", `"100"`, "null", "1000000000001", "-1"} {
			body := fmt.Sprintf(`{"points":%s,%s}`, n, rest)
			if route == "/adjustments" && n == "-1" {
				continue // a negative adjustment is allowed
			}
			cases = append(cases, tc{m + route, body, "points"})
		}
	}
	// Amounts of an event, which are decimal strings.
	for _, n := range []string{`"9223372036854775808"`, `"1e30"`, `1.5`, `"1.5e3"`, `"0x10"`,
		`"NaN"`, `"Infinity"`, `"１２"`, `"12.1234567"`, `"-1"`, "null"} {
		cases = append(cases, tc{m + "/events", `{"type":"bill_paid","amount":` + n + `}`,
			"amount"})
	}
	// Go's zero time, which would read as "not sent".
	cases = append(cases,
		tc{m + "/events", `{"type":"bill_paid","amount":"1","occurred_at":"0001-01-01T00:00:00Z"}`,
			"occurred_at"},
		tc{m + "/credits", `{"points":1,"reason":"r","occurred_at":"0001-01-01T00:00:00Z"}`,
			"occurred_at"})
	// Bodies that are too big, too deep, or not one JSON object.
	for _, route := range []string{"/credits", "/events", "/adjustments"} {
		cases = append(cases,
			tc{m + route, big, "body"},
			tc{m + route, deep, "body"},
			tc{m + route, deepObj, "body"},
			tc{m + route, `{"reason":` + deep + `}`, "body"},
			tc{m + route, "\xff\xfe{}", "body"},
			tc{m + route, `{} {}`, "body"})
	}
	// Hostile strings where a reference is expected: refused, never stored.
	// They are JSON string literals as sent, raw invalid UTF-8 included.
	refRoutes := map[string]string{
		"/v1/programs/telco/members": `{"customer_ref":%s}`,
		m + "/transfers":             `{"to":%s,"points":1}`,
		m + "/merge":                 `{"into":%s}`,
	}
	refField := map[string]string{"/v1/programs/telco/members": "customer_ref",
		m + "/transfers": "to", m + "/merge": "into"}
	for route, tpl := range refRoutes {
		for _, s := range []string{`"` + sqlInjection + `"`, `"` + formulaInjection + `"`,
			"\"a\xffb\"", "\"\xc0\xaf\"", `"a\u0000b"`, `"a\ud800b"`, `""`,
			`"` + strings.Repeat("x", 129) + `"`, `"<script>"`, `7`, `null`} {
			field := refField[route]
			if !utf8.ValidString(s) {
				// Bad bytes are refused for the body as a whole, before fields.
				field = "body"
			}
			cases = append(cases, tc{route, fmt.Sprintf(tpl, s), field})
		}
	}
	// Unknown fields carrying injection attempts are named, not ignored.
	cases = append(cases, tc{m + "/credits",
		`{"points":1,"reason":"r","'; DROP TABLE members; --":1}`, sqlInjection})

	for i, k := range cases {
		r := c.send("POST", k.path, fmt.Sprintf("hostile-%d", i), k.body, "X-Actor", "ops")
		if r.status != 400 || r.body["field"] != k.field ||
			r.header.Get("Content-Type") != "application/problem+json" {
			short := k.body
			if len(short) > 80 {
				short = short[:80] + "..."
			}
			t.Errorf("POST %s %q: status %d field %v, want 400 naming %q: %.200s", k.path,
				short, r.status, r.body["field"], k.field, r.raw)
		}
	}

	// Hostile header values: the Idempotency-Key is a reference too.
	for _, key := range []string{sqlInjection, formulaInjection, strings.Repeat("k", 129)} {
		r := c.send("POST", m+"/credits", key, map[string]any{"points": 1, "reason": "r"})
		if r.status != 400 || r.body["field"] != "Idempotency-Key" {
			t.Errorf("Idempotency-Key %q: status %d: %s", key, r.status, r.raw)
		}
	}

	// Free text is stored verbatim, whatever it looks like.
	for i, s := range hostileTexts {
		c.must(201, "POST", m+"/credits", fmt.Sprintf("text-%d", i),
			map[string]any{"points": 1, "reason": s})
	}
	// Invalid UTF-8 in free text is refused, not quietly altered.
	bad := c.must(400, "POST", m+"/credits", "text-latin1",
		"{\"points\":1,\"reason\":\"caf\xe9\"}")
	if bad.body["field"] != "body" {
		t.Fatalf("invalid UTF-8: %s", bad.raw)
	}
	page := c.must(200, "GET", m+"/movements?limit=100", "", nil)
	reasons := map[string]bool{}
	for _, p := range page.body["postings"].([]any) {
		if s, ok := p.(map[string]any)["reason"].(string); ok {
			reasons[s] = true
		}
	}
	for _, s := range hostileTexts {
		if !reasons[s] {
			t.Errorf("reason %q not stored verbatim; stored: %v", s, reasons)
		}
	}

	// A reference may hold characters a spreadsheet reads as a formula: it
	// is stored as given.
	ref := "=1+1;@x"
	c.must(201, "POST", "/v1/programs/telco/members", "enr-f", map[string]any{"customer_ref": ref})
	got := c.must(200, "GET", "/v1/programs/telco/members/"+ref, "", nil)
	if got.body["customer_ref"] != ref {
		t.Errorf("member %q read back as %v", ref, got.body["customer_ref"])
	}

	// The ledger: C1 has the seed and the one-point credits, nothing else;
	// every refusal left it alone.
	credits := len(hostileTexts)
	b := c.must(200, "GET", m+"/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 1000+int64(credits) {
		t.Errorf("C1 available %d, want %d", got, 1000+credits)
	}
	b = c.must(200, "GET", "/v1/programs/telco/members/C2/balance", "", nil)
	if got := jnum(t, b, "balance.available"); got != 0 {
		t.Errorf("C2 available %d, want 0", got)
	}
	var members, postings int
	err := a.Pool.QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM members), (SELECT count(*) FROM postings)`).
		Scan(&members, &postings)
	if err != nil || members != 3 || postings != 1+credits {
		t.Errorf("members %d postings %d (%v), want 3 and %d", members, postings, err,
			1+credits)
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
}

// TestHostileBulkFileEscaped loads a bulk file whose member references and
// reasons hold spreadsheet formulas and SQL: the ledger stores them as
// given, and the result file escapes every cell a spreadsheet would run.
func TestHostileBulkFileEscaped(t *testing.T) {
	t.Parallel()
	a := startApp(t, testConfig(t), Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	refs := []string{"=1+1", "+SUM(1;2)", "@cmd", "-2+3"}
	for i, ref := range refs {
		c.must(201, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", i),
			map[string]any{"customer_ref": ref})
	}
	var file strings.Builder
	file.WriteString("member,points,reason,txn_id\n")
	for i, ref := range refs {
		fmt.Fprintf(&file, "%s,%d,\"%s\",=t%d\n", ref, 10*(i+1), formulaInjection, i)
	}
	fmt.Fprintf(&file, "C9,5,\"%s\",t9\n", sqlInjection) // an unknown member

	r := c.must(202, "POST", "/v1/programs/telco/batches", "", file.String(),
		"Content-Type", "text/csv")
	id, _ := r.body["id"].(string)
	wait := func(status string) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := c.must(200, "GET", "/v1/programs/telco/batches/"+id, "", nil)
			if r.body["status"] == status {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("batch %s: %s, want %s", id, r.raw, status)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait("validated")
	c.must(202, "POST", "/v1/programs/telco/batches/"+id+"/post", "", nil)
	wait("posted")

	// The stored reason and reference are verbatim.
	for i, ref := range refs {
		b := c.must(200, "GET", "/v1/programs/telco/members/"+ref+"/movements", "", nil)
		ps := b.body["postings"].([]any)
		if len(ps) != 1 {
			t.Fatalf("%s: %d postings, want 1: %s", ref, len(ps), b.raw)
		}
		p := ps[0].(map[string]any)
		if p["reason"] != formulaInjection || p["txn_id"] != fmt.Sprintf("=t%d", i) ||
			int64(p["points"].(float64)) != int64(10*(i+1)) {
			t.Errorf("%s: posting %v", ref, p)
		}
	}

	// The result file: no cell starts with a formula character.
	res := c.must(200, "GET", "/v1/programs/telco/batches/"+id+"/result", "", nil)
	rows, err := csv.NewReader(strings.NewReader(res.raw)).ReadAll()
	if err != nil || len(rows) != 1+len(refs)+1 {
		t.Fatalf("result file (%v): %q", err, res.raw)
	}
	for _, row := range rows[1:] {
		for _, cell := range row {
			if cell != "" && strings.ContainsRune("=+@\t\r", rune(cell[0])) {
				t.Errorf("result cell %q is not escaped: %v", cell, row)
			}
			if cell != "" && cell[0] == '-' {
				if _, err := fmt.Sscan(cell, new(int64)); err != nil {
					t.Errorf("result cell %q is not escaped: %v", cell, row)
				}
			}
		}
	}
	if !strings.Contains(res.raw, "'=1+1") || !strings.Contains(res.raw, "'-2+3") {
		t.Errorf("result file does not keep the escaped references: %q", res.raw)
	}
	if v, err := a.Ledger.Check(context.Background()); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
}
