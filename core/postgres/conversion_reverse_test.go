package postgres

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// convertingMember is a fixture whose member "a" holds 5000 points and can
// convert into "sky" (airline, ratio 0.5).
func convertingMember(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, core.Program{})
	f.enroll("a")
	f.ok(core.KindCredit, "a", core.Credit{Points: 5000, Reason: "welcome"})
	f.ok(core.KindExternalUpsert, "sky", airline("sky", ""))
	return f
}

// convert1000 converts 1000 of a's points into sky and returns the
// pending conversion.
func (f *fixture) convert1000() core.Conversion {
	f.t.Helper()
	r := f.do(core.KindConvert, "a", f.txn(), core.ConvertRequest{External: "sky", Points: 1000})
	var c core.Conversion
	if err := json.Unmarshal(r.Data, &c); err != nil || c.ID == "" {
		f.t.Fatalf("convert: %s %+v", r.Status, r.Error)
	}
	return c
}

// captureConversion applies the capture the worker makes when the other
// program confirms c.
func (f *fixture) captureConversion(c core.Conversion) bus.Result {
	f.t.Helper()
	cmd := f.command(core.KindCapture, "a", core.ConversionCaptureTxn(c.ID),
		core.Capture{HoldTxnID: core.ConversionHoldTxn(c.ID)})
	cmd.Source = core.SourceConversion
	cmd.Seal()
	return f.apply(cmd)
}

// TestConversionCaptureIsNotReversible: the capture of a conversion the
// other program confirmed is refused by a reversal, which names the
// conversion; the member keeps what the conversion left, and a partner
// payment's capture stays reversible.
func TestConversionCaptureIsNotReversible(t *testing.T) {
	ctx := context.Background()
	f := convertingMember(t)
	conv := f.convert1000()
	cr := f.captureConversion(conv)
	var out core.Outcome
	if err := json.Unmarshal(cr.Data, &out); cr.Status != bus.StatusOK || err != nil ||
		len(out.PostingIDs) == 0 {
		t.Fatalf("capture: %s %+v %s", cr.Status, cr.Error, cr.Data)
	}
	if _, err := f.l.FinishConversion(ctx, conv.ID, core.ConversionConfirmed, "SKY-1", "",
		f.now); err != nil {
		t.Fatal(err)
	}
	f.wantBalance("a", 4000, 0, 0)

	rev := f.do(core.KindReverse, "a", f.txn(), core.Reverse{
		PostingID: out.PostingIDs[len(out.PostingIDs)-1], Reason: "miles never arrived"})
	wantRefused(t, rev, core.Conflict, "posting_id")
	if !strings.Contains(rev.Error.Message, conv.ID) {
		t.Fatalf("the refusal %q does not name conversion %s", rev.Error.Message, conv.ID)
	}
	f.wantBalance("a", 4000, 0, 0)

	// A hold and capture of another caller is reversed as before.
	hold := f.txn()
	if r := f.do(core.KindAuthorize, "a", hold, core.Authorize{Points: 300}); r.Status != bus.StatusOK {
		t.Fatalf("authorize: %+v", r.Error)
	}
	co := f.ok(core.KindCapture, "a", core.Capture{HoldTxnID: hold})
	f.wantBalance("a", 3700, 0, 0)
	f.ok(core.KindReverse, "a", core.Reverse{PostingID: co.PostingIDs[len(co.PostingIDs)-1],
		Reason: "charged by mistake"})
	f.wantBalance("a", 4000, 0, 0)
	f.check()
}

// TestCloseWaitsForPendingConversion: a member whose conversion is pending
// cannot be closed (the close would forfeit the points the other program
// may still credit); once the conversion is settled, it can.
func TestCloseWaitsForPendingConversion(t *testing.T) {
	ctx := context.Background()
	f := convertingMember(t)
	conv := f.convert1000()
	cl := f.do(core.KindClose, "a", f.txn(), core.StatusChange{Reason: "moved away"})
	wantRefused(t, cl, core.Conflict, "member")
	if !strings.Contains(cl.Error.Message, conv.ID) {
		t.Fatalf("the refusal %q does not name conversion %s", cl.Error.Message, conv.ID)
	}
	f.wantBalance("a", 4000, 0, 1000)

	if cr := f.captureConversion(conv); cr.Status != bus.StatusOK {
		t.Fatalf("capture: %+v", cr.Error)
	}
	if _, err := f.l.FinishConversion(ctx, conv.ID, core.ConversionConfirmed, "SKY-2", "",
		f.now); err != nil {
		t.Fatal(err)
	}
	o := f.ok(core.KindClose, "a", core.StatusChange{Reason: "moved away"})
	if o.Points != -4000 {
		t.Fatalf("the close forfeited %d, want -4000: the converted 1000 are the airline's", o.Points)
	}
	f.wantBalance("a", 0, 0, 0)
	f.check()
}

// TestResolveStuckConversion: a person settles a conversion the other
// program never answered: confirmed captures its points, refused gives
// them back; a settled one cannot be resolved again, and the actor and
// reason are kept on it.
func TestResolveStuckConversion(t *testing.T) {
	f := convertingMember(t)
	convert := func() string { return f.convert1000().ID }
	resolve := func(in core.ResolveConversion, actor string) bus.Result {
		c := f.command(core.KindConversionResolve, "a", f.txn(), in)
		c.Actor = actor
		c.Seal()
		return f.apply(c)
	}
	yes, no := convert(), convert()
	f.wantBalance("a", 3000, 0, 2000)

	wantRefused(t, resolve(core.ResolveConversion{ID: yes, Outcome: "maybe",
		Reason: "x"}, "ana"), core.Invalid, "outcome")
	wantRefused(t, resolve(core.ResolveConversion{ID: yes, Outcome: "confirmed",
		Reason: "airline confirmed by phone"}, ""), core.Invalid, "actor")
	r := resolve(core.ResolveConversion{ID: yes, Outcome: "confirmed", Reference: "SKY-9",
		Reason: "airline confirmed by phone"}, "ana")
	var c core.Conversion
	if err := json.Unmarshal(r.Data, &c); r.Status != bus.StatusOK || err != nil ||
		c.Status != core.ConversionConfirmed || c.Reference != "SKY-9" ||
		!strings.Contains(c.LastError, "ana") {
		t.Fatalf("resolve confirmed: %s %+v %+v", r.Status, r.Error, c)
	}
	f.wantBalance("a", 3000, 0, 1000)
	r = resolve(core.ResolveConversion{ID: no, Outcome: "refused",
		Reason: "airline has no record"}, "ana")
	if r.Status != bus.StatusOK {
		t.Fatalf("resolve refused: %+v", r.Error)
	}
	f.wantBalance("a", 4000, 0, 0)
	wantRefused(t, resolve(core.ResolveConversion{ID: no, Outcome: "confirmed",
		Reason: "changed my mind"}, "ana"), core.Conflict, "conversion")
	f.check()
}

// TestResolveWaitsForADeliveryAndClosesAnExpiredHold: a conversion a worker
// is delivering cannot be resolved until its answer is recorded; one whose
// hold ran out (no worker renewed it) can be resolved refused, and not
// confirmed, its points being back with the member.
func TestResolveWaitsForADeliveryAndClosesAnExpiredHold(t *testing.T) {
	ctx := context.Background()
	f := convertingMember(t)
	c := f.convert1000()
	resolve := func(outcome string) bus.Result {
		cmd := f.command(core.KindConversionResolve, "a", f.txn(), core.ResolveConversion{
			ID: c.ID, Outcome: outcome, Reason: "the airline's desk"})
		cmd.Actor = "ana"
		cmd.Seal()
		return f.apply(cmd)
	}
	claimed, err := f.l.ClaimConversions(ctx, f.now, 15*time.Minute, 10)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %d, %v", len(claimed), err)
	}
	wantRefused(t, resolve(core.ConversionRefused), core.Conflict, "conversion")
	// The delivery's answer is unclear: the claim ends, the person may act.
	if err := f.l.RetryConversion(ctx, c.ID, "timeout", f.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// No worker renews the hold; past its time the sweep gives the points back.
	f.setNow(f.now.Add(core.ConversionHoldTTL + time.Hour))
	if _, _, err := f.l.Sweep(ctx, f.now, 0); err != nil {
		t.Fatal(err)
	}
	f.wantBalance("a", 5000, 0, 0)
	wantRefused(t, resolve(core.ConversionConfirmed), core.Conflict, "outcome")
	if r := resolve(core.ConversionRefused); r.Status != bus.StatusOK {
		t.Fatalf("resolve refused after the hold expired: %+v", r.Error)
	}
	got, err := f.l.Conversion(ctx, f.prog, "a", c.ID)
	if err != nil || got.Status != core.ConversionRefused {
		t.Fatalf("conversion %+v (%v), want refused", got, err)
	}
	f.wantBalance("a", 5000, 0, 0)
	f.check()
}
