package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// An operator checks the reports against the ledger from the command line:
// a complete copy passes; an event the sink stored twice makes accruals
// count double, which the command names and --rebuild repairs; postings
// the reports never received are named by id.
func TestReconcileCommand(t *testing.T) {
	ctx := context.Background()
	conn, chDB := chtest.Database(t)
	if err := reporting.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	l := chtest.NewLedger(t, time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC))
	prog := "p" + uuid.NewString()[:8]
	l.Do(prog, core.KindProgramUpsert, "", core.Program{Name: "Test"})
	l.Do(prog, core.KindEnroll, "ana", core.Enroll{Channel: "web"})
	l.Do(prog, core.KindAccrue, "ana", core.Accrue{EventType: "topup", Amount: "1000"})
	l.Do(prog, core.KindRedeem, "ana", core.Redeem{Points: 200})
	copyAll := chtest.PublisherFunc(func(ctx context.Context, evs []bus.Event) error {
		return reporting.InsertEvents(ctx, conn, evs)
	})
	if n := l.Relay(copyAll); n == 0 {
		t.Fatal("no events relayed")
	}

	env := func(string) string { return "" }
	reconcile := func(extra ...string) (string, error) {
		var out, errOut bytes.Buffer
		args := append([]string{"--database-url", l.Pool.Config().ConnString(),
			"--clickhouse-addr", chtest.Addr(), "--clickhouse-db", chDB}, extra...)
		for _, d := range [][2]string{{"--program", prog}, {"--from", "2026-03-01"},
			{"--to", "2026-04-01"}} {
			if !slices.Contains(extra, d[0]) {
				args = append(args, d[0], d[1])
			}
		}
		err := run(ctx, append([]string{"reconcile"}, args...), env, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := reconcile(); err != nil || !strings.Contains(out, "every posting") {
		t.Fatalf("complete copy: %v\n%s", err, out)
	}

	// The accrual's event stored twice.
	if err := conn.Exec(ctx, `INSERT INTO ledger_events SELECT * FROM ledger_events
		WHERE program = ? AND kind = 'accrual'`, prog); err != nil {
		t.Fatal(err)
	}
	out, err := reconcile()
	if err == nil || !strings.Contains(out, "accrual: the ledger has 1 postings of 1000 "+
		"points, the reports 2 events of 2000 points") || !strings.Contains(out, "--rebuild") {
		t.Fatalf("accrual counted twice: %v\n%s", err, out)
	}
	if out, err := reconcile("--rebuild"); err != nil || !strings.Contains(out,
		"hourly flows of 2026-03") || !strings.Contains(out, "every posting") {
		t.Fatalf("after --rebuild: %v\n%s", err, out)
	}

	// A credit whose event never reached the reports.
	credit := l.Do(prog, core.KindCredit, "ana", core.Credit{Points: 75, Reason: "welcome"})
	l.Relay(chtest.PublisherFunc(func(context.Context, []bus.Event) error { return nil }))
	out, err = reconcile()
	if len(credit.PostingIDs) != 1 {
		t.Fatalf("credit postings %v; want one", credit.PostingIDs)
	}
	want := fmt.Sprintf("postings missing from the reports: %d", credit.PostingIDs[0])
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("a credit the reports never received: %v\n%s\nwant %q", err, out, want)
	}

	// Dates are the program's days, as in the reports: a credit at 23:30 of
	// 31 March in Santiago (02:30 UTC on 1 April) belongs to March.
	l.SetNow(time.Date(2026, 4, 1, 2, 30, 0, 0, time.UTC))
	late := l.Do(prog, core.KindCredit, "ana", core.Credit{Points: 5, Reason: "late"})
	l.Relay(chtest.PublisherFunc(func(context.Context, []bus.Event) error { return nil }))
	out, err = reconcile()
	if len(late.PostingIDs) != 1 {
		t.Fatalf("late credit postings %v; want one", late.PostingIDs)
	}
	want = fmt.Sprintf("postings missing from the reports: %d %d", credit.PostingIDs[0],
		late.PostingIDs[0])
	if err == nil || !strings.Contains(out, want) ||
		!strings.Contains(out, "2026-03-01T03:00:00Z to 2026-04-01T03:00:00Z") {
		t.Fatalf("March in the program's zone: %v\n%s\nwant %q", err, out, want)
	}

	// Mistakes name the flag; a misspelt program is no clean bill.
	if _, err := reconcile("--program", prog+"x"); err == nil ||
		!strings.Contains(err.Error(), "no program") {
		t.Errorf("an unknown program: %v", err)
	}
	if _, err := reconcile("--from", "yesterday"); err == nil ||
		!strings.Contains(err.Error(), `--from: "yesterday" is neither`) {
		t.Errorf("a bad --from: %v", err)
	}
	if _, err := reconcile("--to", "2026-05-01", "--to=2026-06-01"); err == nil ||
		!strings.Contains(err.Error(), "--to is given more than once") {
		t.Errorf("two ends: %v", err)
	}
	if _, err := reconcile("--from", "2026-02-01", "-from", "2026-03-01"); err == nil ||
		!strings.Contains(err.Error(), "--from is given more than once") {
		t.Errorf("two periods: %v", err)
	}
}
