package reporting_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// toClickHouse publishes events straight into ClickHouse, standing in for
// the bus and the sink.
func toClickHouse(conn driver.Conn) chtest.PublisherFunc {
	return func(ctx context.Context, evs []bus.Event) error {
		return reporting.InsertEvents(ctx, conn, evs)
	}
}

// ledgerScenario applies real commands to a fresh ledger and copies their
// events to conn. It returns the ledger and the program code. In Santiago
// time: March holds 1525 issued, 300 redeemed, 50 adjusted down and 200
// returned; April 450 expired and a transfer; 925 points stay owed.
func ledgerScenario(t *testing.T, conn driver.Conn) (*chtest.Ledger, string) {
	t.Helper()
	prog := "p" + uuid.NewString()[:8]
	l := chtest.NewLedger(t, time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC))

	// 2 March: the program (30-day expiry), two members, a credit.
	l.Do(prog, core.KindProgramUpsert, "", core.Program{Name: "Test", TimeZone: santiago,
		ExpiryUnit: core.ExpiryDays, ExpiryLength: 30})
	l.Do(prog, core.KindEnroll, "alice", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindEnroll, "bob", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindCredit, "bob", core.Credit{Points: 500, Reason: "welcome"})

	// 22 March: alice earns, spends, holds; corrections both ways.
	l.SetNow(time.Date(2026, 3, 22, 15, 0, 0, 0, time.UTC))
	l.Do(prog, core.KindAccrue, "alice", core.Accrue{EventType: "topup", Amount: "1000"})
	red := l.Do(prog, core.KindRedeem, "alice", core.Redeem{Points: 200})
	l.Do(prog, core.KindAuthorize, "alice", core.Authorize{Points: 300})
	l.Do(prog, core.KindCapture, "alice", core.Capture{HoldTxnID: l.LastTxn(), Points: 100})
	l.Do(prog, core.KindAdjust, "alice", core.Adjust{Points: 25, Reason: "goodwill"})
	l.Do(prog, core.KindAdjust, "bob", core.Adjust{Points: -50, Reason: "correction"})
	if len(red.PostingIDs) != 1 {
		t.Fatalf("redemption postings %v; want one", red.PostingIDs)
	}
	l.Do(prog, core.KindReverse, "alice", core.Reverse{PostingID: red.PostingIDs[0],
		Reason: "refund"})

	// 6 April: bob's credit expired on 1 April; 7 April: a transfer.
	l.SetNow(time.Date(2026, 4, 6, 15, 0, 0, 0, time.UTC))
	l.Sweep()
	l.SetNow(time.Date(2026, 4, 7, 15, 0, 0, 0, time.UTC))
	l.Do(prog, core.KindTransfer, "alice", core.Transfer{To: "bob", Points: 100})

	if n := l.Relay(toClickHouse(conn)); n == 0 {
		t.Fatal("no events relayed")
	}
	return l, prog
}

// wantScenarioFlows checks the flows of ledgerScenario.
func wantScenarioFlows(t *testing.T, conn driver.Conn, prog string) {
	t.Helper()
	got := flows(t, conn, reporting.FlowQuery{Program: prog, TimeZone: santiago,
		Bucket: reporting.Month})
	if len(got) != 2 {
		t.Fatalf("flows %+v; want March and April", got)
	}
	march, april := got[0], got[1]
	if march.Start.Format(time.DateOnly) != "2026-03-01" || march.Issued != 1525 ||
		march.Redeemed != 300 || march.AdjustedDown != 50 || march.Returned != 200 ||
		march.Expired != 0 || march.Net != 1375 {
		t.Errorf("March %+v; want issued 1525, redeemed 300, adjusted down 50, "+
			"returned 200, net 1375", march)
	}
	if april.Start.Format(time.DateOnly) != "2026-04-01" || april.Expired != 450 ||
		april.Issued != 0 || april.Moved != 0 || april.Net != -450 {
		t.Errorf("April %+v; want expired 450, moved 0, net -450", april)
	}
	checkNet(t, march)
	checkNet(t, april)
}

func TestReportsMatchTheLedger(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	l, prog := ledgerScenario(t, conn)
	wantScenarioFlows(t, conn, prog)

	// What the program owes equals the members' balances.
	if owed, lia := l.Owed(prog), liabilities(t, conn, time.Time{})[prog]; lia.Points != owed ||
		owed != 925 {
		t.Errorf("liability %d, ledger balances %d; want both 925", lia.Points, owed)
	}

	// Reconciliation finds nothing over any period.
	from := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC) // local midnights
	to := time.Date(2026, 5, 1, 4, 0, 0, 0, time.UTC)
	for _, p := range [][2]time.Time{{from, to}, {from, from.AddDate(0, 0, 21)},
		{from.AddDate(0, 0, 21), to}} {
		diffs, err := reporting.Reconcile(t.Context(), conn, l.Pool, prog, p[0], p[1])
		if err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		if len(diffs) != 0 {
			t.Errorf("Reconcile %s to %s: %+v; want none", p[0], p[1], diffs)
		}
	}
}

func TestReconcileReportsEveryDifference(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	l, prog := ledgerScenario(t, conn)

	// Three more credits: one event lost, one with wrong points, one fine.
	l.SetNow(time.Date(2026, 4, 8, 15, 0, 0, 0, time.UTC))
	lost := l.Do(prog, core.KindCredit, "alice", core.Credit{Points: 70, Reason: "a"})
	changed := l.Do(prog, core.KindCredit, "bob", core.Credit{Points: 30, Reason: "b"})
	l.Do(prog, core.KindCredit, "bob", core.Credit{Points: 5, Reason: "c"})
	l.Relay(chtest.PublisherFunc(func(ctx context.Context, evs []bus.Event) error {
		var keep []bus.Event
		for _, ev := range evs {
			switch ev.PostingID {
			case lost.PostingIDs[0]:
				continue
			case changed.PostingIDs[0]:
				ev.Points++
			}
			keep = append(keep, ev)
		}
		return reporting.InsertEvents(ctx, conn, keep)
	}))

	// And an accrual event that the ledger never had.
	stray := event(prog, "accrual", 10, time.Date(2026, 4, 9, 15, 0, 0, 0, time.UTC))
	stray.PostingID = 987654321
	insert(t, conn, stray)

	// A notice records no posting: it makes no difference.
	insert(t, conn, notice(prog, time.Date(2026, 4, 9, 15, 0, 0, 0, time.UTC)))

	diffs, err := reporting.Reconcile(t.Context(), conn, l.Pool, prog,
		time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if len(diffs) != 2 {
		t.Fatalf("differences %+v; want accrual and credit", diffs)
	}
	acc, cred := diffs[0], diffs[1]
	if acc.Kind != "accrual" || acc.ClickHouse != (reporting.Totals{Count: 2, Points: 1010}) ||
		acc.Postgres != (reporting.Totals{Count: 1, Points: 1000}) ||
		!slices.Equal(acc.Extra, []int64{987654321}) || len(acc.Missing) != 0 ||
		len(acc.Changed) != 0 {
		t.Errorf("accrual difference %+v", acc)
	}
	if cred.Kind != "credit" || cred.ClickHouse != (reporting.Totals{Count: 3, Points: 536}) ||
		cred.Postgres != (reporting.Totals{Count: 4, Points: 605}) ||
		!slices.Equal(cred.Missing, lost.PostingIDs) ||
		!slices.Equal(cred.Changed, changed.PostingIDs) || len(cred.Extra) != 0 {
		t.Errorf("credit difference %+v", cred)
	}

	// The difference goes away once the events are right.
	fixed := event(prog, "credit", 70, time.Date(2026, 4, 8, 15, 0, 0, 0, time.UTC))
	fixed.PostingID = lost.PostingIDs[0]
	insert(t, conn, fixed)
	diffs, err = reporting.Reconcile(t.Context(), conn, l.Pool, prog,
		time.Date(2026, 4, 8, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 9, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if len(diffs) != 1 || diffs[0].Kind != "credit" || len(diffs[0].Missing) != 0 ||
		!slices.Equal(diffs[0].Changed, changed.PostingIDs) {
		t.Errorf("differences on 8 April %+v; want only the changed credit", diffs)
	}

	day := time.Date(2026, 4, 9, 0, 0, 0, 0, time.UTC)
	if _, err := reporting.Reconcile(t.Context(), conn, l.Pool, prog, day, day); err == nil {
		t.Error("Reconcile of an empty period succeeded")
	}
}

// TestRebuildFlowsRepairsACopy stores a second copy of an event behind
// InsertEvents' back, as two sink processes storing it at the same moment
// would: the hourly sums count it twice, Reconcile shows the difference
// without an extra posting, and RebuildFlows puts the month right.
func TestRebuildFlowsRepairsACopy(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	l, prog := ledgerScenario(t, conn)
	ctx := t.Context()

	var id string
	err := conn.QueryRow(ctx, `SELECT any(event_id) FROM ledger_events
		WHERE program = ? AND kind = 'accrual'`, prog).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, `INSERT INTO ledger_events SELECT * FROM ledger_events
		WHERE event_id = ?`, id); err != nil {
		t.Fatalf("copy an event: %v", err)
	}
	from := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	to := time.Date(2026, 5, 1, 4, 0, 0, 0, time.UTC)
	diffs, err := reporting.Reconcile(ctx, conn, l.Pool, prog, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || diffs[0].Kind != "accrual" || diffs[0].ClickHouse.Count != 2 ||
		diffs[0].Postgres.Count != 1 || len(diffs[0].Extra)+len(diffs[0].Missing) != 0 {
		t.Fatalf("differences %+v; want the accrual counted twice, no posting listed", diffs)
	}

	if err := reporting.RebuildFlows(ctx, conn, time.Date(2026, 3, 15, 0, 0, 0, 0,
		time.UTC)); err != nil {
		t.Fatalf("RebuildFlows: %v", err)
	}
	if diffs, err := reporting.Reconcile(ctx, conn, l.Pool, prog, from, to); err != nil ||
		len(diffs) != 0 {
		t.Errorf("after the rebuild: differences %+v, %v; want none", diffs, err)
	}
	wantScenarioFlows(t, conn, prog)
	if owed, lia := l.Owed(prog), liabilities(t, conn, time.Time{})[prog]; lia.Points != owed {
		t.Errorf("liability %d after the rebuild; ledger %d", lia.Points, owed)
	}
}
