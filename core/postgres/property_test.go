package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// TestLedgerProperties drives the ledger with random sequences of commands,
// some of them sent at the same time, clock jumps with sweeps, and replays,
// and checks the ledger's invariants after every step.
func TestLedgerProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		prog := core.Program{
			NegativeBalance: rapid.SampledFrom([]string{core.NegativeForbid,
				core.NegativeAllow}).Draw(rt, "negative_balance"),
			PendingDays:    rapid.SampledFrom([]int{0, 0, 0, 1, 3}).Draw(rt, "pending_days"),
			HoldTTLSeconds: 3600,
		}
		if rapid.Bool().Draw(rt, "program_expiry") {
			prog.ExpiryUnit = core.ExpiryDays
			prog.ExpiryLength = rapid.IntRange(1, 40).Draw(rt, "expiry_days")
		}
		r := &propRun{f: newFixture(rt, prog), policy: prog.NegativeBalance,
			members: []string{"m0", "m1", "m2"}, owner: map[string]string{}}
		for _, m := range r.members {
			r.f.enroll(m)
			n := rapid.IntRange(2000, 5000).Draw(rt, "opening_credit")
			c := r.f.command(core.KindCredit, m, r.f.txn(),
				core.Credit{Points: core.Points(n), Reason: "opening"})
			r.record(rt, c, r.f.apply(c))
		}
		steps := rapid.IntRange(1, 30).Draw(rt, "steps")
		for range steps {
			swept := false
			switch rapid.IntRange(0, 9).Draw(rt, "step") {
			case 0, 1, 2, 3, 4:
				c := r.gen(rt)
				r.record(rt, c, r.f.apply(c))
			case 5, 6:
				r.concurrent(rt, false)
			case 7:
				r.advance(rt)
				swept = true
			case 8:
				r.replay(rt)
			case 9:
				r.concurrent(rt, true)
			}
			r.invariants(rt, swept)
		}
	})
}

// propRun is what one random sequence has sent so far.
type propRun struct {
	f        *fixture
	policy   string
	members  []string
	sent     []sentCommand
	postings []int64           // ids of postings that applied commands made
	okTxns   []string          // txn ids of applied commands
	holds    []string          // txn ids of approved authorizations
	owner    map[string]string // txn id or posting id -> the member of its command
}

type sentCommand struct {
	cmd bus.Command
	res bus.Result
}

// gen draws one command. Spending amounts are kept small next to what is
// earned, so that most commands apply rather than fail for lack of points.
func (r *propRun) gen(t *rapid.T) bus.Command {
	f := r.f
	m := rapid.SampledFrom(r.members).Draw(t, "member")
	pts := func(label string, hi int) core.Points {
		return core.Points(rapid.IntRange(1, hi).Draw(t, label))
	}
	// owner picks, nine times out of ten, the member a hold or posting
	// belongs to; otherwise the random one (the ledger must say not_found).
	owner := func(of string) string {
		if rapid.IntRange(0, 9).Draw(t, "owner") > 0 {
			return of
		}
		return m
	}
	switch op := rapid.IntRange(0, 11).Draw(t, "op"); op {
	case 0:
		amount := fmt.Sprintf("%d.%02d", rapid.IntRange(0, 3000).Draw(t, "amount"),
			rapid.IntRange(0, 99).Draw(t, "cents"))
		return f.command(core.KindAccrue, m, f.txn(), core.Accrue{EventType: "topup",
			Amount: amount})
	case 1, 2:
		in := core.Credit{Points: pts("points", 2000), Reason: "bonus"}
		if days := rapid.IntRange(0, 60).Draw(t, "credit_expiry_days"); days > 0 {
			exp := f.l.Clock().Add(time.Duration(days) * 24 * time.Hour)
			in.ExpiresAt = &exp
		}
		return f.command(core.KindCredit, m, f.txn(), in)
	case 3:
		return f.command(core.KindRedeem, m, f.txn(), core.Redeem{Points: pts("points", 800)})
	case 4:
		ttl := rapid.SampledFrom([]int{0, 60, 86400}).Draw(t, "ttl")
		return f.command(core.KindAuthorize, m, f.txn(),
			core.Authorize{Points: pts("points", 600), TTLSeconds: ttl})
	case 5, 6:
		if len(r.holds) == 0 {
			break
		}
		h := rapid.SampledFrom(r.holds).Draw(t, "hold")
		if op == 6 {
			return f.command(core.KindRelease, owner(r.owner[h]), f.txn(),
				core.Release{HoldTxnID: h})
		}
		p := core.Points(rapid.IntRange(0, 650).Draw(t, "capture_points"))
		return f.command(core.KindCapture, owner(r.owner[h]), f.txn(),
			core.Capture{HoldTxnID: h, Points: p})
	case 7, 8:
		if len(r.postings) == 0 {
			break
		}
		in := core.Reverse{Reason: "refund"}
		var of string
		if rapid.Bool().Draw(t, "by_txn") {
			in.OriginalTxnID = rapid.SampledFrom(r.okTxns).Draw(t, "original_txn")
			of = r.owner[in.OriginalTxnID]
		} else {
			in.PostingID = rapid.SampledFrom(r.postings).Draw(t, "posting")
			of = r.owner[fmt.Sprint(in.PostingID)]
		}
		return f.command(core.KindReverse, owner(of), f.txn(), in)
	case 9:
		p := core.Points(rapid.IntRange(-800, 1500).Filter(func(n int) bool { return n != 0 }).
			Draw(t, "adjust_points"))
		return f.command(core.KindAdjust, m, f.txn(), core.Adjust{Points: p, Reason: "fix"})
	case 10:
		to := rapid.SampledFrom(r.members).Filter(func(s string) bool { return s != m }).
			Draw(t, "to")
		return f.command(core.KindTransfer, m, f.txn(),
			core.Transfer{To: to, Points: pts("points", 800)})
	}
	return f.command(core.KindRedeem, m, f.txn(), core.Redeem{Points: pts("points", 200)})
}

// record keeps a command's first result and checks it is a sane answer.
func (r *propRun) record(t *rapid.T, c bus.Command, res bus.Result) {
	t.Helper()
	r.sent = append(r.sent, sentCommand{c, res})
	switch res.Status {
	case bus.StatusOK:
		o := outcomeOf(t, res)
		if r.policy == core.NegativeForbid && o.Balance.Available < 0 {
			t.Fatalf("%s: balance %+v under forbid", c.Kind, o.Balance)
		}
		r.postings = append(r.postings, o.PostingIDs...)
		r.okTxns = append(r.okTxns, c.TxnID)
		r.owner[c.TxnID] = c.Member
		for _, id := range o.PostingIDs {
			r.owner[fmt.Sprint(id)] = c.Member
		}
		if c.Kind == core.KindAuthorize {
			r.holds = append(r.holds, c.TxnID)
		}
	case bus.StatusRejected:
		switch core.ErrorKind(res.Error.Kind) {
		case core.Invalid, core.NotFound, core.Conflict, core.Insufficient:
		default:
			t.Fatalf("%s refused with kind %s: %+v", c.Kind, res.Error.Kind, res.Error)
		}
	default:
		t.Fatalf("%s: status %q", c.Kind, res.Status)
	}
}

// concurrent sends 2-4 commands at once, each in a batch of its own, and
// with sweep also runs a sweep at the current time alongside them.
func (r *propRun) concurrent(t *rapid.T, sweep bool) {
	n := rapid.IntRange(2, 4).Draw(t, "concurrent")
	cmds := make([]bus.Command, n)
	for i := range cmds {
		cmds[i] = r.gen(t)
	}
	res := make([]bus.Result, n)
	errs := make([]error, n+1)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cmds {
		wg.Go(func() {
			<-start
			out, err := r.f.l.ApplyBatch(context.Background(), []bus.Command{cmds[i]})
			if err != nil {
				errs[i] = fmt.Errorf("%s %s: %w", cmds[i].Kind, cmds[i].TxnID, err)
				return
			}
			res[i] = out[0].Result
		})
	}
	if sweep {
		wg.Go(func() {
			<-start
			_, _, errs[n] = r.f.l.Sweep(context.Background(), r.f.l.Clock(), 2)
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent step: %v", err)
		}
	}
	for i := range cmds {
		r.record(t, cmds[i], res[i])
	}
}

// advance moves the clock forward and sweeps; a second sweep at the same
// instant must find nothing left to do.
func (r *propRun) advance(t *rapid.T) {
	d := rapid.SampledFrom([]time.Duration{time.Minute, time.Hour, 24 * time.Hour,
		3 * 24 * time.Hour, 20 * 24 * time.Hour, 45 * 24 * time.Hour}).Draw(t, "advance")
	r.f.setNow(r.f.l.Clock().Add(d))
	r.f.sweep(r.f.l.Clock())
	if again := r.f.sweep(r.f.l.Clock()); again.Members != 0 {
		t.Fatalf("a second sweep at the same instant visited %d members", again.Members)
	}
}

// replay sends again a few commands already sent, in one batch or at once,
// and checks that each gets its first result and the ledger does not change.
func (r *propRun) replay(t *rapid.T) {
	if len(r.sent) == 0 {
		return
	}
	n := rapid.IntRange(1, min(4, len(r.sent))).Draw(t, "replays")
	var picked []sentCommand
	for range n {
		picked = append(picked, r.sent[rapid.IntRange(0, len(r.sent)-1).Draw(t, "replay")])
	}
	before := r.snapshot(t)
	var got []bus.Result
	if rapid.Bool().Draw(t, "replay_in_parallel") {
		cmds := make([]bus.Command, len(picked))
		for i, s := range picked {
			cmds[i] = s.cmd
		}
		got = r.f.parallel(cmds...)
	} else {
		cmds := make([]bus.Command, len(picked))
		for i, s := range picked {
			cmds[i] = s.cmd
		}
		out, err := r.f.l.ApplyBatch(context.Background(), cmds)
		if err != nil {
			t.Fatalf("replay batch: %v", err)
		}
		for _, a := range out {
			got = append(got, a.Result)
		}
	}
	for i, s := range picked {
		a, b := s.res, got[i]
		if a.Status != b.Status || !sameJSON(a.Data, b.Data) || (a.Error == nil) != (b.Error == nil) ||
			(a.Error != nil && *a.Error != *b.Error) || !b.Replayed {
			t.Fatalf("replay of %s %s: %+v, first result %+v", s.cmd.Kind, s.cmd.TxnID, b, a)
		}
	}
	if after := r.snapshot(t); after != before {
		t.Fatalf("replays changed the ledger:\n%s\n%s", before, after)
	}
}

// snapshot describes the program's ledger in one comparable string.
func (r *propRun) snapshot(t *rapid.T) string {
	var s string
	err := r.f.l.Pool().QueryRow(context.Background(), `SELECT concat_ws(' | ',
			(SELECT string_agg(concat_ws(',', m.customer_ref, m.status, m.available, m.pending,
				m.held), ';' ORDER BY m.customer_ref) FROM members m WHERE m.program_id = p.id),
			(SELECT count(*) || ' postings ' || coalesce(sum(points), 0) FROM postings
				WHERE program_id = p.id),
			(SELECT count(*) || ' lots ' || coalesce(sum(l.remaining), 0) || ' ' ||
				coalesce(sum(l.held), 0) FROM lots l JOIN members m ON m.id = l.member_id
				WHERE m.program_id = p.id),
			(SELECT string_agg(h.status || h.captured, ',' ORDER BY h.id) FROM holds h
				JOIN members m ON m.id = h.member_id WHERE m.program_id = p.id),
			(SELECT count(*) || ' events' FROM outbox WHERE body->>'program' = p.code))
		FROM programs p WHERE p.code = $1`, r.f.prog).Scan(&s)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return s
}

// invariants checks the ledger after a step: the ledger's own check, and
// per member that the figures match the lots and the open holds.
func (r *propRun) invariants(t *rapid.T, swept bool) {
	t.Helper()
	r.f.check()
	rows, err := r.f.l.Pool().Query(context.Background(), `SELECT m.customer_ref, m.available,
			m.held, m.pending,
			coalesce(sum(l.remaining), 0), coalesce(sum(l.held), 0),
			coalesce(sum(l.remaining) FILTER (WHERE l.pending), 0),
			coalesce(min(l.remaining), 0), coalesce(min(l.remaining - l.held), 0),
			count(*) FILTER (WHERE l.remaining > l.original),
			count(*) FILTER (WHERE l.remaining > l.held AND l.expires_at <= $2),
			count(*) FILTER (WHERE l.pending AND l.remaining > 0 AND l.spendable_from <= $2),
			(SELECT coalesce(sum(h.amount), 0) FROM holds h
				WHERE h.member_id = m.id AND h.status = 'open'),
			(SELECT count(*) FROM holds h
				WHERE h.member_id = m.id AND h.status = 'open' AND h.expires_at <= $2)
		FROM members m JOIN programs p ON p.id = m.program_id
		LEFT JOIN lots l ON l.member_id = m.id
		WHERE p.code = $1 GROUP BY m.id ORDER BY m.customer_ref`, r.f.prog, r.f.l.Clock())
	if err != nil {
		t.Fatalf("read figures: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ref string
		var avail, held, pending, lotsRem, lotsHeld, lotsPending, minRem, minFree int64
		var over, dueLots, dueMature, openHeld, dueHolds int64
		if err := rows.Scan(&ref, &avail, &held, &pending, &lotsRem, &lotsHeld, &lotsPending,
			&minRem, &minFree, &over, &dueLots, &dueMature, &openHeld, &dueHolds); err != nil {
			t.Fatalf("scan figures: %v", err)
		}
		what := fmt.Sprintf("%s: available %d held %d pending %d; lots remaining %d held %d "+
			"pending %d; open holds %d", ref, avail, held, pending, lotsRem, lotsHeld,
			lotsPending, openHeld)
		switch {
		case minRem < 0 || minFree < 0 || over > 0:
			t.Fatalf("%s: a lot is negative, over-reserved or above its original", what)
		case r.policy == core.NegativeForbid && avail < 0:
			t.Fatalf("%s: negative available under forbid", what)
		case max(avail, 0)+held+pending != lotsRem:
			t.Fatalf("%s: available + held + pending differs from the lots", what)
		case held != lotsHeld || held != openHeld:
			t.Fatalf("%s: held differs from the lots' or the open holds'", what)
		case pending != lotsPending:
			t.Fatalf("%s: pending differs from the pending lots", what)
		case swept && (dueLots > 0 || dueMature > 0 || dueHolds > 0):
			t.Fatalf("%s: after a sweep, %d lots to expire, %d to mature, %d holds to end",
				what, dueLots, dueMature, dueHolds)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read figures: %v", err)
	}
}
