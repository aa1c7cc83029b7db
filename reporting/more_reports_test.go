package reporting_test

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

func TestFlowsByDimension(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	march := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	april := time.Date(2026, 4, 2, 15, 0, 0, 0, time.UTC)

	mk := func(kind string, pts int64, at time.Time, channel, rule, partner string) {
		ev := event("p1", kind, pts, at)
		ev.Channel, ev.RuleVersion, ev.Partner = channel, rule, partner
		insert(t, conn, ev)
	}
	mk("accrual", 1000, march, "web", "r1", "")
	mk("accrual", 300, march, "pos", "r2", "")
	mk("credit", 500, march, "web", "", "")
	mk("redemption", -200, march, "pos", "", "shop")
	mk("adjustment", -15, march, "=cmd", "", "")
	mk("expiry", -70, march, "", "", "")
	mk("accrual", 40, april, "web", "r1", "")
	insert(t, conn, notice("p1", march), event("p2", "accrual", 99, march))

	q := reporting.FlowQuery{Program: "p1", TimeZone: santiago, Bucket: reporting.Month}
	type row struct {
		month, key                               string
		issued, redeemed, expired, adjusted, net int64
		events                                   uint64
	}
	get := func(dim reporting.Dimension) []row {
		t.Helper()
		out, err := reporting.PointFlowsBy(t.Context(), conn, q, dim)
		if err != nil {
			t.Fatalf("PointFlowsBy %s: %v", dim, err)
		}
		var rows []row
		for _, f := range out {
			checkNet(t, f.Flows)
			if f.Program != "p1" {
				t.Errorf("program %q in a report of p1", f.Program)
			}
			rows = append(rows, row{f.Start.Format(time.DateOnly), f.Key, f.Issued, f.Redeemed,
				f.Expired, f.AdjustedDown, f.Net, f.Events})
		}
		return rows
	}

	tests := []struct {
		dim  reporting.Dimension
		want []row
	}{
		{reporting.ByChannel, []row{
			{"2026-03-01", "", 0, 0, 70, 0, -70, 1},
			{"2026-03-01", "=cmd", 0, 0, 0, 15, -15, 1},
			{"2026-03-01", "pos", 300, 200, 0, 0, 100, 2},
			{"2026-03-01", "web", 1500, 0, 0, 0, 1500, 2},
			{"2026-04-01", "web", 40, 0, 0, 0, 40, 1},
		}},
		{reporting.ByRule, []row{
			{"2026-03-01", "", 500, 200, 70, 15, 215, 4},
			{"2026-03-01", "r1", 1000, 0, 0, 0, 1000, 1},
			{"2026-03-01", "r2", 300, 0, 0, 0, 300, 1},
			{"2026-04-01", "r1", 40, 0, 0, 0, 40, 1},
		}},
		{reporting.ByPartner, []row{
			{"2026-03-01", "", 1800, 0, 70, 15, 1715, 5},
			{"2026-03-01", "shop", 0, 200, 0, 0, -200, 1},
			{"2026-04-01", "", 40, 0, 0, 0, 40, 1},
		}},
	}
	for _, tt := range tests {
		if got := get(tt.dim); !slices.Equal(got, tt.want) {
			t.Errorf("by %s:\n got %+v\nwant %+v", tt.dim, got, tt.want)
		}
	}

	if _, err := reporting.PointFlowsBy(t.Context(), conn, q, "member"); err == nil {
		t.Error("a breakdown by member was accepted")
	}
}

func TestParseDimension(t *testing.T) {
	tests := []struct {
		in   string
		want reporting.Dimension
		ok   bool
	}{
		{"channel", reporting.ByChannel, true},
		{"rule", reporting.ByRule, true},
		{"rule_version", reporting.ByRule, true},
		{"partner", reporting.ByPartner, true},
		{"tier", reporting.ByTier, true},
		{"tiers", "", false},
		{"program; DROP TABLE ledger_events", "", false},
	}
	for _, tt := range tests {
		got, err := reporting.ParseDimension(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseDimension(%q) = %q, %v; want %q, ok %t", tt.in, got, err, tt.want,
				tt.ok)
		}
	}
}

func TestBreakageRate(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	insert(t, conn,
		event("p1", "accrual", 1000, at), event("p1", "credit", 800, at),
		event("p1", "adjustment", 1, at), event("p1", "adjustment", -40, at),
		event("p1", "expiry", -70, at), event("p1", "redemption", -500, at),
		// Outside the period, or another program.
		event("p1", "expiry", -999, at.AddDate(0, 1, 0)), event("p2", "expiry", -5, at))

	loc, _ := time.LoadLocation(santiago)
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, loc)
	to := time.Date(2026, 4, 1, 0, 0, 0, 0, loc)
	b, err := reporting.BreakageRate(t.Context(), conn, "p1", from, to)
	if err != nil {
		t.Fatal(err)
	}
	// 70 / 1801 = 0.038867...
	if b.Issued != 1801 || b.Expired != 70 || b.Rate != "0.0389" {
		t.Errorf("breakage %+v; want issued 1801, expired 70, rate 0.0389", b)
	}

	// A period with nothing issued has no rate.
	b, err = reporting.BreakageRate(t.Context(), conn, "p1", to, to.AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if b.Issued != 0 || b.Expired != 999 || b.Rate != "" {
		t.Errorf("April breakage %+v; want issued 0, expired 999, no rate", b)
	}
}

func TestValueLiabilities(t *testing.T) {
	out := []reporting.Outstanding{{Program: "a", Points: 1234567, Events: 3},
		{Program: "b", Points: -10, Events: 1}, {Program: "c"}}
	tests := []struct {
		perPoint string
		want     []string
	}{
		{"0.85", []string{"1049381.95", "-8.5", "0"}},
		{"1", []string{"1234567", "-10", "0"}},
		{"0.000001", []string{"1.234567", "-0.00001", "0"}},
		{"12.5", []string{"15432087.5", "-125", "0"}},
	}
	for _, tt := range tests {
		got, err := reporting.ValueLiabilities(out, tt.perPoint)
		if err != nil {
			t.Fatalf("%s: %v", tt.perPoint, err)
		}
		var vals []string
		for _, v := range got {
			vals = append(vals, v.Value)
		}
		if !slices.Equal(vals, tt.want) {
			t.Errorf("at %s: %v; want %v", tt.perPoint, vals, tt.want)
		}
	}
	for _, bad := range []string{"", "abc", "-1", "0.1234567"} {
		if _, err := reporting.ValueLiabilities(out, bad); core.KindOf(err) != core.Invalid {
			t.Errorf("value per point %q: %v; want invalid", bad, err)
		}
	}
}

// TestLedgerReports runs a scenario through a real ledger, copies its
// events to ClickHouse and checks the reports that read PostgreSQL too.
func TestLedgerReports(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	prog := "p" + uuid.NewString()[:8]
	shop := "shop-" + prog
	l := chtest.NewLedger(t, time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC))
	loc, _ := time.LoadLocation(santiago)

	// 2 March: program (45-day expiry), catalog, partner, two members.
	l.Do(prog, core.KindProgramUpsert, "", core.Program{Name: "Test", TimeZone: santiago,
		ExpiryUnit: core.ExpiryDays, ExpiryLength: 45})
	l.Do(prog, core.KindRewardUpsert, "", core.Reward{Code: "mug", Name: "Mug", Points: 100})
	l.Do(prog, core.KindRewardUpsert, "", core.Reward{Code: "cap", Name: "=Cap", Points: 50})
	l.Do(prog, core.KindPartnerUpsert, "", core.Partner{Code: shop, Name: "Shop",
		Currency: "CLP", PointValue: "2.5", CanBurn: true})
	l.Do(prog, core.KindEnroll, "alice", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindEnroll, "bob", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindCredit, "alice", core.Credit{Points: 500, Reason: "welcome"})
	l.Do(prog, core.KindCredit, "bob", core.Credit{Points: 400, Reason: "welcome"})

	// 31 March 23:00 in Santiago (1 April in UTC): carol.
	l.SetNow(time.Date(2026, 4, 1, 2, 0, 0, 0, time.UTC))
	l.Do(prog, core.KindEnroll, "carol", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindCredit, "carol", core.Credit{Points: 300, Reason: "welcome"})

	// 10 April: dave enrolls; orders; alice pays the shop 80, 30 refunded.
	l.SetNow(time.Date(2026, 4, 10, 15, 0, 0, 0, time.UTC))
	l.Do(prog, core.KindEnroll, "dave", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindOrderPlace, "alice", core.PlaceOrder{Reward: "mug"})
	l.Do(prog, core.KindOrderPlace, "bob", core.PlaceOrder{Reward: "cap", Quantity: 2})
	l.Do(prog, core.KindOrderPlace, "carol", core.PlaceOrder{Reward: "cap"})
	src := core.PartnerSource(shop)
	l.DoAs(src, prog, core.KindAuthorize, "alice", core.Authorize{Points: 80})
	hold := l.LastTxn()
	l.DoAs(src, prog, core.KindCapture, "alice", core.Capture{HoldTxnID: hold, Points: 80})
	l.DoAs(src, prog, core.KindPartnerRefund, "alice",
		core.PartnerRefund{HoldTxnID: hold, Points: 30})
	// Bob pays the shop 40; the operator reverses the capture, so the
	// shop is owed nothing for it.
	l.DoAs(src, prog, core.KindAuthorize, "bob", core.Authorize{Points: 40})
	bobHold := l.LastTxn()
	l.DoAs(src, prog, core.KindCapture, "bob", core.Capture{HoldTxnID: bobHold, Points: 40})
	var capture int64
	if err := l.Pool.QueryRow(t.Context(), `SELECT p.id FROM postings p
		JOIN holds h ON h.id = p.hold_id
		WHERE h.source = $1 AND h.txn_id = $2 AND p.kind = 'capture'`, src,
		bobHold).Scan(&capture); err != nil {
		t.Fatal(err)
	}
	l.Do(prog, core.KindReverse, "bob", core.Reverse{PostingID: capture, Reason: "dispute"})
	l.Relay(toClickHouse(conn))

	// The copy is whole.
	from, to := time.Date(2026, 3, 1, 0, 0, 0, 0, loc), time.Date(2026, 5, 1, 0, 0, 0, 0, loc)
	if n := chtest.Reconciled(t, conn, l.Pool, prog, from, to, 0); n == 0 {
		t.Fatal("no postings reconciled")
	}

	// Expiring from 10 April: alice 350 and bob 300 on 16 April, carol 250
	// on 16 May.
	exp, err := reporting.PointsExpiring(t.Context(), l.Pool, prog, l.Now())
	if err != nil {
		t.Fatal(err)
	}
	wantExp := []reporting.Expiring{{Days: 30, Points: 650, Lots: 2, Members: 2},
		{Days: 60, Points: 900, Lots: 3, Members: 3}, {Days: 90, Points: 900, Lots: 3,
			Members: 3}}
	if !slices.Equal(exp, wantExp) {
		t.Errorf("expiring %+v\nwant %+v", exp, wantExp)
	}
	if owed := l.Owed(prog); owed != 900 {
		t.Errorf("owed %d; want 900 (every lot is within 90 days)", owed)
	}

	// Membership per month: carol enrolled and was active in March, in
	// Santiago.
	act, err := reporting.Membership(t.Context(), conn, l.Pool, reporting.FlowQuery{
		Program: prog, TimeZone: santiago, Bucket: reporting.Month, From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	wantAct := []reporting.Activity{
		{Start: time.Date(2026, 3, 1, 0, 0, 0, 0, loc), Enrolled: 3, Active: 3},
		{Start: time.Date(2026, 4, 1, 0, 0, 0, 0, loc), Enrolled: 1, Active: 3},
	}
	if len(act) != len(wantAct) {
		t.Fatalf("membership %+v\nwant %+v", act, wantAct)
	}
	for i := range act {
		if !act[i].Start.Equal(wantAct[i].Start) || act[i].Enrolled != wantAct[i].Enrolled ||
			act[i].Active != wantAct[i].Active {
			t.Errorf("membership %d: %+v; want %+v", i, act[i], wantAct[i])
		}
	}

	// Top rewards in April: three caps (150 points), one mug.
	top, err := reporting.TopRewards(t.Context(), l.Pool, prog, from, to, 10)
	if err != nil {
		t.Fatal(err)
	}
	wantTop := []reporting.RewardRank{
		{Reward: "cap", Name: "=Cap", Orders: 2, Quantity: 3, Points: 150},
		{Reward: "mug", Name: "Mug", Orders: 1, Quantity: 1, Points: 100},
	}
	if !slices.Equal(top, wantTop) {
		t.Errorf("top rewards %+v\nwant %+v", top, wantTop)
	}
	if top, _ := reporting.TopRewards(t.Context(), l.Pool, prog, from, to, 1); len(top) != 1 {
		t.Errorf("top 1: %d rewards", len(top))
	}

	// Settlement: 120 captured, 30 refunded, 40 reversed by the operator:
	// 50 at 2.5.
	st, err := reporting.Settlements(t.Context(), l.Pool, l.L, prog, from, to)
	if err != nil {
		t.Fatal(err)
	}
	wantSt := []reporting.PartnerSettlement{{Partner: shop, Currency: "CLP",
		PointValueNow: "2.5", Captured: 120, Refunded: 30, Reversed: 40, Net: 50, Value: "125",
		Lines: 4}}
	if !slices.Equal(st, wantSt) {
		t.Errorf("settlements %+v\nwant %+v", st, wantSt)
	}
}
