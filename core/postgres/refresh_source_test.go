package postgres

import (
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// A hold that ran out is released, and a lot past its expiry expires, by
// the next command that touches the member when no sweep came first: the
// statement shows those postings as the sweep's (its source, no
// transaction id), not as the command's, which keeps only its own.
func TestCatchUpPostingsAreNotTheCommands(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("ana")
	f.ok(core.KindCredit, "ana", core.Credit{Points: 100, Reason: "seed"})
	soon := f.now.Add(2 * time.Hour)
	f.ok(core.KindCredit, "ana", core.Credit{Points: 30, Reason: "short", ExpiresAt: &soon})
	p := partnerCmds{f: f, source: "partner:cafe-" + f.prog}
	outcomeOf(t, p.do(core.KindAuthorize, "ana", f.prog+"-pay",
		core.Authorize{Points: 40, TTLSeconds: 600}))

	f.setNow(f.now.Add(3 * time.Hour))
	txn := f.txn()
	r := f.do(core.KindRedeem, "ana", txn, core.Redeem{Points: 10, Reason: "coffee"})
	outcomeOf(t, r)
	f.wantBalance("ana", 90, 0, 0)

	for _, kind := range []string{core.PostRelease, core.PostExpiry} {
		ps := f.postingsOf("ana", kind)
		if len(ps) != 1 || ps[0].Source != sweepSource || ps[0].TxnID != "" {
			t.Fatalf("%s postings %+v: want one of source %s with no transaction id", kind,
				ps, sweepSource)
		}
	}
	red := f.postingsOf("ana", core.PostRedemption)
	if len(red) != 1 || red[0].Source != "test" || red[0].TxnID != txn || red[0].Points != -10 {
		t.Fatalf("redemption postings %+v: want the command's own, -10", red)
	}
	f.check()
}
