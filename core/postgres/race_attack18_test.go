package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// TestAttack18SpendersRaceForTheSamePoints: in each round a member holds 100
// points and, all at once, a conversion, a redemption, a transfer and a
// bulk file's debit (the set-based path) each ask for 80 of them. At most
// one of them may be granted, the member never goes below zero, and the
// ledger's invariants hold after every round.
func TestAttack18SpendersRaceForTheSamePoints(t *testing.T) {
	f := newFixture(t, core.Program{})
	ext := airline("sky18", "")
	ext.MinPoints, ext.MaxPoints = 1, 100000
	f.ok(core.KindExternalUpsert, "sky18", ext)
	f.enroll("sink")
	for round := 0; round < 12; round++ {
		ref := fmt.Sprintf("r%d", round)
		f.enroll(ref)
		f.ok(core.KindCredit, ref, core.Credit{Points: 100, Reason: "seed"})

		conv := f.command(core.KindConvert, ref, f.txn(),
			core.ConvertRequest{External: "sky18", Points: 80})
		red := f.command(core.KindRedeem, ref, f.txn(), core.Redeem{Points: 80, Reason: "r"})
		xfer := f.command(core.KindTransfer, ref, f.txn(),
			core.Transfer{To: "sink", Points: 80})
		bulk := f.as("file:"+f.prog, core.KindAdjust, ref, f.txn(),
			core.Adjust{Points: -80, Reason: "bulk debit"})
		bulk.Actor = "batch:attack18"
		bulk.Seal()

		var wg sync.WaitGroup
		start := make(chan struct{})
		res := make([]bus.Result, 4)
		errs := make([]error, 4)
		for i, c := range []bus.Command{conv, red, xfer} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				out, err := f.l.ApplyBatch(context.Background(), []bus.Command{c})
				if err == nil {
					res[i] = out[0].Result
				}
				errs[i] = err
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out, err := f.l.ApplyBulk(context.Background(), []bus.Command{bulk})
			if err == nil {
				res[3] = out[0].Result
			}
			errs[3] = err
		}()
		close(start)
		wg.Wait()
		granted := 0
		for i, r := range res {
			if errs[i] != nil {
				t.Fatalf("round %d command %d: %v", round, i, errs[i])
			}
			if r.Status == bus.StatusOK {
				granted++
			} else if r.Error == nil || r.Error.Kind != string(core.Insufficient) {
				t.Errorf("round %d command %d refused with %+v, want insufficient", round, i,
					r.Error)
			}
		}
		b := f.balance(ref).Balance
		if granted != 1 || b.Available != 20 {
			t.Fatalf("round %d: %d of 4 spenders granted, balance %+v; want 1 and 20 left",
				round, granted, b)
		}
		f.check()
	}
}
