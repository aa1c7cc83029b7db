package postgres

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// raceBatches applies the batches at once while member held is locked by
// another transaction, lets the member go once waiters of them queue on a
// lock, and returns every batch's answers. No batch may fail.
func raceBatches(t *testing.T, f *fixture, held string, waiters int,
	batches ...[]bus.Command) [][]Applied {
	t.Helper()
	release := holdMember(t, f, held)
	chans := make([]<-chan batchAnswer, len(batches))
	for i, b := range batches {
		chans[i] = applyAsync(f, b)
	}
	waitForLockWaiters(t, f, waiters)
	release()
	out := make([][]Applied, len(batches))
	for i, ch := range chans {
		select {
		case ans := <-ch:
			if ans.err != nil {
				t.Fatalf("batch %d: %v", i, ans.err)
			}
			out[i] = ans.out
		case <-time.After(30 * time.Second):
			t.Fatalf("batch %d stuck for 30s", i)
		}
	}
	return out
}

// checkRace checks the answers of racing batches against what the ledger
// stored. For each transaction id: the commands sent with the stored hash
// all get the stored answer, one of them first and every other one as a
// replay; those sent with another hash are conflicts; the postings under
// the id are the stored command's, posted once. An answer the ledger
// encoded is its result as encoding/json writes it.
func checkRace(t *testing.T, f *fixture, batches [][]bus.Command, answers [][]Applied) {
	t.Helper()
	ctx := context.Background()
	type sent struct {
		cmd bus.Command
		a   Applied
	}
	byKey := map[string][]sent{}
	for i, b := range batches {
		if len(answers[i]) != len(b) {
			t.Fatalf("batch %d: %d answers for %d commands", i, len(answers[i]), len(b))
		}
		for j, c := range b {
			a := answers[i][j]
			if len(a.Encoded) > 0 {
				if want, _ := json.Marshal(a.Result); string(want) != string(a.Encoded) {
					t.Fatalf("encoded answer\n%s\nresult\n%s", a.Encoded, want)
				}
			}
			byKey[c.TxnID] = append(byKey[c.TxnID], sent{c, a})
		}
	}
	for txn, all := range byKey {
		var commandID, hash, status string
		var body []byte
		if err := f.l.pool.QueryRow(ctx, `SELECT command_id::text, hash, status, result
			FROM commands WHERE source = $1 AND txn_id = $2`, all[0].cmd.Source,
			txn).Scan(&commandID, &hash, &status, &body); err != nil {
			t.Fatalf("%s: stored command: %v", txn, err)
		}
		var stored bus.Result
		if err := json.Unmarshal(body, &stored); err != nil {
			t.Fatal(err)
		}
		first := 0
		for _, s := range all {
			r := s.a.Result
			if s.cmd.Hash != hash {
				if r.Status != bus.StatusRejected || r.Error == nil ||
					r.Error.Kind != string(core.Conflict) {
					t.Fatalf("%s sent with another payload answered %s %+v, want a conflict",
						txn, r.Status, r.Error)
				}
				continue
			}
			if !r.Replayed {
				first++
			}
			if r.Status != status || r.Status != stored.Status ||
				!reflect.DeepEqual(r.Error, stored.Error) || !sameJSON(r.Data, stored.Data) {
				t.Fatalf("%s answered %s %+v %s, stored %s %+v %s", txn, r.Status, r.Error,
					r.Data, stored.Status, stored.Error, stored.Data)
			}
		}
		if first != 1 {
			t.Fatalf("%s: %d first answers among %d copies, want 1", txn, first, len(all))
		}
		var n, points int64
		var strangers int64
		if err := f.l.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(points), 0),
				count(*) FILTER (WHERE command_id::text <> $3)
			FROM postings WHERE source = $1 AND txn_id = $2`, all[0].cmd.Source, txn,
			commandID).Scan(&n, &points, &strangers); err != nil {
			t.Fatal(err)
		}
		if strangers > 0 {
			t.Fatalf("%s: %d postings of a command other than the stored one", txn, strangers)
		}
		var o core.Outcome
		if status == bus.StatusOK {
			if err := json.Unmarshal(stored.Data, &o); err != nil {
				t.Fatal(err)
			}
		}
		if len(o.PostingIDs) != int(n) {
			t.Fatalf("%s: %d postings, the stored outcome names %d", txn, n, len(o.PostingIDs))
		}
		if k := all[0].cmd.Kind; (k == core.KindAccrue || k == core.KindCredit) &&
			status == bus.StatusOK && points != int64(o.Points) {
			t.Fatalf("%s: postings of %d points, outcome says %d", txn, points, o.Points)
		}
	}
	f.check()
}

// Copies of one set of accruals and credits raced in different orders,
// beside per-command redemptions and holds, one id reused for another
// member, and a redemption's id reused for an accrual later: every id is
// posted once, every copy answers what the ledger stored, and the ledger
// adds up.
func TestRacingCopiesInAnyOrder(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	for _, m := range []string{"m1", "m2", "m3"} {
		f.enroll(m)
		f.ok(core.KindCredit, m, core.Credit{Points: 100, Reason: "seed"})
	}
	x1 := f.command(core.KindAccrue, "m1", f.txn(), core.Accrue{EventType: "buy",
		Amount: "10"})
	x2 := f.command(core.KindAccrue, "m2", f.txn(), core.Accrue{EventType: "buy",
		Amount: "20"})
	x3 := f.command(core.KindCredit, "m3", f.txn(), core.Credit{Points: 5, Reason: "x3"})
	redeem := f.command(core.KindRedeem, "m1", f.txn(), core.Redeem{Points: 7})
	hold := f.command(core.KindAuthorize, "m2", f.txn(), core.Authorize{Points: 3})
	// x1's id for m3, and redeem's id for an accrual of m2.
	x1other := f.command(core.KindAccrue, "m3", x1.TxnID, core.Accrue{EventType: "buy",
		Amount: "4"})
	redeemAccrual := f.command(core.KindAccrue, "m2", redeem.TxnID,
		core.Accrue{EventType: "buy", Amount: "6"})
	x4 := f.command(core.KindAccrue, "m1", f.txn(), core.Accrue{EventType: "buy",
		Amount: "2"})

	batches := [][]bus.Command{
		{x1, x2, x3},
		{x3, x2, x1other},
		{redeem, x1, x2},
		{x1, x4, hold},
		{x4, x3},
	}
	answers := raceBatches(t, f, "m1", 3, batches...)
	// Afterwards, the redemption's id for an accrual, and x1 again.
	late := []bus.Command{redeemAccrual, x1}
	out, err := f.l.ApplyBatch(context.Background(), late)
	if err != nil {
		t.Fatal(err)
	}
	checkRace(t, f, append(batches, late), append(answers, out))
}

// A redelivery of a batch's accrual while that batch waits on another of
// its members: whichever records the id first, the other answers it as a
// replay, and the points are posted once.
func TestRedeliveryOverlapsASlowBatch(t *testing.T) {
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	for _, m := range []string{"m1", "m2"} {
		f.enroll(m)
	}
	x := f.command(core.KindAccrue, "m1", f.txn(), core.Accrue{EventType: "buy",
		Amount: "10"})
	y := f.command(core.KindAccrue, "m2", f.txn(), core.Accrue{EventType: "buy",
		Amount: "3"})
	release := holdMember(t, f, "m2")
	slow := applyAsync(f, []bus.Command{x, y})
	waitForLockWaiters(t, f, 1)
	// The copy either goes through before the slow batch locks m1, or
	// waits for it.
	quick := applyAsync(f, []bus.Command{x})
	var first batchAnswer
	done := false
	for !done && lockWaiters(t, f) < 2 {
		select {
		case first = <-quick:
			done = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	release()
	if !done {
		first = <-quick
	}
	second := <-slow
	if first.err != nil || second.err != nil {
		t.Fatalf("copy: %v; slow batch: %v", first.err, second.err)
	}
	checkRace(t, f, [][]bus.Command{{x}, {x, y}}, [][]Applied{first.out, second.out})
	f.wantBalance("m1", 10, 0, 0)
	f.wantBalance("m2", 3, 0, 0)
}

// lockWaiters is how many backends of the fixture's database wait for a
// lock.
func lockWaiters(t *testing.T, f *fixture) int {
	t.Helper()
	var n int
	if err := f.l.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
