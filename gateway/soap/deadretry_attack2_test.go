package soap_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/app"
)

// EnrollMember U-1 under TxnId e-1 is dead-lettered. The caller
// then sends a changed call under the same TxnId (U-2): a new message id,
// stored and waiting for core. Its retry is dropped by the bus as a
// duplicate; the dead letter of the first call has the same (source, txn)
// but is another call. The answer is the fault of a call still on its way
// (Server.Unavailable), not Server.Internal "set aside ... nothing changed"
// (the first form's); core then applies the waiting call: U-2 is enrolled.
func TestDeadRetryAttack2SOAPChangedCallWhileWaiting(t *testing.T) {
	p, cfg := gatewayAlone(t, 1)
	caller := basic("billing", billingPass)

	// A working core creates the program, then stops.
	cfg1 := *cfg
	core1 := start(t, &cfg1, app.Roles{Core: true})
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequest("PUT", p.base+"/v1/programs/telco", strings.NewReader(
			`{"name":"Telco","currency":"USD","points_per_unit":"1","expiry_unit":"months",`+
				`"expiry_length":24,"expiry_round":"month"}`))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Idempotency-Key", "prog-1")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create program: %d", res.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := core1.app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	if got := p.call(11, caller, enroll("U-1", "e-1")).faultCode(t); got != "Server.Unavailable" {
		t.Fatalf("first call: fault %s, want Server.Unavailable", got)
	}
	deadLetter(t, p, "e-1")

	// The changed call: stored, waiting.
	if got := p.call(11, caller, enroll("U-2", "e-1")).faultCode(t); got != "Server.Unavailable" {
		t.Fatalf("changed call: fault %s, want Server.Unavailable (waiting)", got)
	}
	r := p.call(11, caller, enroll("U-2", "e-1"))
	if got := r.faultCode(t); got != "Server.Unavailable" || strings.Contains(r.body, "set it aside") {
		t.Errorf("retry of the changed call while it waits on the bus: fault %s %s; want "+
			"Server.Unavailable, not 'set aside, nothing changed'", got, r.body)
	}

	// Core comes back and applies the waiting call.
	cfg2 := *cfg
	start(t, &cfg2, app.Roles{Core: true})
	deadline = time.Now().Add(15 * time.Second)
	for {
		r := p.call(11, caller, balance("U-2"))
		if r.status == 200 && !strings.Contains(r.body, "Fault>") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("U-2 never enrolled: %s", r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
