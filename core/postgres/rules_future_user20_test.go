package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/core"
)

// Regression test of a defect a catalog attack found (against cf48e4e), now
// mended; the scenario as found:
//
// Rule "fut" gave 10 points a visit; a version 2 was saved for 1 January
// 2027; the rule was then retired. A visit a second later still earned 10
// points by version 1, which stayed in force until 2027 because only the
// latest version was ended. And a version 3 of another event type, saved
// after the scheduled one, ran beside version 1. A retirement now ends
// every version, and the newest version in force is the rule whatever its
// event type.
func TestRuleVersionScheduledLaterEndsTheEarlierOnes(t *testing.T) {
	visit := func(code, typ string, points core.Points, from *time.Time) core.Rule {
		return core.Rule{Code: code, EventType: typ, ValidFrom: from,
			Formula: core.Formula{Kind: core.FormulaFixed, Points: points}}
	}
	jan := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	t0 := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC) // the fixture's clock

	t.Run("retired", func(t *testing.T) {
		f := newFixture(t, core.Program{})
		f.enroll("m1")
		f.putRule(visit("fut", "visit", 10, nil))
		f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: visit("fut", "visit", 20, &jan),
			Mode: "update"})
		if got, _ := f.earnAt("m1", "visit", t0.Add(-time.Second)); got != 10 {
			t.Fatalf("a visit before the retirement earned %d, want 10 by version 1", got)
		}
		f.ok(core.KindRuleRetire, "", core.RuleRetire{Code: "fut"})
		for _, at := range []time.Time{t0, t0.Add(time.Second), jan.Add(time.Hour)} {
			if got, ver := f.earnAt("m1", "visit", at); got != 0 {
				t.Fatalf("a visit at %s after the retirement earned %d by %s, want 0", at, got,
					ver)
			}
		}
		versions, err := f.l.RuleVersions(context.Background(), f.prog, "fut")
		if err != nil || len(versions) != 2 || versions[0].Until == nil ||
			!versions[0].Until.Equal(t0) {
			t.Fatalf("versions after the retirement: %+v %v; want version 1 ended at %s",
				versions, err, t0)
		}
		f.wantBalance("m1", 10, 0, 0)
	})

	t.Run("another type", func(t *testing.T) {
		f := newFixture(t, core.Program{})
		f.enroll("m1")
		f.putRule(visit("fut", "visit", 10, nil))
		f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: visit("fut", "visit", 20, &jan),
			Mode: "update"})
		f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: visit("fut", "checkin", 5, nil),
			Mode: "update"})
		for _, c := range []struct {
			typ  string
			at   time.Time
			want core.Points
		}{{"visit", t0.Add(-time.Second), 10}, {"visit", t0.Add(time.Second), 0},
			{"checkin", t0.Add(time.Second), 5}, {"visit", jan.Add(time.Hour), 0},
			{"checkin", jan.Add(time.Hour), 5}} {
			if got, ver := f.earnAt("m1", c.typ, c.at); got != c.want {
				t.Fatalf("%s at %s earned %d by %q, want %d", c.typ, c.at, got, ver, c.want)
			}
		}
		f.wantBalance("m1", 20, 0, 0)
		f.check()
	})
}

// Regression test of a defect an attack found (against 4d57008, the first
// form of the mend above), now mended; the scenario as found:
//
// Version 1 in force from day -100, version 2 scheduled from day +5, then a
// version 3 bounded to days -200 to -150: every earlier version was ended
// at day -200, and the rule earned nothing on any day after -150, version 2
// never. A version bounded in time replaces the rule only while it is in
// force; outside it, the newest version in force is the rule.
func TestRuleVersionBoundedInThePastEndsNothing(t *testing.T) {
	f := newFixture(t, core.Program{})
	f.enroll("m1")
	day := func(n int) time.Time { return f.now.AddDate(0, 0, n) }
	fixed := func(points core.Points, from, to *time.Time) core.Rule {
		return core.Rule{Code: "r", EventType: "visit", ValidFrom: from, ValidTo: to,
			Formula: core.Formula{Kind: core.FormulaFixed, Points: points}}
	}
	from1, from2, from3, to3 := day(-100), day(5), day(-200), day(-150)
	f.putRule(fixed(10, &from1, nil))
	f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: fixed(20, &from2, nil), Mode: "update"})
	f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: fixed(30, &from3, &to3), Mode: "update"})
	for _, c := range []struct {
		at   time.Time
		want core.Points
	}{{day(-175), 30}, {day(-120), 0}, {day(-50), 10}, {day(0), 10}, {day(10), 20}} {
		if got, ver := f.earnAt("m1", "visit", c.at); got != c.want {
			t.Fatalf("a visit on day %s earned %d by %q, want %d", c.at, got, ver, c.want)
		}
	}
	f.wantBalance("m1", 70, 0, 0)
}

// Rules retired before the change: the migration ends every version of a
// retired rule when it was retired, and the rule stops earning.
func TestRuleVersionsMigrationEndsEarlierVersions(t *testing.T) {
	l := isolatedLedger(t)
	f := newFixtureOn(t, l, core.Program{})
	f.enroll("m1")
	jan := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	f.putRule(core.Rule{Code: "fut", EventType: "visit",
		Formula: core.Formula{Kind: core.FormulaFixed, Points: 10}})
	f.ok(core.KindRuleUpsert, "", RuleUpsert{Rule: core.Rule{Code: "fut", EventType: "visit",
		ValidFrom: &jan, Formula: core.Formula{Kind: core.FormulaFixed, Points: 20}},
		Mode: "update"})
	f.ok(core.KindRuleRetire, "", core.RuleRetire{Code: "fut"})

	// As the earlier code left them: version 1 in force until January.
	ctx := context.Background()
	for _, q := range []string{
		`UPDATE rules SET until = '2027-01-01T00:00:00Z' WHERE code = 'fut' AND version = 1`,
		`DELETE FROM schema_migrations WHERE name LIKE '0035_%'`} {
		if _, err := l.pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	later := f.now.Add(time.Hour)
	if got, _ := f.earnAt("m1", "visit", later); got != 10 {
		t.Fatalf("before the migration a visit earned %d; the setup expected 10", got)
	}
	if err := Migrate(ctx, l.pool, l.log); err != nil {
		t.Fatal(err)
	}
	if got, ver := f.earnAt("m1", "visit", later); got != 0 {
		t.Fatalf("after the migration a visit earned %d by %s, want 0", got, ver)
	}
	f.wantBalance("m1", 10, 0, 0)
}

// earnAt is earn of an event at at, the clock moved to at first when at is
// later (events may not come from the future).
func (f *fixture) earnAt(ref, typ string, at time.Time) (core.Points, string) {
	f.t.Helper()
	if at.After(f.l.Clock()) {
		f.setNow(at)
	}
	return f.earn(ref, typ, "0", at)
}
