package conversion

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// crashPartner stands for a worker that dies at the moment it would call
// the partner: it stops the worker and never calls.
type crashPartner struct{ crash context.CancelFunc }

func (p crashPartner) Deliver(context.Context, Request) Answer {
	p.crash()
	return Answer{Detail: "crashed"}
}

func (p crashPartner) Status(context.Context, Request) Answer { return Answer{} }

// TestCrashResumes stops a worker between the hold and the call (the
// outbox row written, the partner never called), and between the call and
// its answer (the partner credited, the answer lost); a new worker resumes
// each once the dead one's lease ran out, and converts once.
func TestCrashResumes(t *testing.T) {
	e := newEnv(t)
	f := newFake()
	fr := newHTTPFront(t, f, 2*time.Second)
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint, ext.Credentials = fr.srv.URL, fakeSecret
	ctx := context.Background()
	const member = "56922222222"

	for _, tc := range []struct {
		name        string
		callReached bool
	}{{"before the call", false}, {"after the call left", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			account := "CL000001"
			if tc.callReached {
				account = "CL000002"
			}
			prog := e.program(ext, member, 5000)
			c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 2000,
				AccountID: account})

			// The first worker dies at the call.
			actx, crash := context.WithCancel(ctx)
			opt := Options{HTTP: testHTTP, Clock: e.clock, Interval: 10 * time.Millisecond,
				Lease: 5 * time.Minute}
			if tc.callReached {
				var once sync.Once
				f.mu.Lock()
				f.onDeliver = func(string) { once.Do(crash) }
				f.mu.Unlock()
			} else {
				opt.Partner = func(string, *core.ExternalProgram) (Partner, error) {
					return crashPartner{crash: crash}, nil
				}
			}
			done := make(chan error, 1)
			go func() { done <- Run(actx, e.ledger, quietLog(), opt) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				crash()
				t.Fatal("the worker never reached the partner")
			}
			f.mu.Lock()
			f.onDeliver = nil
			f.mu.Unlock()

			got := e.conversion(prog, member, c.ID)
			if got.Status != core.ConversionPending || got.Attempts != 1 {
				t.Fatalf("after the crash: %s after %d attempts, want pending after 1",
					got.Status, got.Attempts)
			}
			e.wantBalance(prog, member, 3000, 2000)
			want := int64(0)
			if tc.callReached {
				want = 1000
			}
			if n := f.creditedTo(account); n != want {
				t.Fatalf("partner credited %d before the restart, want %d", n, want)
			}

			// A new worker leaves it alone while the dead one's lease runs.
			b := New(e.ledger, quietLog(), Options{HTTP: testHTTP, Clock: e.clock})
			if n, err := b.Step(ctx); err != nil || n != 0 {
				t.Fatalf("new worker took %d during the lease (%v)", n, err)
			}
			e.advance(6 * time.Minute)
			if n, err := b.Step(ctx); err != nil || n != 1 {
				t.Fatalf("new worker took %d after the lease (%v), want 1", n, err)
			}
			got = e.conversion(prog, member, c.ID)
			if got.Status != core.ConversionConfirmed || got.Attempts != 2 {
				t.Fatalf("after the restart: %s after %d attempts, want confirmed after 2",
					got.Status, got.Attempts)
			}
			e.wantBalance(prog, member, 3000, 0)
			if n := f.creditedTo(account); n != 1000 {
				t.Fatalf("partner credited %d, want 1000 once", n)
			}
			e.check()
		})
	}
}

// TestDailyAndMonthlyLimitsInSantiago counts the limits by the local day
// and month of America/Santiago: the times are chosen so that counting by
// UTC days would decide each request the other way.
func TestDailyAndMonthlyLimitsInSantiago(t *testing.T) {
	e := newEnv(t)
	ext := skyMiles(core.FlavourFile)
	ext.DailyLimit, ext.MonthlyLimit = 3000, 7000
	const member = "56933333333"
	prog := e.program(ext, member, 20000)
	scl, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		at     time.Time
		points core.Points
		refuse string // the limit that refuses it, if any
	}{
		// 20:00 local is 23:00 UTC on the 10th; 23:50 local is 02:50 UTC on
		// the 11th: one local day, two UTC days.
		{time.Date(2026, 3, 10, 20, 0, 0, 0, scl), 1000, ""},
		{time.Date(2026, 3, 10, 23, 50, 0, 0, scl), 2500, "daily_limit"},
		{time.Date(2026, 3, 10, 23, 50, 0, 0, scl), 2000, ""},
		// 00:10 local on the 11th is the same UTC day as 23:50 local.
		{time.Date(2026, 3, 11, 0, 10, 0, 0, scl), 2500, ""},
		{time.Date(2026, 3, 11, 0, 20, 0, 0, scl), 600, "daily_limit"},
		{time.Date(2026, 3, 12, 12, 0, 0, 0, scl), 1000, ""},
		{time.Date(2026, 3, 13, 12, 0, 0, 0, scl), 600, "monthly_limit"},
		// 00:30 local on 1 April is still 31 March in UTC.
		{time.Date(2026, 4, 1, 0, 30, 0, 0, scl), 600, ""},
	}
	for i, s := range steps {
		e.setNow(s.at)
		r := e.do(core.KindConvert, prog, member, core.ConvertRequest{External: ext.Code,
			Points: s.points, AccountID: "LA123456"})
		if s.refuse == "" {
			if r.Status != bus.StatusOK {
				t.Fatalf("step %d: %d points at %s refused: %+v", i, s.points, s.at, r.Error)
			}
			continue
		}
		if r.Status != bus.StatusRejected || r.Error.Kind != string(core.Conflict) ||
			r.Error.Field != s.refuse {
			t.Fatalf("step %d: %d points at %s: %s %+v, want refused by %s", i, s.points,
				s.at, r.Status, r.Error, s.refuse)
		}
	}
	// Held: 1000 + 2000 + 2500 + 1000 + 600; nothing held for the refusals.
	e.wantBalance(prog, member, 12900, 7100)
	e.check()
}

// TestConversionRefusals covers what the ledger refuses before holding
// anything: bounds, account ids, unknown or disabled programs, and more
// points than the member has.
func TestConversionRefusals(t *testing.T) {
	e := newEnv(t)
	ext := skyMiles(core.FlavourFile)
	const member = "56944444444"
	prog := e.program(ext, member, 1000)
	off := ext
	off.Code, off.Enabled = "closedair", new(bool)
	e.ok(core.KindExternalUpsert, prog, off.Code, off)

	for _, tc := range []struct {
		in          core.ConvertRequest
		kind, field string
	}{
		{core.ConvertRequest{External: "skymiles", Points: 99, AccountID: "LA123456"},
			"invalid", "points"},
		{core.ConvertRequest{External: "skymiles", Points: 50001, AccountID: "LA123456"},
			"invalid", "points"},
		{core.ConvertRequest{External: "skymiles", Points: 101}, "invalid", "account_id"},
		{core.ConvertRequest{External: "skymiles", Points: 101, AccountID: "la123456"},
			"invalid", "account_id"},
		{core.ConvertRequest{External: "nowhere", Points: 101, AccountID: "LA123456"},
			"not_found", "external"},
		{core.ConvertRequest{External: "closedair", Points: 101, AccountID: "LA123456"},
			"conflict", "external"},
		{core.ConvertRequest{External: "skymiles", Points: 1002, AccountID: "LA123456"},
			"insufficient", "points"},
		// 101 points are worth 50.5 miles; rounding down would charge a
		// point for nothing, so only counts that convert whole are taken.
		{core.ConvertRequest{External: "skymiles", Points: 101, AccountID: "LA123456"},
			"invalid", "points"},
		// One point is too few for the minimum; the minimum itself converts.
		{core.ConvertRequest{External: "skymiles", Points: 1, AccountID: "LA123456"},
			"invalid", "points"},
	} {
		r := e.do(core.KindConvert, prog, member, tc.in)
		if r.Status != bus.StatusRejected || r.Error.Kind != tc.kind || r.Error.Field != tc.field {
			t.Errorf("%+v: %s %+v, want %s on %s", tc.in, r.Status, r.Error, tc.kind, tc.field)
		}
	}
	e.wantBalance(prog, member, 1000, 0)

	// The external program's configuration is checked too, and its secret
	// never comes back.
	bad := ext
	bad.Flavour, bad.Endpoint = core.FlavourHTTP, "ftp://127.0.0.1/x"
	r := e.do(core.KindExternalUpsert, prog, bad.Code, bad)
	if r.Status != bus.StatusRejected || r.Error.Field != "endpoint" {
		t.Fatalf("ftp endpoint: %s %+v, want refused on endpoint", r.Status, r.Error)
	}
	good := ext
	good.Flavour, good.Endpoint, good.Credentials = core.FlavourHTTP, "https://127.0.0.1:1/api",
		"top-secret"
	data := e.ok(core.KindExternalUpsert, prog, good.Code, good)
	if string(data) == "" || strings.Contains(string(data), "top-secret") {
		t.Fatalf("stored result shows the secret: %s", data)
	}
	pub, err := e.ledger.ExternalProgram(context.Background(), prog, good.Code)
	if err != nil || pub.Credentials != core.Masked {
		t.Fatalf("read: %+v %v, want the secret masked", pub, err)
	}
	full, err := e.ledger.PartnerConfig(context.Background(), prog, good.Code)
	if err != nil || full.Credentials != "top-secret" {
		t.Fatalf("partner config: %v, want the secret for the worker", err)
	}
	if _, err := e.ledger.Conversion(context.Background(), prog, member,
		"0192f000-0000-7000-8000-000000000000"); core.KindOf(err) != core.NotFound {
		t.Fatalf("unknown conversion: %v, want not_found", err)
	}
	e.check()
}

// TestReconcileReportsMismatch: a conversion we settled as refused that
// the partner says it credited is reported, and left as it is.
func TestReconcileReportsMismatch(t *testing.T) {
	e := newEnv(t)
	f := newFake()
	fr := newHTTPFront(t, f, time.Second)
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint, ext.Credentials = fr.srv.URL, fakeSecret
	const member, account = "56955555555", "AR000001"
	prog := e.program(ext, member, 5000)
	f.setScript(account, refuse)
	c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
		AccountID: account})
	w := New(e.ledger, quietLog(), Options{HTTP: testHTTP, Clock: e.clock})
	if _, err := w.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The partner changes its mind behind our back.
	f.mu.Lock()
	f.answers[c.ID] = fakeAnswer{status: "confirmed", reference: "SKY-LATE"}
	f.mu.Unlock()
	rep, err := w.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Mismatches) != 1 || rep.Mismatches[0].Conversion != c.ID ||
		rep.Mismatches[0].Ours != core.ConversionRefused ||
		rep.Mismatches[0].Theirs != "confirmed" {
		t.Fatalf("reconciliation %+v, want the refused conversion reported", rep)
	}
	got := e.conversion(prog, member, c.ID)
	if got.Status != core.ConversionRefused {
		t.Fatalf("conversion became %s; a mismatch is for a person", got.Status)
	}
	// The dispute is recorded on the conversion, where the back office and
	// /metrics show it, with the other program's words.
	if got.DisputedAt == nil || !strings.Contains(got.Dispute, "confirmed (reference SKY-LATE)") {
		t.Fatalf("the disputed conversion reads %q at %v", got.Dispute, got.DisputedAt)
	}
	counts, err := e.ledger.DisputedConversions(context.Background())
	if err != nil || len(counts) != 1 || counts[0].Count != 1 || counts[0].External != ext.Code {
		t.Fatalf("disputed conversions counted %+v, %v; want 1 for %s", counts, err, ext.Code)
	}
	pending, err := e.ledger.PendingConversions(context.Background(), prog, member)
	if err != nil || len(pending) != 1 || pending[0].ID != c.ID {
		t.Fatalf("the member's conversions to look at: %+v %v, want the disputed one", pending,
			err)
	}
	e.wantBalance(prog, member, 5000, 0)
	e.check()
}

// The other program's words reach the member's page and the logs without
// control or formatting characters, and at most 100 characters long.
func TestPartnerWords(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SKY-LATE", "SKY-LATE"},
		{"AB\u202eCD\x1b[2J\nx\u200by", "ABCD[2Jxy"},
		{strings.Repeat("A", 300), strings.Repeat("A", 100) + "…"},
	} {
		if got := partnerWords(tc.in); got != tc.want {
			t.Errorf("partnerWords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestWrongCredentialsStayPending: a 401 is not a refusal of the credit.
func TestWrongCredentialsStayPending(t *testing.T) {
	e := newEnv(t)
	f := newFake()
	fr := newHTTPFront(t, f, time.Second)
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint, ext.Credentials = fr.srv.URL, "wrong"
	const member, account = "56966666666", "AR000002"
	prog := e.program(ext, member, 5000)
	c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
		AccountID: account})
	w := New(e.ledger, quietLog(), Options{HTTP: testHTTP, Clock: e.clock})
	if _, err := w.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := e.conversion(prog, member, c.ID)
	if got.Status != core.ConversionPending || got.LastError == "" {
		t.Fatalf("with wrong credentials: %s %q, want pending with the reason", got.Status,
			got.LastError)
	}
	if strings.Contains(got.LastError, "wrong") {
		t.Fatalf("the reason shows the secret: %q", got.LastError)
	}
	if !strings.Contains(got.LastError, "refused our credentials (status 401)") {
		t.Fatalf("the reason %q does not say the credentials were refused", got.LastError)
	}
	e.wantBalance(prog, member, 4000, 1000)

	// Fixed credentials settle it at the next attempt.
	ext.Credentials = fakeSecret
	e.ok(core.KindExternalUpsert, prog, ext.Code, ext)
	e.advance(time.Hour)
	if _, err := w.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionConfirmed {
		t.Fatalf("after fixing the credentials: %s", got.Status)
	}
	e.wantBalance(prog, member, 4000, 0)
	if n := f.creditedTo(account); n != 500 {
		t.Fatalf("partner credited %d, want 500", n)
	}
	e.check()
}

// TestHoldOutlivesItsTTL: a conversion pending longer than the ledger's
// longest hold keeps its points held, because each attempt renews the hold.
func TestHoldOutlivesItsTTL(t *testing.T) {
	e := newEnv(t)
	f := newFake()
	fr := newHTTPFront(t, f, time.Second)
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint, ext.Credentials = fr.srv.URL, fakeSecret
	const member, account = "56977777777", "AR000003"
	prog := e.program(ext, member, 5000)
	f.setScript(account, fail)
	c := e.convert(prog, member, core.ConvertRequest{External: ext.Code, Points: 1000,
		AccountID: account})
	w := New(e.ledger, quietLog(), Options{HTTP: testHTTP, Clock: e.clock})
	ctx := context.Background()
	// Four months of failures, one attempt a month; the sweep runs too.
	for range 4 {
		if _, err := w.Step(ctx); err != nil {
			t.Fatal(err)
		}
		e.advance(30 * 24 * time.Hour)
		if _, _, err := e.ledger.Sweep(ctx, e.clock(), 100); err != nil {
			t.Fatal(err)
		}
		e.wantBalance(prog, member, 4000, 1000)
	}
	f.setScript(account, confirm)
	if _, err := w.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionConfirmed {
		t.Fatalf("after four months: %s (%q)", got.Status, got.LastError)
	}
	e.wantBalance(prog, member, 4000, 0)
	e.check()
}

// hostileRef confirms every conversion with a reference of 30,000
// characters carrying a bidi override and an escape sequence.
type hostileRef struct{}

func (hostileRef) Deliver(context.Context, Request) Answer {
	return Answer{Outcome: Confirmed, Reference: strings.Repeat("R", 30000) + "\u202e\x1b[31m"}
}

func (p hostileRef) Status(ctx context.Context, req Request) Answer {
	return p.Deliver(ctx, req)
}

// TestPartnerReferenceKeptPrintable: the other program's reference is
// stored as a person's resolution may give one: printable, at most 200
// characters (it was stored and shown whole, escapes included); the same
// answer asked again at reconciliation is no dispute.
func TestPartnerReferenceKeptPrintable(t *testing.T) {
	e := newEnv(t)
	const member = "56988888888"
	ext := skyMiles(core.FlavourHTTP)
	ext.Endpoint = "https://127.0.0.1:9/sky"
	prog := e.program(ext, member, 5000)
	c := e.convert(prog, member, core.ConvertRequest{External: "skymiles", Points: 1000,
		AccountID: "SK000001"})
	w := New(e.ledger, quietLog(), Options{Clock: e.clock,
		Partner: func(string, *core.ExternalProgram) (Partner, error) { return hostileRef{}, nil }})
	if _, err := w.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := e.conversion(prog, member, c.ID)
	if got.Status != core.ConversionConfirmed || got.Reference != strings.Repeat("R", 200) {
		t.Fatalf("conversion %s with a reference of %d bytes, want confirmed with 200 R",
			got.Status, len(got.Reference))
	}
	e.advance(time.Hour)
	rep, err := w.Reconcile(context.Background())
	if err != nil || rep.Checked != 1 || len(rep.Mismatches) != 0 {
		t.Fatalf("reconciliation %+v, %v; want one checked, no dispute", rep, err)
	}
	e.wantBalance(prog, member, 4000, 0)

	// A confirmation whose reference is nothing printable is not one: the
	// conversion waits, as for any unclear answer.
	c = e.convert(prog, member, core.ConvertRequest{External: "skymiles", Points: 1000,
		AccountID: "SK000001"})
	w = New(e.ledger, quietLog(), Options{Clock: e.clock,
		Partner: func(string, *core.ExternalProgram) (Partner, error) {
			return fixedAnswer{Answer{Outcome: Confirmed, Reference: "\x1b\u202e\u200b\x07"}}, nil
		}})
	if _, err := w.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.conversion(prog, member, c.ID); got.Status != core.ConversionPending ||
		!strings.Contains(got.LastError, "printable reference") {
		t.Fatalf("conversion %s (%q) after a reference of control characters, want pending",
			got.Status, got.LastError)
	}
	e.wantBalance(prog, member, 3000, 1000)
}

// fixedAnswer gives the same answer to every delivery and question.
type fixedAnswer struct{ a Answer }

func (p fixedAnswer) Deliver(context.Context, Request) Answer { return p.a }

func (p fixedAnswer) Status(context.Context, Request) Answer { return p.a }
