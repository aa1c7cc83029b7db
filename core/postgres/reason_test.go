package postgres

import (
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/core"
)

// A reason longer than core.MaxReason characters is refused by the ledger
// too, for commands that reach the bus without a gateway, and nothing
// moves; one of exactly MaxReason characters (counted as characters, not
// bytes) is kept whole.
func TestLedgerBoundsReasons(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	long := strings.Repeat("ñ", core.MaxReason+1)
	wantRefused(t, f.do(core.KindCredit, "ana", f.txn(), core.Credit{Points: 10,
		Reason: long}), core.Invalid, "reason")
	f.wantBalance("ana", 0, 0, 0)

	exact := strings.Repeat("ñ", core.MaxReason)
	f.ok(core.KindCredit, "ana", core.Credit{Points: 10, Reason: exact})
	wantRefused(t, f.do(core.KindAdjust, "ana", f.txn(), core.Adjust{Points: -5,
		Reason: long}), core.Invalid, "reason")
	f.wantBalance("ana", 10, 0, 0)
	if got := f.postingsOf("ana", core.PostCredit)[0].Reason; got != exact {
		t.Fatalf("the credit's reason kept %d characters, want %d", len([]rune(got)),
			core.MaxReason)
	}
	f.check()
}
