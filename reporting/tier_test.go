package reporting_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// TestFlowsByTier runs a member up to gold and back down to blue on a real
// ledger, copies the events to ClickHouse and breaks the flows down by the
// tier each event was recorded in.
func TestFlowsByTier(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	prog := "p" + uuid.NewString()[:8]
	l := chtest.NewLedger(t, time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC))

	l.Do(prog, core.KindProgramUpsert, "", core.Program{Name: "Tiers", TimeZone: santiago})
	l.Do(prog, core.KindTiersSet, "", core.Tiers{WindowDays: 30, Levels: []core.TierLevel{
		{Code: "blue", MinPoints: 0, Multiplier: "1"},
		{Code: "gold", MinPoints: 1000, Multiplier: "1.5"}}})
	l.Do(prog, core.KindRuleUpsert, "", postgres.RuleUpsert{Rule: core.Rule{Code: "r",
		EventType: "bill_paid", Rounding: core.RoundDown,
		Formula: core.Formula{Kind: core.FormulaPerUnit, Rate: "1"}}})
	l.Do(prog, core.KindEnroll, "alice", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindEnroll, "bob", core.Enroll{Channel: "web"})

	accrue := func(ref, amount string, want int64) {
		t.Helper()
		o := l.Do(prog, core.KindAccrue, ref, core.Accrue{EventType: "bill_paid",
			Amount: amount})
		if int64(o.Points) != want {
			t.Fatalf("%s accrues %s: %d points, want %d", ref, amount, o.Points, want)
		}
	}

	// 10 March: alice qualifies for blue, then her second accrual takes her
	// to gold (it earns at the blue rate, and is recorded in gold); bob,
	// with a credit only, has no tier yet.
	accrue("alice", "400", 400)
	l.Do(prog, core.KindCredit, "bob", core.Credit{Points: 50, Reason: "welcome"})
	accrue("alice", "800", 800)
	accrue("alice", "100", 150)
	l.Do(prog, core.KindRedeem, "alice", core.Redeem{Points: 300})

	// 20 April: March has left the 30-day window. Alice's accrual brings her
	// back to blue; bob's reaches gold.
	l.SetNow(time.Date(2026, 4, 20, 15, 0, 0, 0, time.UTC))
	accrue("alice", "200", 200)
	accrue("bob", "1000", 1000)
	l.Do(prog, core.KindRedeem, "bob", core.Redeem{Points: 60})

	if n := l.Relay(toClickHouse(conn)); n == 0 {
		t.Fatal("no events relayed")
	}

	q := reporting.FlowQuery{Program: prog, TimeZone: santiago, Bucket: reporting.Month}
	out, err := reporting.PointFlowsBy(t.Context(), conn, q, reporting.ByTier)
	if err != nil {
		t.Fatalf("PointFlowsBy tier: %v", err)
	}
	type row struct {
		month, tier           string
		issued, redeemed, net int64
		events                uint64
	}
	var got []row
	for _, f := range out {
		checkNet(t, f.Flows)
		got = append(got, row{f.Start.Format(time.DateOnly), f.Key, f.Issued, f.Redeemed,
			f.Net, f.Events})
	}
	want := []row{
		{"2026-03-01", "", 50, 0, 50, 1}, // bob's credit, before he had a tier
		{"2026-03-01", "blue", 400, 0, 400, 1},
		{"2026-03-01", "gold", 950, 300, 650, 3},
		{"2026-04-01", "blue", 200, 0, 200, 1},
		{"2026-04-01", "gold", 1000, 60, 940, 2},
	}
	if !slices.Equal(got, want) {
		t.Errorf("flows by tier:\n got %+v\nwant %+v", got, want)
	}

	// The tiers split the flows, and the copy still matches the ledger.
	from := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	to := time.Date(2026, 5, 1, 4, 0, 0, 0, time.UTC)
	diffs, err := reporting.Reconcile(t.Context(), conn, l.Pool, prog, from, to)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if len(diffs) != 0 {
		t.Errorf("Reconcile: %+v; want none", diffs)
	}
	if owed := l.Owed(prog); owed != 2240 {
		t.Errorf("ledger owes %d; want 2240", owed)
	}
}

// TestMigrateAddsTierOnce runs the migrations again over a schema that has
// the tier column but no record of it: 18.16 knows no ADD COLUMN IF NOT
// EXISTS, and Migrate must take the column being there as done.
func TestMigrateAddsTierOnce(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	ev := event("p1", "accrual", 70, at)
	ev.Tier = "gold"
	insert(t, conn, ev)
	if err := conn.Exec(t.Context(), `DROP TABLE schema_version`); err != nil {
		t.Fatal(err)
	}
	if err := reporting.Migrate(t.Context(), conn); err != nil {
		t.Fatalf("Migrate over a schema it does not remember: %v", err)
	}
	all, _ := reporting.Migrations()
	if v, err := reporting.SchemaVersion(t.Context(), conn); err != nil ||
		v != all[len(all)-1].Version {
		t.Fatalf("schema version %d, %v; want %d", v, err, all[len(all)-1].Version)
	}
	out, err := reporting.PointFlowsBy(t.Context(), conn, reporting.FlowQuery{Program: "p1",
		TimeZone: santiago, Bucket: reporting.Day}, reporting.ByTier)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Key != "gold" || out[0].Issued != 70 {
		t.Errorf("flows by tier %+v; want 70 issued in gold", out)
	}
}
