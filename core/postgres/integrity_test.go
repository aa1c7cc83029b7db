package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/puntos-loyalty/puntos/core"
)

// isolatedFixture is a fixture on a fresh database of its own, for tests
// that leave broken rows behind: on the shared database they would fail
// every other test's check of the ledger.
func isolatedFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, isolatedLedger(t), core.Program{Name: "Isolated",
		PointsPerUnit: "1"})
}

// refIDs are the database ids of a member, its program and its first lot and
// the posting that made it.
type refIDs struct {
	member, program string
	posting, lot    int64
}

func (f *fixture) idsOf(ref string) refIDs {
	f.t.Helper()
	var x refIDs
	err := f.l.pool.QueryRow(context.Background(), `
		SELECT m.id::text, m.program_id::text, l.posting_id, l.id
		FROM members m JOIN programs g ON g.id = m.program_id
		JOIN lots l ON l.member_id = m.id
		WHERE g.code = $1 AND m.customer_ref = $2 ORDER BY l.id LIMIT 1`,
		f.prog, ref).Scan(&x.member, &x.program, &x.posting, &x.lot)
	if err != nil {
		f.t.Fatalf("ids of %s: %v", ref, err)
	}
	return x
}

// TestCheckNamesBrokenReferences writes, one at a time, each kind of row
// that the foreign keys dropped by migration 0015 used to refuse, and
// expects Check to name exactly the rows written so far.
func TestCheckNamesBrokenReferences(t *testing.T) {
	f := isolatedFixture(t)
	for _, ref := range []string{"alice", "bob"} {
		f.enroll(ref)
		f.ok(core.KindAccrue, ref, core.Accrue{EventType: "purchase", Amount: "10"})
	}
	f.ok(core.KindRedeem, "alice", core.Redeem{Points: 4})
	f.check() // a sound ledger, lot moves included, gives no false alarm

	ctx := context.Background()
	a, b := f.idsOf("alice"), f.idsOf("bob")
	ghost := uuid.NewString()
	var other string
	err := f.l.pool.QueryRow(ctx, `INSERT INTO programs (id, code, name)
		VALUES (gen_random_uuid(), 'other', 'Other') RETURNING id::text`).Scan(&other)
	if err != nil {
		t.Fatal(err)
	}

	// Rows of zero points, or of lots with nothing remaining, leave every
	// balance as it was: only the broken reference is left to report.
	const posting = `INSERT INTO postings (program_id, member_id, kind, points, source,
		occurred_at, recorded_at) VALUES ($1, $2, 'adjustment', 0, 'test', now(), now())
		RETURNING id`
	const lot = `INSERT INTO lots (member_id, posting_id, earned_at, spendable_from,
		original, remaining) VALUES ($1, $2, now(), now(), 5, 0) RETURNING id`
	const move = `INSERT INTO posting_lots (posting_id, lot_id, points)
		VALUES ($1, $2, 0) RETURNING $1::bigint`
	cases := []struct {
		name   string
		sql    string
		args   []any
		member string
		what   string // with %d where the new row's id goes
	}{
		{"posting of a missing member", posting, []any{a.program, ghost},
			"member " + ghost, "posting %d: its member does not exist"},
		{"posting of a missing program", posting, []any{ghost, a.member},
			"alice", "posting %d: its program " + ghost + " does not exist"},
		{"posting in another program than its member", posting, []any{other, b.member},
			"bob", "posting %d: its program " + other + " is not its member's program " +
				b.program},
		{"lot of a missing member", lot, []any{ghost, a.posting},
			"member " + ghost, "lot %d: its member does not exist"},
		{"lot of a missing posting", lot, []any{a.member, int64(9_000_001)},
			"alice", "lot %d: its posting 9000001 does not exist"},
		{"lot of another member's posting", lot, []any{b.member, a.posting},
			"bob", "lot %d: its posting " + fmt.Sprint(a.posting) + " belongs to member " +
				a.member},
		{"accrual amount of a missing posting", `INSERT INTO accrual_amounts
			(posting_id, amount) VALUES ($1, 10) RETURNING posting_id`,
			[]any{int64(9_000_002)}, "unknown member",
			"accrual amount of posting %d: the posting does not exist"},
		{"lot move of a missing posting", move, []any{int64(9_000_003), b.lot},
			"bob", "lot move of posting %d on lot " + fmt.Sprint(b.lot) +
				": the posting does not exist"},
		{"lot move on a missing lot", move, []any{b.posting, int64(9_000_004)},
			"bob", "lot move of posting %d on lot 9000004: the lot does not exist"},
	}
	var want []Violation
	for _, c := range cases {
		var id int64
		if err := f.l.pool.QueryRow(ctx, c.sql, c.args...).Scan(&id); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want = append(want, Violation{Member: c.member, What: fmt.Sprintf(c.what, id)})

		got, err := f.l.Check(ctx)
		if err != nil {
			t.Fatalf("%s: check: %v", c.name, err)
		}
		if !sameViolations(got, want) {
			t.Fatalf("after %s: check found\n%+v\nwant\n%+v", c.name, got, want)
		}
	}
}

// sameViolations says whether a and b hold the same violations, in any order.
func sameViolations(a, b []Violation) bool {
	key := func(v Violation) string { return v.Member + "|" + v.What }
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		ka[i] = key(a[i])
	}
	for i := range b {
		kb[i] = key(b[i])
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}

// TestReferencedRowsStay checks that the rows the ledger refers to by id
// can be neither deleted nor given another id, now that no foreign key on
// postings, lots, accrual_amounts or posting_lots stops it.
func TestReferencedRowsStay(t *testing.T) {
	f := isolatedFixture(t)
	f.enroll("alice")
	f.ok(core.KindAccrue, "alice", core.Accrue{EventType: "purchase", Amount: "10"})
	f.ok(core.KindRedeem, "alice", core.Redeem{Points: 4})

	cases := []struct {
		sql  string
		code string // SQLSTATE
		msg  string // part of the message
	}{
		{`DELETE FROM members`, "23001", "members rows are never deleted"},
		{`DELETE FROM programs`, "23001", "programs rows are never deleted"},
		{`DELETE FROM lots`, "23001", "lots rows are never deleted"},
		{`DELETE FROM postings`, "P0001", "postings is append-only"},
		{`DELETE FROM posting_lots`, "P0001", "posting_lots is append-only"},
		{`UPDATE members SET id = gen_random_uuid()`, "23001", "never changes"},
		{`UPDATE programs SET id = gen_random_uuid()`, "23001", "never changes"},
		{`UPDATE lots SET id = id + 1000`, "23001", "never changes"},
		// TRUNCATE fires no row trigger: the foreign keys that stay refuse it.
		{`TRUNCATE members`, "0A000", "foreign key"},
		{`TRUNCATE programs`, "0A000", "foreign key"},
		{`TRUNCATE postings`, "0A000", "foreign key"},
		{`TRUNCATE lots`, "0A000", "foreign key"},
	}
	ctx := context.Background()
	for _, c := range cases {
		tx, err := f.l.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, c.sql)
		_ = tx.Rollback(ctx)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != c.code || !strings.Contains(pe.Message, c.msg) {
			t.Errorf("%s: got %v, want SQLSTATE %s saying %q", c.sql, err, c.code, c.msg)
		}
	}

	// Balances are updated in place all the time; only the id is kept.
	_, err := f.l.pool.Exec(ctx, `UPDATE members SET id = id, updated_at = now()`)
	if err != nil {
		t.Fatalf("update keeping the id: %v", err)
	}
	f.wantBalance("alice", 6, 0, 0)
	f.check()
}
