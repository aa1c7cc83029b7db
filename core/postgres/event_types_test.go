package postgres

import (
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// On a program with rules, an event type that no rule names (a typo in a
// billing feed) is refused naming the field type and listing the types there
// are, rather than answered ok with no points; a rule for any type ("*")
// names every type. A partner's purchase that no rule names earns the
// program's flat rate, as the partner API promises; once a rule names it,
// that rule decides.
func TestEventTypesOfAProgramWithRules(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "0.01"})
	f.enroll("ana")
	f.putRule(perUnit("bill", "0.1", core.RoundDown))
	f.putRule(core.Rule{Code: "top", EventType: "top_up",
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 5}})

	c := f.command(core.KindAccrue, "ana", f.txn(), core.Accrue{EventType: "bill_payed",
		Amount: "100"})
	r := f.apply(c)
	wantRefused(t, r, core.Invalid, "type")
	if !strings.Contains(r.Error.Message, "bill_paid, top_up") {
		t.Fatalf("the refusal %q does not list the types the rules name", r.Error.Message)
	}
	f.wantBalance("ana", 0, 0, 0)
	if got, _ := f.earn("ana", "bill_paid", "100", f.now); got != 10 {
		t.Fatalf("bill_paid earned %d, want 10", got)
	}

	// A partner's purchase of 1250.50 at the flat 0.01 a unit: 12 points.
	p := partnerCmds{f: f, source: core.PartnerSource("cafe-" + f.prog)}
	o := outcomeOf(t, p.do(core.KindAccrue, "ana", f.txn(), core.Accrue{
		EventType: core.EventPartnerPurchase, Amount: "1250.50", Partner: "cafe-" + f.prog}))
	if o.Points != 12 {
		t.Fatalf("a partner purchase earned %d, want 12 at the program's flat rate", o.Points)
	}
	// The flat rate is the partner's: another caller sending the type, with
	// or without a partner named, is held to the rules, which do not name it.
	for _, partner := range []string{"", "cafe-" + f.prog} {
		wantRefused(t, f.do(core.KindAccrue, "ana", f.txn(), core.Accrue{
			EventType: core.EventPartnerPurchase, Amount: "1250.50", Partner: partner}),
			core.Invalid, "type")
	}
	f.wantBalance("ana", 10+12, 0, 0)
	// A rule for partner purchases decides from then on.
	f.putRule(core.Rule{Code: "partner", EventType: core.EventPartnerPurchase,
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 50}})
	o = outcomeOf(t, p.do(core.KindAccrue, "ana", f.txn(), core.Accrue{
		EventType: core.EventPartnerPurchase, Amount: "1250.50", Partner: "cafe-" + f.prog}))
	if o.Points != 50 {
		t.Fatalf("a partner purchase earned %d, want 50 by its rule", o.Points)
	}
	// A rule for any type names every type: the typo is accepted, and earns
	// what that rule gives.
	f.putRule(core.Rule{Code: "any", EventType: "*",
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 1}})
	if r := f.apply(f.command(core.KindAccrue, "ana", f.txn(), core.Accrue{
		EventType: "bill_payed", Amount: "100"})); r.Status != bus.StatusOK {
		t.Fatalf("with a rule for any type, bill_payed answered %s %+v", r.Status, r.Error)
	}
	f.wantBalance("ana", 10+12+50+1, 0, 0)
	f.check()
}
