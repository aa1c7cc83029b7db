package soap_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/internal/app"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// el writes <p:name>value</p:name>.
func el(name string, value any) string {
	return fmt.Sprintf("<p:%s>%v</p:%s>", name, value, name)
}

func target(ref string) string { return el("Program", "telco") + el("CustomerRef", ref) }

func accrue(ref, txn, amount, at string) string {
	return "<p:Accrue>" + target(ref) + el("TxnId", txn) + el("EventType", "bill_paid") +
		el("Amount", amount) + el("OccurredAt", at) + "</p:Accrue>"
}

func enroll(ref, txn string) string {
	return "<p:EnrollMember>" + target(ref) + el("TxnId", txn) + el("Channel", "web") +
		el("EnrolledAt", "2026-09-01T10:00:00-03:00") + "</p:EnrollMember>"
}

func balance(ref string) string { return "<p:GetBalance>" + target(ref) + "</p:GetBalance>" }

// TestOperations runs every operation in SOAP 1.1 and 1.2 and holds each
// answer to its golden file and to the XSD; the balances are checked by value.
func TestOperations(t *testing.T) {
	p := startPlatform(t)
	since := time.Now()
	billing := basic("billing", billingPass)
	for _, ver := range []int{11, 12} {
		a, b := fmt.Sprintf("A-%d", ver), fmt.Sprintf("B-%d", ver)
		tx := func(s string) string { return fmt.Sprintf("%d-%s", ver, s) }
		name := func(op string) string { return fmt.Sprintf("%s.%d", op, ver) }
		call := func(op string) answer { return p.call(ver, billing, op).ok(t) }

		r := call(enroll(a, tx("enr-a")))
		golden(t, name("EnrollMember"), r, since)
		call(enroll(b, tx("enr-b")))

		// 29.85 USD at one point per dollar, rounded down: 29 points.
		r = call(accrue(a, tx("bill-1"), "29.85", "2026-09-05T12:00:00-03:00"))
		golden(t, name("Accrue"), r, since)
		if got := r.value(t, "Points"); got != "29" {
			t.Fatalf("accrual earned %s points, want 29", got)
		}
		call(accrue(a, tx("bill-2"), "100.00", "2026-10-05T12:00:00-03:00"))

		r = call("<p:GetMember>" + target(a) + "</p:GetMember>")
		golden(t, name("GetMember"), r, since)
		if got := r.value(t, "Available"); got != "129" {
			t.Fatalf("available %s, want 129", got)
		}

		// Redeem 50: the September lot (29) goes first, then 21 of October's.
		r = call("<p:Redeem>" + target(a) + el("TxnId", tx("red-1")) + el("Points", 50) +
			el("Reason", "voucher") + "</p:Redeem>")
		golden(t, name("Redeem"), r, since)
		if got := r.value(t, "Available"); got != "79" {
			t.Fatalf("available after redeeming 50: %s, want 79", got)
		}
		r = call("<p:CancelRedemption>" + target(a) + el("TxnId", tx("cancel-1")) +
			el("RedemptionTxnId", tx("red-1")) + el("Reason", "order cancelled") +
			"</p:CancelRedemption>")
		golden(t, name("CancelRedemption"), r, since)
		if got := r.value(t, "Available"); got != "129" {
			t.Fatalf("available after the cancellation: %s, want 129", got)
		}
		r = call("<p:TransferPoints>" + target(a) + el("TxnId", tx("xfer-1")) +
			el("ToCustomerRef", b) + el("Points", 30) + "</p:TransferPoints>")
		golden(t, name("TransferPoints"), r, since)
		if got := r.value(t, "Available"); got != "99" {
			t.Fatalf("available after giving 30: %s, want 99", got)
		}

		r = call(balance(a))
		golden(t, name("GetBalance"), r, since)
		// The September lot (29 points) went to B first; October's 100 lot
		// has 99 left, expiring at the end of October 2028 in Santiago.
		if got := r.value(t, "Available"); got != "99" {
			t.Fatalf("balance of %s: %s, want 99", a, got)
		}
		r = call(balance(b))
		if got := r.value(t, "Available"); got != "30" {
			t.Fatalf("balance of %s: %s, want 30", b, got)
		}
		// An empty balance still says 0.
		r = call(enroll("C-"+a, tx("enr-c")))
		r = call(balance("C-" + a))
		if got := r.value(t, "Available"); got != "0" {
			t.Fatalf("balance of a new member: %q, want 0", got)
		}
		golden(t, name("GetBalance-empty"), r, since)

		r = call("<p:GetMovements>" + target(a) + el("Limit", 10) + "</p:GetMovements>")
		golden(t, name("GetMovements"), r, since)
		if n := strings.Count(r.body, "<Movement>"); n != 5 {
			t.Fatalf("%d movements, want 5 (two accruals, redemption, reversal, transfer)", n)
		}
	}
	if v, _ := p.app.Ledger.Check(context.Background()); len(v) > 0 {
		t.Fatalf("ledger invariants: %+v", v)
	}
}

// TestReplayAndFaults sends an accrual twice (one posting, the first answer
// again) and provokes every client fault code in both SOAP versions.
func TestReplayAndFaults(t *testing.T) {
	p := startPlatform(t)
	since := time.Now()
	billing := basic("billing", billingPass)
	for _, ver := range []int{11, 12} {
		ref := fmt.Sprintf("R-%d", ver)
		tx := func(s string) string { return fmt.Sprintf("%d-%s", ver, s) }
		name := func(op string) string { return fmt.Sprintf("fault-%s.%d", op, ver) }
		p.call(ver, billing, enroll(ref, tx("enr"))).ok(t)
		topUp := accrue(ref, tx("topup-77"), "100.00", "2026-11-20T10:00:00-03:00")
		first := p.call(ver, billing, topUp).ok(t)
		again := p.call(ver, billing, topUp).ok(t)
		if again.value(t, "Replayed") != "true" || first.value(t, "Replayed") != "false" ||
			again.value(t, "PostingId") != first.value(t, "PostingId") {
			t.Fatalf("the retry is not a replay of the first answer:\n%s\n%s", first.body,
				again.body)
		}
		if n := p.postings(tx("topup-77")); n != 1 {
			t.Fatalf("%d postings for the retried accrual, want 1", n)
		}

		faults := []struct {
			code, field, op string
			a               auth
		}{
			{"Client.Invalid", "Amount", accrue(ref, tx("bad-1"), "12,50",
				"2026-11-20T10:00:00-03:00"), billing},
			{"Client.NotFound", "CustomerRef", balance("GHOST-1"), billing},
			{"Client.Conflict", "TxnId", accrue(ref, tx("topup-77"), "250.00",
				"2026-11-20T10:00:00-03:00"), billing},
			{"Client.InsufficientPoints", "Points", "<p:Redeem>" + target(ref) +
				el("TxnId", tx("red-big")) + el("Points", 1000) + "</p:Redeem>", billing},
			{"Client.Unauthorized", "Authorization", balance(ref),
				basic("billing", "not-the-password")},
		}
		for _, f := range faults {
			r := p.call(ver, f.a, f.op)
			if got := r.faultCode(t); got != f.code {
				t.Fatalf("fault code %s, want %s: %s", got, f.code, r.body)
			}
			if got := r.value(t, "Field"); got != f.field {
				t.Errorf("%s names the field %q, want %q", f.code, got, f.field)
			}
			wantStatus := 500
			if ver == 12 {
				wantStatus = 400
			}
			if r.status != wantStatus {
				t.Errorf("%s in SOAP %d came with HTTP %d, want %d", f.code, ver, r.status,
					wantStatus)
			}
			golden(t, name(f.code), r, since)
		}
		if got := p.call(ver, billing, balance(ref)).ok(t).value(t, "Available"); got != "100" {
			t.Fatalf("refused calls changed the balance: %s, want 100", got)
		}
	}
}

// TestUnavailable: with no core running, a write is stored on the bus but
// no result comes back; the caller is told to send it again.
func TestUnavailable(t *testing.T) {
	p, _ := gatewayAlone(t, 0)
	since := time.Now()
	for _, ver := range []int{11, 12} {
		r := p.call(ver, basic("billing", billingPass), enroll("U-1", fmt.Sprintf("%d-u", ver)))
		if got := r.faultCode(t); got != "Server.Unavailable" {
			t.Fatalf("fault code %s, want Server.Unavailable: %s", got, r.body)
		}
		if r.status != 500 {
			t.Fatalf("Server.Unavailable came with HTTP %d, want 500", r.status)
		}
		golden(t, fmt.Sprintf("fault-Server.Unavailable.%d", ver), r, since)
	}
}

// A PasswordDigest token captured on the wire is refused after the gateway
// restarts, within its freshness window: the nonces it saw are kept in the
// database (they were kept in the process only, and the digest does not
// sign the body, so the token could carry any request).
func TestDigestNonceRefusedAfterRestart(t *testing.T) {
	cfg := testConfig(t)
	p := startPlatformWith(t, cfg)
	p.call(11, basic("billing", billingPass), enroll("M-1", "rs-enr")).ok(t)
	captured := digest("billing", billingPass)
	captured.nonce = []byte("restart-nonce-01")
	captured.created = time.Now()
	p.call(11, captured, balance("M-1")).ok(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	again := start(t, cfg, app.Roles{Gateway: true, Core: true})
	r := again.call(11, captured, balance("M-1"))
	if r.status != 500 || !strings.Contains(r.body, "Client.Unauthorized") ||
		!strings.Contains(r.body, "<Field>Nonce</Field>") {
		t.Fatalf("the captured token after a restart: %d\n%s", r.status, r.body)
	}
	again.call(11, digest("billing", billingPass), balance("M-1")).ok(t)
}

// TestAuth covers both WS-Security password types, replays, stale tokens,
// HTTP Basic and operation grants.
func TestAuth(t *testing.T) {
	p := startPlatform(t)
	p.call(11, basic("billing", billingPass), enroll("M-1", "auth-enr")).ok(t)
	p.call(11, basic("billing", billingPass), accrue("M-1", "auth-bill", "42",
		"2026-11-20T10:00:00-03:00")).ok(t)
	fixed := digest("billing", billingPass)
	fixed.nonce = []byte("0123456789abcdef")
	fixed.created = time.Now()
	stale := digest("billing", billingPass)
	stale.created = time.Now().Add(-10 * time.Minute)
	wrongDigest := digest("billing", "not-the-password")
	text := auth{kind: "text", user: "billing", password: billingPass}
	cases := []struct {
		name  string
		a     auth
		op    string
		field string // empty: the call succeeds
	}{
		{"digest", fixed, balance("M-1"), ""},
		{"digest nonce replayed", fixed, balance("M-1"), "Nonce"},
		{"digest stale created", stale, balance("M-1"), "Created"},
		{"digest wrong password", wrongDigest, balance("M-1"), "Password"},
		{"digest in SOAP 1.2", digest("callcentre", callPass), balance("M-1"), ""},
		{"password text", text, balance("M-1"), ""},
		{"basic", basic("callcentre", callPass), balance("M-1"), ""},
		{"basic unknown user", basic("nobody", billingPass), balance("M-1"), "Authorization"},
		{"no credentials", auth{}, balance("M-1"), "Security"},
		{"operation not granted", basic("callcentre", callPass), "<p:Redeem>" + target("M-1") +
			el("TxnId", "cc-red") + el("Points", 1) + "</p:Redeem>", "Redeem"},
		{"granted write", digest("callcentre", callPass), accrue("M-1", "cc-bill", "8",
			"2026-11-21T10:00:00-03:00"), ""},
	}
	for _, c := range cases {
		ver := 11
		if strings.Contains(c.name, "1.2") {
			ver = 12
		}
		r := p.call(ver, c.a, c.op)
		if c.field == "" {
			r.ok(t)
			continue
		}
		want := "Client.Unauthorized" // no credentials, or wrong ones
		if c.name == "operation not granted" {
			want = "Client.Forbidden" // known credentials that may not do this
		}
		if code := r.faultCode(t); code != want {
			t.Fatalf("%s: fault %s, want %s: %s", c.name, code, want, r.body)
		}
		if got := r.value(t, "Field"); got != c.field {
			t.Errorf("%s: field %q, want %q", c.name, got, c.field)
		}
	}
	// The refused redemption changed nothing; the granted accrual added 8.
	r := p.call(11, basic("billing", billingPass), balance("M-1")).ok(t)
	if got := r.value(t, "Available"); got != "50" {
		t.Fatalf("available %s, want 50", got)
	}
	if n := p.postings("cc-red"); n != 0 {
		t.Fatalf("the refused redemption posted %d times", n)
	}
}

// With PostgreSQL out of reach a GetBalance answers Server.Unavailable (a
// state to wait out), not Server.Internal.
func TestBalanceDuringDatabaseOutageIsUnavailable(t *testing.T) {
	cfg := testConfig(t)
	var cut func()
	cfg.DatabaseURL, cut = testenv.ProxyURL(t, cfg.DatabaseURL)
	p := startPlatformWith(t, cfg)
	p.call(11, basic("billing", billingPass), enroll("M-1", "out-enr")).ok(t)
	p.call(11, basic("billing", billingPass), balance("M-1")).ok(t)

	cut()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := p.call(11, basic("billing", billingPass), balance("M-1"))
		if r.status == 500 && strings.Contains(r.body, "Server.Unavailable") &&
			strings.Contains(r.body, "not reachable") {
			break
		}
		if r.status != 200 || time.Now().After(deadline) {
			t.Fatalf("GetBalance with PostgreSQL gone: %d %s; want Server.Unavailable",
				r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A nonce is one token's whatever the user name: the digest does not cover
// the name, so a captured token sent again under another user's name (one
// with the same password and other grants) is a replay.
func TestDigestNonceReplayedUnderAnotherName(t *testing.T) {
	cfg := testConfig(t)
	cfg.SOAPUsers += ",twin:" + billingPass + ":GetBalance"
	p := startPlatformWith(t, cfg)
	p.call(11, basic("billing", billingPass), enroll("M-1", "tw-enr")).ok(t)
	captured := digest("twin", billingPass)
	captured.nonce = []byte("twin-nonce-00001")
	captured.created = time.Now()
	p.call(11, captured, balance("M-1")).ok(t)
	captured.user = "billing"
	r := p.call(11, captured, balance("M-1"))
	if !strings.Contains(r.body, "Client.Unauthorized") ||
		!strings.Contains(r.body, "<Field>Nonce</Field>") {
		t.Fatalf("the token under another name: %d\n%s", r.status, r.body)
	}
}

// While the database does not answer, a digest call is told so in about
// nonceWait (it waited for as long as the database did, past the client's
// patience), and its nonce is not spent: the same request, sent again once
// the database answers, is served.
func TestDigestNonceWhileDatabaseStalls(t *testing.T) {
	cfg := testConfig(t)
	p := startPlatformWith(t, cfg)
	p.call(11, basic("billing", billingPass), enroll("M-1", "st-enr")).ok(t)
	ctx := context.Background()
	lock, err := p.app.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, `LOCK TABLE soap_nonces IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	token := digest("billing", billingPass)
	token.nonce = []byte("stall-nonce-0001")
	token.created = time.Now()
	began := time.Now()
	r := p.call(11, token, balance("M-1"))
	took := time.Since(began)
	_ = lock.Rollback(ctx)
	if !strings.Contains(r.body, "Server.Unavailable") || took > 10*time.Second {
		t.Fatalf("digest call with the nonces locked: %d after %s\n%s", r.status, took, r.body)
	}
	p.call(11, token, balance("M-1")).ok(t)
}
