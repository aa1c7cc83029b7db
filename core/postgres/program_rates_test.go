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

// A program's flat rate changed today does not reach back: a bill paid
// before the change and reported after it earns at the rate of its day,
// one paid after the change at the new rate, in one batch as one by one.
// The rounding is part of the rate.
func TestLateAccrualEarnsAtTheRateOfItsDay(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	f.enroll("ana")
	start := f.now
	setRate := func(rate string, rounding core.Rounding) {
		t.Helper()
		f.ok(core.KindProgramUpsert, "", core.Program{Name: "Test program",
			PointsPerUnit: rate, AccrualRounding: rounding})
	}
	// From start+1h the rate is 2 a unit, rounding up; from start+2h 1 again.
	f.setNow(start.Add(time.Hour))
	setRate("2", core.RoundUp)
	f.setNow(start.Add(2 * time.Hour))
	setRate("1", core.RoundDown)
	f.setNow(start.Add(3 * time.Hour))

	bill := func(at time.Time) bus.Command {
		c := f.command(core.KindAccrue, "ana", f.txn(), core.Accrue{EventType: "bill_paid",
			Amount: "10.50"})
		c.OccurredAt = at
		c.Seal()
		return c
	}
	days := []time.Time{start.Add(-48 * time.Hour), start.Add(90 * time.Minute),
		start.Add(150 * time.Minute)}
	want := []core.Points{10, 21, 10}
	// In one batch.
	var batch []bus.Command
	for _, at := range days {
		batch = append(batch, bill(at))
	}
	out, err := f.l.ApplyBatch(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		var got core.Outcome
		_ = json.Unmarshal(o.Result.Data, &got)
		if o.Result.Status != bus.StatusOK || got.Points != want[i] {
			t.Errorf("bill %d of %s in a batch: %s %+v, %d points; want %d", i,
				days[i].Format(time.RFC3339), o.Result.Status, o.Result.Error, got.Points, want[i])
		}
	}
	// One by one.
	for i, at := range days {
		r := f.apply(bill(at))
		var got core.Outcome
		_ = json.Unmarshal(r.Data, &got)
		if r.Status != bus.StatusOK || got.Points != want[i] {
			t.Errorf("bill %d alone: %s %+v, %d points; want %d", i, r.Status, r.Error,
				got.Points, want[i])
		}
	}
	f.wantBalance("ana", 2*(10+21+10), 0, 0)
	// The program reads the rate in force now.
	p, err := f.l.Program(context.Background(), f.prog)
	if err != nil || p.PointsPerUnit != "1" || p.AccrualRounding != core.RoundDown {
		t.Fatalf("program %+v %v: want the rate 1, down", p, err)
	}
	f.check()
}

// A program's currency is fixed once its members have postings: every
// amount read so far is in it, and a definition that leaves currency out
// (which asks for the default, CLP) used to turn a dollar program into a
// peso one, so that the next 12,990-peso bill earned 12,990 dollars'
// points. Before the first posting the currency can still be mended, and
// a definition that keeps the currency changes the rest as before.
func TestProgramCurrencyFixedOncePosted(t *testing.T) {
	f := newFixture(t, core.Program{Currency: "USD", PointsPerUnit: "1"})
	f.enroll("ana")
	// Enrolled, nothing posted yet: the currency can change, and back.
	f.ok(core.KindProgramUpsert, "", core.Program{Name: "Test program", Currency: "EUR",
		PointsPerUnit: "1"})
	f.ok(core.KindProgramUpsert, "", core.Program{Name: "Test program", Currency: "USD",
		PointsPerUnit: "1"})
	f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "bill_paid", Amount: "29.85"})
	f.wantBalance("ana", 29, 0, 0)

	for _, def := range []core.Program{{Name: "Test program", PointsPerUnit: "1"},
		{Name: "Test program", Currency: "EUR", PointsPerUnit: "1"}} {
		r := f.do(core.KindProgramUpsert, "", f.txn(), def)
		if r.Status != bus.StatusRejected || r.Error == nil || r.Error.Kind != "conflict" ||
			r.Error.Field != "currency" || !strings.Contains(r.Error.Message, "USD") {
			t.Fatalf("currency %q on a program with postings in USD: %s %+v; want a "+
				"conflict on currency naming USD", def.Currency, r.Status, r.Error)
		}
	}
	// The program is as it was, in all its fields.
	p, err := f.l.Program(context.Background(), f.prog)
	if err != nil || p.Currency != "USD" || p.Name != "Test program" {
		t.Fatalf("program after the refusals: %+v %v; want USD as before", p, err)
	}
	// Keeping the currency, the rest changes.
	f.ok(core.KindProgramUpsert, "", core.Program{Name: "Dollars", Currency: "USD",
		PointsPerUnit: "2"})
	f.ok(core.KindAccrue, "ana", core.Accrue{EventType: "bill_paid", Amount: "10"})
	f.wantBalance("ana", 49, 0, 0)
	if p, err := f.l.Program(context.Background(), f.prog); err != nil || p.Name != "Dollars" {
		t.Fatalf("program after a change keeping USD: %+v %v", p, err)
	}
	f.check()
}
