package postgres

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
)

// The set-based path reads all of a member's qualification windows in one
// statement (runQualifications), summing the part they share once. Each
// window's figure must be the one the per-command path reads on its own
// (qualification, spendQualification): windows that overlap, that do not,
// that start or end exactly on an accrual, with reversed accruals, by points
// and by spend.
func TestRunQualificationsMatchOneWindowAtATime(t *testing.T) {
	for _, basis := range []string{core.TierBasisPoints, core.TierBasisSpend} {
		t.Run(basis, func(t *testing.T) {
			checkRunQualifications(t, basis)
		})
	}
}

func checkRunQualifications(t *testing.T, basis string) {
	ctx := context.Background()
	f := newFixture(t, core.Program{PointsPerUnit: "1"})
	tiers := core.Tiers{WindowDays: 90, Basis: basis, Levels: []core.TierLevel{
		{Code: "silver", MinPoints: 500, Multiplier: "1"},
		{Code: "gold", MinPoints: 2000, Multiplier: "1"}}}
	if basis == core.TierBasisSpend {
		tiers.Levels[0].MinPoints, tiers.Levels[0].MinSpend = 0, "500"
		tiers.Levels[1].MinPoints, tiers.Levels[1].MinSpend = 0, "2000.5"
	}
	f.ok(core.KindTiersSet, "", tiers)
	now := f.l.Clock()
	length := 90 * 24 * time.Hour
	since := now.AddDate(-3, 0, 0)
	refs := []string{"q0", "q1", "q2", "q3"}
	for _, ref := range refs {
		f.ok(core.KindEnroll, ref, core.Enroll{Channel: "test", EnrolledAt: &since})
	}

	// Sixty accruals each over the last 400 days, in one batch.
	rng := rand.New(rand.NewPCG(7, uint64(len(basis))))
	var cmds []bus.Command
	for _, ref := range refs {
		for range 60 {
			at := now.Add(-time.Duration(rng.Int64N(int64(400 * 24 * time.Hour))))
			c := f.command(core.KindAccrue, ref, f.txn(), core.Accrue{EventType: "bill_paid",
				Amount: fmt.Sprintf("%d.%02d", 1+rng.IntN(300), rng.IntN(100))})
			c.OccurredAt = at
			c.Seal()
			cmds = append(cmds, c)
		}
	}
	out, err := f.l.ApplyBatch(ctx, cmds)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		if o.Result.Status != bus.StatusOK {
			t.Fatalf("accrual refused: %+v", o.Result.Error)
		}
	}

	// Reverse one accrual in six; remember every accrual's time.
	type accrual struct {
		id int64
		at time.Time
	}
	byRef := map[string][]accrual{}
	memberID := map[string]string{}
	rows, err := f.l.pool.Query(ctx, `SELECT m.customer_ref, m.id, p.id, p.occurred_at
		FROM postings p JOIN members m ON m.id = p.member_id
		JOIN programs g ON g.id = m.program_id
		WHERE g.code = $1 AND p.kind = 'accrual' ORDER BY p.id`, f.prog)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ref, id string
		var a accrual
		if err := rows.Scan(&ref, &id, &a.id, &a.at); err != nil {
			t.Fatal(err)
		}
		memberID[ref] = id
		byRef[ref] = append(byRef[ref], a)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		if len(byRef[ref]) != 60 {
			t.Fatalf("%s has %d accruals, want 60", ref, len(byRef[ref]))
		}
		for i, a := range byRef[ref] {
			if i%6 == 0 {
				f.ok(core.KindReverse, ref, core.Reverse{PostingID: a.id, Reason: "refund"})
			}
		}
	}

	// The instants: now and just before it (an accrual's window and the
	// review's), an accrual's own time, the instant its window stops
	// counting it, points between, far apart windows, and a repeat.
	var codes, qrefs []string
	var ats []time.Time
	want := 0
	for i, ref := range refs {
		acc := byRef[ref]
		set := []time.Time{now, now.Add(-20 * time.Millisecond)}
		switch i {
		case 1:
			set = append(set, acc[3].at, acc[3].at.Add(length), acc[3].at.Add(length-time.Microsecond))
		case 2:
			set = append(set, now.Add(-45*24*time.Hour), now.Add(-200*24*time.Hour),
				now.Add(-390*24*time.Hour), acc[10].at)
		case 3:
			set = []time.Time{now.Add(-300 * 24 * time.Hour), acc[20].at.Add(length), acc[20].at}
		}
		for _, at := range set {
			codes, qrefs, ats = append(codes, f.prog), append(qrefs, ref), append(ats, at)
		}
		want += len(set)
	}
	codes, qrefs, ats = append(codes, f.prog), append(qrefs, "q2"), append(ats, now)

	type key struct {
		id string
		at int64
	}
	got := map[key][2]string{}
	rows, err = f.l.pool.Query(ctx, runQualifications, codes, qrefs, ats)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var at time.Time
		var points int64
		var spend *string
		if err := rows.Scan(&id, &at, &points, &spend); err != nil {
			t.Fatal(err)
		}
		s := "-"
		if spend != nil {
			s = *spend
		}
		k := key{id, at.UnixMicro()}
		if _, seen := got[k]; seen {
			t.Fatalf("instant %s of member %s read twice", at, id)
		}
		got[k] = [2]string{fmt.Sprint(points), s}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != want {
		t.Fatalf("%d windows read, want %d", len(got), want)
	}

	tx, err := f.l.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	one := &txn{tx: tx}
	nonzero := 0
	for i := range ats {
		id := memberID[qrefs[i]]
		from := ats[i].Add(-length)
		points, err := one.qualification(ctx, id, from, ats[i])
		if err != nil {
			t.Fatal(err)
		}
		g, ok := got[key{id, ats[i].UnixMicro()}]
		if !ok {
			t.Fatalf("%s at %s: not read", qrefs[i], ats[i])
		}
		if g[0] != fmt.Sprint(points) {
			t.Errorf("%s at %s: %s points, read alone %d", qrefs[i], ats[i], g[0], points)
		}
		if points != 0 {
			nonzero++
		}
		if basis != core.TierBasisSpend {
			if g[1] != "-" {
				t.Errorf("%s at %s: spend %s in a program by points", qrefs[i], ats[i], g[1])
			}
			continue
		}
		spend, err := one.spendQualification(ctx, id, from, ats[i])
		if err != nil {
			t.Fatal(err)
		}
		r, ok := new(big.Rat).SetString(g[1])
		if !ok || r.Cmp(spend) != 0 {
			t.Errorf("%s at %s: spend %s, read alone %s", qrefs[i], ats[i], g[1],
				spend.FloatString(2))
		}
	}
	// Windows that hold nothing would agree whatever the statement did.
	if nonzero < len(ats)/2 {
		t.Fatalf("only %d of %d windows hold points", nonzero, len(ats))
	}
	f.check()
}
