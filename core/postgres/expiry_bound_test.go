package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// A credit expiring on 9999-12-31 is refused naming the field it came in,
// and the credit beside it in the same batch posts; the member's balance
// and lots stay readable. An expiry just before core.LatestExpiry posts.
func TestFarExpiryCreditIsRefused(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("", -3*3600))
	batch := []bus.Command{
		f.command(core.KindCredit, "ana", f.txn(), core.Credit{Points: 10, Reason: "far",
			ExpiresOn: "9999-12-31"}),
		f.command(core.KindCredit, "ana", f.txn(), core.Credit{Points: 20, Reason: "far",
			ExpiresAt: &far}),
		f.command(core.KindCredit, "ana", f.txn(), core.Credit{Points: 5, Reason: "next"}),
	}
	out, err := f.l.ApplyBatch(context.Background(), batch)
	if err != nil {
		t.Fatalf("the batch failed as a whole: %v", err)
	}
	for i, field := range []string{"expires_on", "expires_at"} {
		if r := out[i].Result; r.Status == bus.StatusOK || r.Error == nil ||
			r.Error.Field != field {
			t.Errorf("credit %d answered %s %+v; want refused about %s", i, r.Status, r.Error,
				field)
		}
	}
	if r := out[2].Result; r.Status != bus.StatusOK {
		t.Fatalf("the plain credit answered %s %+v", r.Status, r.Error)
	}
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1, Reason: "late but fine",
		ExpiresOn: "2199-12-30"})
	f.wantBalance("ana", 6, 0, 0)
	if _, err := f.balance("ana").AppendJSON(nil); err != nil {
		t.Fatalf("the balance with its lots cannot be written: %v", err)
	}
	f.check()
}
