package postgres

import (
	"context"
	"testing"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// A debit reads a member's lots a page at a time (usableLots): one that
// needs more than the first page, or finds the first page held, still
// takes the soonest-expiring free points, all of them.
func TestDebitsReadLotsPastTheFirstPage(t *testing.T) {
	const lots = 150
	f := newFixture(t, core.Program{})
	bar := partnerCmds{f: f, source: "partner:bar-" + f.prog}
	f.enroll("ana")
	// 150 lots of one point, each expiring a day after the one before.
	var cmds []bus.Command
	for i := range lots {
		exp := f.now.AddDate(0, 0, 30+i)
		cmds = append(cmds, f.command(core.KindCredit, "ana", f.txn(),
			core.Credit{Points: 1, Reason: "seed", ExpiresAt: &exp}))
	}
	out, err := f.l.ApplyBatch(context.Background(), cmds)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, lots)
	for i, a := range out {
		ids[i] = lotOf(t, outcomeOf(t, a.Result))
	}

	// A hold of the first 70 points: more than a page.
	outcomeOf(t, bar.do(core.KindAuthorize, "ana", f.prog+"-pay", core.Authorize{Points: 70}))
	// A redemption of 50: the first page is all held.
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 50, Reason: "tv"})
	f.wantBalance("ana", lots-120, 0, 70)
	for i, id := range ids {
		if l := f.lot(id); (i < 70) != (l.Held == 1) || (i < 120) != (l.Remaining-l.Held == 0) {
			t.Fatalf("lot %d (expiring %d days on): remaining %d, held %d; want the 70 "+
				"soonest held and the next 50 spent", i, 30+i, l.Remaining, l.Held)
		}
	}
	// More than the member has, a page or not: refused, nothing taken.
	f.refused(core.KindRedeem, "ana", core.Redeem{Points: 31, Reason: "tv"}, core.Insufficient)
	f.ok(core.KindRedeem, "ana", core.Redeem{Points: 30, Reason: "tv"})
	f.wantBalance("ana", 0, 0, 70)
	f.check()
}
