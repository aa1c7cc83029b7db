package chsink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// refs counts the stored events of program per member_ref, each event once.
func refs(t *testing.T, conn driver.Conn, program string) map[string]uint64 {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT member_ref, count() FROM ledger_events FINAL
		WHERE program = ? GROUP BY member_ref`, program)
	if err != nil && strings.Contains(err.Error(), "doesn't exist") {
		return nil // The sink has not made the schema yet.
	}
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var ref string
		var n uint64
		if err := rows.Scan(&ref, &n); err != nil {
			t.Fatal(err)
		}
		out[ref] = n
	}
	return out
}

// byChannel is program's monthly net per channel, as the back office shows it.
func byChannel(t *testing.T, conn driver.Conn, program string) map[string]int64 {
	t.Helper()
	out, err := reporting.PointFlowsBy(t.Context(), conn, reporting.FlowQuery{Program: program,
		TimeZone: santiago, Bucket: reporting.Month}, reporting.ByChannel)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, f := range out {
		m[f.Start.Format("2006-01")+" "+f.Key] += f.Net
	}
	return m
}

// TestSinkErasesMembers erases a member on the ledger while the sink runs:
// the member_erased event makes the sink rewrite the member's reference in
// the events ClickHouse holds, including one of its events that reaches the
// sink only after the erasure, still with the old reference. Nobody runs
// reporting.EraseMember, and the report totals do not move.
func TestSinkErasesMembers(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	conn, _ := chtest.Database(t)
	l := chtest.NewLedger(t, time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC))
	b := ns.connect(t)

	prog := "e" + uuid.NewString()[:8]
	l.Do(prog, core.KindProgramUpsert, "", core.Program{Name: "Test", TimeZone: santiago})
	l.Do(prog, core.KindEnroll, "ana", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindEnroll, "beto", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindCredit, "ana", core.Credit{Points: 400, Reason: "welcome"})
	l.Do(prog, core.KindCredit, "beto", core.Credit{Points: 90, Reason: "welcome"})
	l.Do(prog, core.KindRedeem, "ana", core.Redeem{Points: 150})
	late := l.Do(prog, core.KindAdjust, "ana", core.Adjust{Points: 7, Reason: "late"})

	// Everything reaches the bus but ana's adjustment, which is held back.
	var held []bus.Event
	anaID := ""
	l.Relay(chtest.PublisherFunc(func(ctx context.Context, evs []bus.Event) error {
		var now []bus.Event
		for _, ev := range evs {
			if ev.MemberRef == "ana" {
				anaID = ev.Member
			}
			if ev.PostingID == late.PostingIDs[0] {
				held = append(held, ev)
				continue
			}
			now = append(now, ev)
		}
		return b.PublishEvents(ctx, now)
	}))
	if anaID == "" || len(held) != 1 {
		t.Fatalf("ana's id %q, %d events held back; want an id and 1", anaID, len(held))
	}
	start(t, &Sink{Bus: b, Conn: conn, Log: testLog(t)})
	eventually(t, "ana's first events in ClickHouse", func() bool {
		return refs(t, conn, prog)["ana"] == 2
	})

	// The ledger erases ana; its member_erased event reaches the sink, then
	// the held-back adjustment with the old reference.
	l.Do(prog, core.KindErase, "ana", core.Erase{Reason: "asked to be forgotten"})
	pseudo := core.Pseudonym(anaID)
	var erasure []bus.Event
	l.Relay(chtest.PublisherFunc(func(ctx context.Context, evs []bus.Event) error {
		for _, ev := range evs {
			if ev.Kind == reporting.KindMemberErased {
				erasure = append(erasure, ev)
			}
		}
		return b.PublishEvents(ctx, evs)
	}))
	if len(erasure) != 1 || erasure[0].Member != anaID || erasure[0].MemberRef != pseudo {
		t.Fatalf("the ledger published %d member_erased events (%+v), want one for %s under %s",
			len(erasure), erasure, anaID, pseudo)
	}
	eventually(t, "the erasure recorded", func() bool {
		var n uint64
		err := conn.QueryRow(t.Context(), `SELECT count() FROM erased_members
			WHERE program = ? AND member = ?`, prog, anaID).Scan(&n)
		return err == nil && n > 0
	})
	before := byChannel(t, conn, prog)
	if err := b.PublishEvents(t.Context(), held); err != nil {
		t.Fatal(err)
	}

	// ana's three postings carry the pseudonym, beto's credit his reference.
	eventually(t, "ana's events rewritten", func() bool {
		r := refs(t, conn, prog)
		return r["ana"] == 0 && r[pseudo] == 4
	})
	if r := refs(t, conn, prog); r["beto"] != 1 || len(r) != 2 {
		t.Errorf("references %v; want beto 1 and %s 4 (3 postings and the erasure)", r, pseudo)
	}

	// The reports still match the ledger, to the point.
	eventually(t, "no difference with the ledger", func() bool {
		return len(reconcile(t, conn, l, prog)) == 0
	})
	if o, owed := liability(t, conn, prog), l.Owed(prog); o.Points != owed || owed != 347 {
		t.Errorf("liability %d, ledger %d; want both 347", o.Points, owed)
	}
	after := byChannel(t, conn, prog)
	before["2026-03 web"] += 7 // the held-back adjustment
	if len(after) != len(before) || after["2026-03 web"] != before["2026-03 web"] {
		t.Errorf("flows by channel %v after the erasure; want %v", after, before)
	}
}
