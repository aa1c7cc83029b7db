package postgres

import (
	"context"
	"strings"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// "12.990" pesos, twelve thousand nine hundred and ninety written the
// Chilean way, earned twelve points: an accrual or a purchase refund with
// more fraction digits than the currency (or cents) have is refused,
// alone and in a batch, and nothing is posted.
func TestAmountWithThousandsPointRefused(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", Currency: "CLP"})
	f.enroll("ana")
	for _, amount := range []string{"12.990", "12990.505", "-0"} {
		r := f.do(core.KindAccrue, "ana", f.txn(), core.Accrue{EventType: "bill_paid",
			Amount: amount})
		want := "12990"
		if amount == "-0" {
			want = "negative"
		}
		if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Field != "amount" ||
			!strings.Contains(r.Error.Message, want) {
			t.Fatalf("accrual of %s CLP: %s %+v; want refused naming amount", amount, r.Status,
				r.Error)
		}
	}
	// In a batch of the set-based path, beside an accrual it applies.
	out, err := f.l.ApplyBatch(context.Background(), []bus.Command{
		f.command(core.KindAccrue, "ana", f.txn(), core.Accrue{EventType: "bill_paid",
			Amount: "12990"}),
		f.command(core.KindAccrue, "ana", f.txn(), core.Accrue{EventType: "bill_paid",
			Amount: "1.500"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Result.Status != bus.StatusOK || out[1].Result.Status != bus.StatusRejected {
		t.Fatalf("batch: %s then %s; want the whole amount applied, 1.500 refused",
			out[0].Result.Status, out[1].Result.Status)
	}
	f.wantBalance("ana", 12990, 0, 0)
	f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "bill_paid", Amount: "10.50"})
	f.wantBalance("ana", 13000, 0, 0)
	f.check()
}

// The simulation refuses what the accrual refuses (it answered 12 points
// for "12.990" pesos).
func TestSimulateRefusesAmountWithThousandsPoint(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", Currency: "CLP"})
	f.enroll("ana")
	_, err := f.l.Simulate(context.Background(), f.prog, SimulateEvent{Type: "bill_paid",
		Amount: "12.990", Member: "ana"})
	if de, ok := core.AsError(err); !ok || de.Field != "amount" {
		t.Fatalf("simulation of 12.990 CLP: %v; want refused naming amount", err)
	}
}
