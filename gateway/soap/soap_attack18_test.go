package soap_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func redeem(ref, txn string, points int) string {
	return "<p:Redeem>" + target(ref) + el("TxnId", txn) + el("Points", points) +
		el("Reason", "attack18") + "</p:Redeem>"
}

// TestAttack18ConcurrentSOAPWrites sends, at once: the same Redeem twelve
// times (one TxnId, one body), one TxnId with two different amounts, and
// redemptions under distinct TxnIds that together ask for more than the
// balance. Each TxnId must post at most once, its copies must get the same
// answer or a conflict, and the balance must never go below zero.
func TestAttack18ConcurrentSOAPWrites(t *testing.T) {
	p := startPlatform(t)
	billing := basic("billing", billingPass)
	for _, ref := range []string{"R1", "R2", "R3"} {
		p.call(11, billing, enroll(ref, "enr-"+ref)).ok(t)
		// 100 points each.
		p.call(11, billing, accrue(ref, "bill-"+ref, "100.00",
			"2026-11-05T12:00:00-03:00")).ok(t)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string][]answer{}
	send := func(key string, ver int, op string) {
		defer wg.Done()
		a := p.call(ver, billing, op)
		mu.Lock()
		answers[key] = append(answers[key], a)
		mu.Unlock()
	}
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go send("same", 11+i%2, redeem("R1", "same-1", 30))
	}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go send("clash", 11, redeem("R2", "clash-1", 20+10*(i%2)))
	}
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go send("race", 12, redeem("R3", fmt.Sprintf("race-%d", i), 40))
	}
	wg.Wait()

	// The same request: one posting, every answer the same command.
	cmds := map[string]bool{}
	for _, a := range answers["same"] {
		if a.status != 200 {
			t.Errorf("a copy of the same Redeem answered %d: %s", a.status, a.body)
			continue
		}
		cmds[a.value(t, "CommandId")] = true
	}
	if n := p.postings("same-1"); n != 1 || len(cmds) != 1 {
		t.Errorf("same-1: %d postings, %d different command ids in the answers; want 1 and 1",
			n, len(cmds))
	}
	if got := p.call(11, billing, balance("R1")).ok(t).value(t, "Available"); got != "70" {
		t.Errorf("R1 available %s, want 70", got)
	}

	// One id, two bodies: one of them posts; every other answer is either
	// its replay or a conflict, never the other amount.
	amounts := map[string]bool{}
	for _, a := range answers["clash"] {
		if a.status == 200 {
			amounts[a.value(t, "Points")] = true
			continue
		}
		if code := a.faultCode(t); code != "Client.Conflict" {
			t.Errorf("clash-1 answered %s: %s", code, a.body)
		}
	}
	if n := p.postings("clash-1"); n != 1 || len(amounts) != 1 {
		t.Errorf("clash-1: %d postings, amounts answered %v; want 1 posting, one amount", n,
			amounts)
	}

	// Distinct ids for 6 × 40 of 100 points: two succeed at most.
	ok := 0
	for _, a := range answers["race"] {
		if a.status == 200 {
			ok++
		} else if code := a.faultCode(t); code != "Client.InsufficientPoints" {
			t.Errorf("race answered %s: %s", code, a.body)
		}
	}
	got := p.call(11, billing, balance("R3")).ok(t).value(t, "Available")
	if ok != 2 || got != "20" {
		t.Errorf("%d racing redemptions of 40 succeeded, R3 has %s; want 2 and 20", ok, got)
	}
}

// TestAttack18EntityTricks sends envelopes that lean on XML entities: a
// DOCTYPE with an internal entity (billion laughs in small), an external
// entity, an undefined entity, and character references spelling the
// value. Each must be a Client fault or read literally, never a 5xx crash
// and never a posting of an expanded value.
func TestAttack18EntityTricks(t *testing.T) {
	p := startPlatform(t)
	billing := basic("billing", billingPass)
	p.call(11, billing, enroll("E1", "enr-E1")).ok(t)
	p.call(11, billing, accrue("E1", "bill-E1", "100.00", "2026-11-05T12:00:00-03:00")).ok(t)
	env := func(prolog, op string) string {
		return `<?xml version="1.0"?>` + prolog + `<soap:Envelope xmlns:soap="` +
			`http://schemas.xmlsoap.org/soap/envelope/" xmlns:p="urn:puntos:soap:v1">` +
			`<soap:Body>` + op + `</soap:Body></soap:Envelope>`
	}
	lol := `<!DOCTYPE soap:Envelope [<!ENTITY a "10"><!ENTITY b "&a;&a;&a;">]>`
	xxe := `<!DOCTYPE soap:Envelope [<!ENTITY x SYSTEM "file:///etc/hostname">]>`
	cases := []struct{ name, body string }{
		{"internal entity", env(lol, strings.Replace(redeem("E1", "ent-1", 1),
			"<p:Points>1</p:Points>", "<p:Points>&b;</p:Points>", 1))},
		{"external entity", env(xxe, strings.Replace(redeem("E1", "ent-2", 1),
			"attack18", "&x;", 1))},
		{"undefined entity", env("", strings.Replace(redeem("E1", "ent-3", 1),
			"<p:Points>1</p:Points>", "<p:Points>&zz;</p:Points>", 1))},
	}
	for _, c := range cases {
		req := p.post("text/xml; charset=utf-8", billing, c.body)
		if req.status >= 500 && !strings.Contains(req.body, "Client.") {
			t.Errorf("%s: status %d %s", c.name, req.status, req.body)
		}
		if req.status == 200 {
			t.Errorf("%s: accepted: %s", c.name, req.body)
		}
	}
	// Character references are plain XML: &#x31;&#x30; is "10".
	ok := p.post("text/xml; charset=utf-8", billing, env("", strings.Replace(
		redeem("E1", "ent-4", 1), "<p:Points>1</p:Points>",
		"<p:Points>&#x31;&#x30;</p:Points>", 1))).ok(t)
	if got := ok.value(t, "Available"); got != "90" {
		t.Errorf("after redeeming &#x31;&#x30; points: %s available, want 90", got)
	}
	for _, txn := range []string{"ent-1", "ent-2", "ent-3"} {
		if n := p.postings(txn); n != 0 {
			t.Errorf("%s posted %d times", txn, n)
		}
	}
}
