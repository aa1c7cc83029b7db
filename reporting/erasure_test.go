package reporting_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/reporting"
)

func TestEraseMemberRewritesOnlyItsReference(t *testing.T) {
	t.Parallel()
	conn := migrated(t)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a1, a2 := event("p1", "accrual", 100, at), event("p1", "redemption", -30, at)
	a2.Member = a1.Member
	a1.MemberRef, a2.MemberRef = "ana-777", "ana-777"
	other := event("p1", "accrual", 50, at)
	if err := reporting.InsertEvents(t.Context(), conn, []bus.Event{a1, a2, other}); err != nil {
		t.Fatal(err)
	}

	for range 2 { // a second run changes nothing
		if err := reporting.EraseMember(t.Context(), conn, "p1", a1.Member); err != nil {
			t.Fatalf("EraseMember: %v", err)
		}
	}

	rows, err := conn.Query(t.Context(), `SELECT member_ref, sum(points), count()
		FROM ledger_events FINAL GROUP BY member_ref ORDER BY member_ref`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var ref string
		var pts int64
		var n uint64
		if err := rows.Scan(&ref, &pts, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s=%d/%d", ref, pts, n))
	}
	want := []string{"erased-" + a1.Member + "=70/2", "m1=50/1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after erasure %v, want %v", got, want)
	}
}
