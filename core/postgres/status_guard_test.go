package postgres

import (
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A status asked of a merged account (a line ported out after its points
// joined the customer's other account) is refused rather than applied to
// the survivor; the survivor is changed by its own reference.
func TestStatusOfAMergedReferenceIsRefused(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("line-1")
	f.enroll("line-2")
	f.ok(core.KindCredit, "line-1", core.Credit{Points: 300, Reason: "welcome"})
	f.ok(core.KindCredit, "line-2", core.Credit{Points: 200, Reason: "welcome"})
	f.ok(core.KindMerge, "line-1", core.Merge{Into: "line-2"})
	for _, kind := range []string{core.KindSuspend, core.KindClose} {
		r := f.do(kind, "line-1", f.txn(), core.StatusChange{Reason: "ported out"})
		if r.Error == nil || r.Error.Kind != string(core.Conflict) ||
			!strings.Contains(r.Error.Message, `merged into "line-2"`) {
			t.Fatalf("%s of the merged line-1: %s %+v, want a conflict naming line-2", kind,
				r.Status, r.Error)
		}
	}
	f.wantBalance("line-2", 500, 0, 0)
	if v := wantView(t, f, "line-2"); v.Status != "active" {
		t.Fatalf("the survivor is %s after refusals asked of line-1", v.Status)
	}
	bound := core.Points(10)
	f.refused(core.KindSuspend, "line-2", core.StatusChange{Reason: "x", MaxForfeit: &bound},
		core.Invalid)
	f.ok(core.KindSuspend, "line-2", core.StatusChange{Reason: "fraud review"})
	if v := wantView(t, f, "line-2"); v.Status != "suspended" {
		t.Fatalf("the survivor is %s after its own suspension", v.Status)
	}
	f.check()
}
