package soap_test

import (
	"strings"
	"testing"
)

// A legacy system's envelope declared ISO-8859-1 is read as such: its
// accented reason reaches the statement as the same words in UTF-8. A
// charset outside the three read is refused by name, and a reason with a
// control character is refused for what it is.
func TestLatin1EnvelopeAndReasonFaults(t *testing.T) {
	p := startPlatform(t)
	billing := basic("billing", billingPass)
	p.call(11, billing, enroll("L-1", "l1-enr")).ok(t)
	p.call(11, billing, accrue("L-1", "l1-acc", "100.00", "2026-11-20T10:00:00-03:00")).ok(t)

	latin1 := func(op string) string {
		b := []byte(`<?xml version="1.0" encoding="ISO-8859-1"?>` + "\n" +
			`<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" ` +
			`xmlns:p="urn:puntos:soap:v1"><soap:Header>` + billing.header() +
			`</soap:Header><soap:Body>` + op + `</soap:Body></soap:Envelope>`)
		// "Ñ", "ñ" and "ó" as ISO-8859-1 bytes, as the legacy system writes them.
		s := strings.NewReplacer("Ñ", "\xd1", "ñ", "\xf1", "ó", "\xf3").Replace(string(b))
		return s
	}
	redeem := "<p:Redeem>" + target("L-1") + el("TxnId", "l1-red") + el("Points", 10) +
		el("Reason", "canje en tienda Ñuñoa, cañón") + "</p:Redeem>"
	r := p.post("text/xml; charset=ISO-8859-1", billing, latin1(redeem))
	r.ok(t)
	mv := p.call(11, billing, "<p:GetMovements>"+target("L-1")+el("Limit", 10)+
		"</p:GetMovements>").ok(t)
	if !strings.Contains(mv.body, "cañón") {
		t.Fatalf("the Latin-1 reason did not reach the statement as written:\n%s", mv.body)
	}

	r = p.post("text/xml; charset=utf-8", billing, strings.Replace(latin1(redeem),
		"ISO-8859-1", "EBCDIC-US", 1))
	if r.faultCode(t) != "Client.Invalid" || !strings.Contains(r.body, "EBCDIC-US") {
		t.Fatalf("an envelope in EBCDIC: %s", r.body)
	}

	r = p.call(11, billing, "<p:Redeem>"+target("L-1")+el("TxnId", "l1-red2")+
		el("Points", 10)+el("Reason", "refund \u0085 x")+"</p:Redeem>")
	if r.faultCode(t) != "Client.Invalid" || r.value(t, "Field") != "Reason" ||
		!strings.Contains(r.body, "U+0085") {
		t.Fatalf("a reason with a control character: %s", r.body)
	}
	if got := p.call(11, billing, balance("L-1")).ok(t).value(t, "Available"); got != "90" {
		t.Fatalf("available %s after one redemption of 10, want 90", got)
	}
}
