package soap_test

import (
	"strings"
	"testing"
)

// A TxnId, CustomerRef or Program that is there but too long is told so,
// with the limit, not that it "is required": the caller would look for a
// field it did send.
func TestTooLongReferencesSayTheLimit(t *testing.T) {
	p := startPlatform(t)
	billing := basic("billing", billingPass)
	p.call(11, billing, enroll("R1", "enr-R1")).ok(t)
	long := strings.Repeat("t", 200)

	cases := []struct {
		name, op, field, want string
	}{
		{"TxnId", redeem("R1", long, 10), "TxnId",
			"TxnId: is 200 characters long, over the limit of 128; it must be 1-128 letters"},
		{"CustomerRef", balance(long), "CustomerRef",
			"CustomerRef: is 200 characters long, over the limit of 128; it must be 1-128 " +
				"letters"},
		{"Program", "<p:GetBalance>" + el("Program", strings.Repeat("p", 65)) +
			el("CustomerRef", "R1") + "</p:GetBalance>", "Program",
			"Program: is 65 characters long, over the limit of 64; it must be 1-64 letters"},
		{"ToCustomerRef", "<p:TransferPoints>" + target("R1") + el("TxnId", "xfer-1") +
			el("ToCustomerRef", long) + el("Points", 1) + "</p:TransferPoints>",
			"ToCustomerRef", "ToCustomerRef: is 200 characters long, over the limit of 128"},
	}
	for _, c := range cases {
		for _, ver := range []int{11, 12} {
			r := p.call(ver, billing, c.op)
			if code := r.faultCode(t); code != "Client.Invalid" {
				t.Errorf("%s, SOAP %d: fault %s, want Client.Invalid: %s", c.name, ver, code,
					r.body)
				continue
			}
			if f := r.value(t, "Field"); f != c.field {
				t.Errorf("%s, SOAP %d: names %q, want %q", c.name, ver, f, c.field)
			}
			if m := r.value(t, "Message"); !strings.HasPrefix(m, c.want) {
				t.Errorf("%s, SOAP %d: message %q, want it to start %q", c.name, ver, m,
					c.want)
			}
		}
	}
	if got := p.call(11, billing, balance("R1")).ok(t).value(t, "Available"); got != "0" {
		t.Fatalf("refused calls changed the balance: %s, want 0", got)
	}
}
