package postgres

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// late19Earn is an accrual of amount dated at, as a command of its own.
func (f *fixture) late19Earn(ref, amount string, at time.Time) bus.Command {
	c := f.command(core.KindAccrue, ref, f.txn(), core.Accrue{EventType: "bill_paid",
		Amount: amount})
	c.OccurredAt = at
	c.Seal()
	return c
}

// late19Points is the points an applied accrual earned.
func late19Points(t *testing.T, a Applied) core.Points {
	t.Helper()
	if a.Result.Status != bus.StatusOK {
		t.Fatalf("%s %s: %s %+v", a.Result.Kind, a.Result.TxnID, a.Result.Status, a.Result.Error)
	}
	var o core.Outcome
	_ = json.Unmarshal(a.Result.Data, &o)
	return o.Points
}

// Several rate changes in one instant leave the last in force from that
// instant; an accrual dated exactly at it earns the last, one a microsecond
// before earns the rate before. A change of rounding alone is a change of
// rate; sending the same rate again is none.
func TestLate19RateChangesInOneInstant(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	f.enroll("ana")
	change := f.now.Add(time.Hour)
	f.setNow(change)
	for _, r := range []struct {
		rate string
		rnd  core.Rounding
	}{{"2", core.RoundDown}, {"5", core.RoundDown}, {"3", core.RoundDown},
		{"3", core.RoundUp}, {"3", core.RoundUp}} {
		f.ok(core.KindProgramUpsert, "", core.Program{Name: "Test program",
			PointsPerUnit: r.rate, AccrualRounding: r.rnd})
	}
	var rows int64
	if err := f.l.pool.QueryRow(context.Background(), `SELECT count(*) FROM program_rates
		WHERE program_id = (SELECT id FROM programs WHERE code = $1)`, f.prog).Scan(
		&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 2 {
		t.Fatalf("%d rate rows; want 2 (the first since ever, the last from the change)", rows)
	}
	f.setNow(change.Add(time.Hour))
	cases := []struct {
		at   time.Time
		want core.Points
	}{
		{change.Add(-time.Microsecond), 10}, // 10.5 at 1, down
		{change, 32},                        // 10.5 at 3, up
		{change.Add(time.Microsecond), 32},
	}
	for _, c := range cases {
		out, err := f.l.ApplyBatch(context.Background(),
			[]bus.Command{f.late19Earn("ana", "10.5", c.at)})
		if err != nil {
			t.Fatal(err)
		}
		if got := late19Points(t, out[0]); got != c.want {
			t.Errorf("accrual at %s: %d points, want %d", c.at.Format(time.RFC3339Nano),
				got, c.want)
		}
	}
	f.wantBalance("ana", 10+32+32, 0, 0)
	f.check()
}

// A program whose rate history is missing (a program made before migration
// 0026 whose rows were lost) earns its present rate, whatever the date.
func TestLate19ProgramWithoutRateRowsEarnsItsRate(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "2"})
	f.enroll("ana")
	if _, err := f.l.pool.Exec(context.Background(), `DELETE FROM program_rates
		WHERE program_id = (SELECT id FROM programs WHERE code = $1)`, f.prog); err != nil {
		t.Fatal(err)
	}
	out, err := f.l.ApplyBatch(context.Background(), []bus.Command{
		f.late19Earn("ana", "10", f.now.Add(-24*time.Hour)), f.late19Earn("ana", "10", f.now)})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out {
		if got := late19Points(t, a); got != 20 {
			t.Fatalf("accrual: %d points, want 20", got)
		}
	}
	f.check()
}

// A partner's refund dated on the day of the purchase it returns takes back
// what that purchase earned at that day's rate, after the rate changed.
func TestLate19ClawbackDatedAtThePurchase(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1", AccrualRounding: core.RoundDown})
	shop := partnerCmds{f: f, source: "partner:shop-" + f.prog}
	f.enroll("ana")
	day1 := f.now
	buy := func() {
		t.Helper()
		r := shop.do(core.KindAccrue, "ana", f.txn(), core.Accrue{
			EventType: core.EventPartnerPurchase, Amount: "100",
			Partner: partnerOf(shop.source)})
		if r.Status != bus.StatusOK {
			t.Fatal(r.Error)
		}
	}
	buy()
	f.setNow(day1.Add(24 * time.Hour))
	f.ok(core.KindProgramUpsert, "", core.Program{Name: "Test program", PointsPerUnit: "5",
		AccrualRounding: core.RoundDown})
	f.setNow(day1.Add(48 * time.Hour))
	buy()
	f.wantBalance("ana", 600, 0, 0)
	c := f.as(shop.source, core.KindPartnerClawback, "ana", f.txn(),
		core.PartnerClawback{Amount: "100"})
	c.OccurredAt = day1
	c.Seal()
	if r := f.apply(c); r.Status != bus.StatusOK {
		t.Fatal(r.Error)
	}
	f.wantBalance("ana", 500, 0, 0)
	f.check()
}

// A rate change and an accrual in one batch: the accrual, dated at the
// change (or after it: REST takes occurred_at up to 5 minutes ahead),
// earns the new rate alone but the old one in the batch, where the run
// kept the program it read before the change.
func TestLate19RateChangeAndAccrualInOneBatch(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 1, Reason: "warm the run's reads"})
	f.setNow(f.now.Add(time.Hour))
	upsert := f.command(core.KindProgramUpsert, "", f.txn(), core.Program{
		Name: "Test program", PointsPerUnit: "3"})
	after := f.late19Earn("ana", "100", f.now.Add(time.Minute))
	out, err := f.l.ApplyBatch(context.Background(), []bus.Command{upsert, after})
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Result.Status != bus.StatusOK {
		t.Fatalf("upsert: %+v", out[0].Result.Error)
	}
	inBatch := late19Points(t, out[1])
	alone, err := f.l.ApplyBatch(context.Background(),
		[]bus.Command{f.late19Earn("ana", "100", f.now.Add(time.Minute))})
	if err != nil {
		t.Fatal(err)
	}
	if a := late19Points(t, alone[0]); inBatch != a || a != 300 {
		t.Fatalf("an accrual dated after the change to 3 a unit earned %d in the change's "+
			"batch and %d alone; want 300 both", inBatch, a)
	}
	f.check()
}
