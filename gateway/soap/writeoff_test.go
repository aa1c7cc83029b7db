package soap_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A bill reversed after its points were redeemed writes off what the member
// had spent; cancelling that redemption over SOAP then puts the points back
// on the reversed bill's lot, settling the write-off, and the answer says so
// in WrittenOffRecovered (as REST's written_off_recovered) while Points
// says the member got nothing; the movements carry both figures.
func TestCancelRedemptionSaysWhatSettledAWriteOff(t *testing.T) {
	p := startPlatform(t)
	billing := basic("billing", billingPass)
	call := func(op string) answer { return p.call(11, billing, op).ok(t) }

	call(enroll("W-1", "w-enr"))
	r := call(accrue("W-1", "w-bill", "100.00", "2026-10-05T12:00:00-03:00"))
	posting := r.value(t, "PostingId")
	call("<p:Redeem>" + target("W-1") + el("TxnId", "w-red") + el("Points", 80) +
		el("Reason", "voucher") + "</p:Redeem>")

	// The bill is cancelled at the billing system's back office, over REST.
	req, _ := http.NewRequest("POST", p.base+"/v1/programs/telco/members/W-1/reversals",
		strings.NewReader(fmt.Sprintf(`{"posting_id":%s,"reason":"bill cancelled"}`, posting)))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Idempotency-Key", "w-rev")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 201 || !strings.Contains(string(body), `"written_off":80`) {
		t.Fatalf("reversal: %d %s, want 201 writing off 80", res.StatusCode, body)
	}

	r = call("<p:CancelRedemption>" + target("W-1") + el("TxnId", "w-cancel") +
		el("RedemptionTxnId", "w-red") + el("Reason", "order cancelled") +
		"</p:CancelRedemption>")
	validate(t, "CancelRedemption-recovered", r.body)
	if got := r.value(t, "WrittenOffRecovered"); got != "80" {
		t.Fatalf("WrittenOffRecovered %s, want 80", got)
	}
	if got := r.value(t, "Points"); got != "0" {
		t.Fatalf("Points %s, want 0: the member gets nothing back", got)
	}
	if got := r.value(t, "Available"); got != "0" {
		t.Fatalf("Available %s, want 0", got)
	}
	if strings.Contains(r.body, "<WrittenOff>") {
		t.Fatalf("the cancellation wrote nothing off: %s", r.body)
	}

	// The movements say the same: the bill's reversal wrote off 80, the
	// cancellation (the other reversal) settled them.
	r = call("<p:GetMovements>" + target("W-1") + el("Limit", 10) + "</p:GetMovements>")
	validate(t, "GetMovements-writeoff", r.body)
	seen := 0
	for _, m := range strings.Split(r.body, "<Movement>")[1:] {
		if !strings.Contains(m, "<Kind>reversal</Kind>") {
			if strings.Contains(m, "<WrittenOff") {
				t.Fatalf("a %s movement with a write-off figure: %s", m[:40], m)
			}
			continue
		}
		seen++
		want := "<WrittenOffRecovered>80</WrittenOffRecovered>"
		if strings.Contains(m, "<ReversesId>"+posting+"</ReversesId>") {
			want = "<WrittenOff>80</WrittenOff>"
		}
		if !strings.Contains(m, want) || strings.Count(m, "<WrittenOff") != 1 {
			t.Fatalf("reversal movement without %s alone: %s", want, m)
		}
	}
	if seen != 2 {
		t.Fatalf("%d reversal movements, want 2: %s", seen, r.body)
	}
	if v, _ := p.app.Ledger.Check(context.Background()); len(v) > 0 {
		t.Fatalf("ledger invariants: %+v", v)
	}
}
