package chtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
)

// DoAs is Do with another command source, such as core.PartnerSource(code)
// for a partner's authorize, capture or refund.
func (l *Ledger) DoAs(source, program, kind, member string, payload any) core.Outcome {
	l.t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.seq++
	txn := fmt.Sprintf("%s-%d", program, l.seq)
	l.txn = txn
	now := l.now
	l.mu.Unlock()

	cmd := bus.Command{ID: uuid.Must(uuid.NewV7()).String(), Kind: kind, Source: source,
		TxnID: txn, Program: program, Member: member, Actor: "tester", Channel: "web",
		Payload: body, OccurredAt: now, ReceivedAt: now}
	cmd.Seal()
	out, err := l.L.ApplyBatch(context.Background(), []bus.Command{cmd})
	if err != nil {
		l.t.Fatalf("apply %s %s as %s: %v", kind, member, source, err)
	}
	r := out[0].Result
	if r.Status != bus.StatusOK {
		l.t.Fatalf("%s %s as %s: %s %+v", kind, member, source, r.Status, r.Error)
	}
	var o core.Outcome
	_ = json.Unmarshal(r.Data, &o)
	return o
}

// Reconciled is the check a scenario test runs at its end: it waits, up to
// wait, until ClickHouse holds exactly the ledger's postings of program over
// [from, to) (reporting.Reconcile finds no difference), and fails t with the
// differences left when it does not. A sink that is still copying shows as
// missing events and is given the time to finish; an extra or changed
// event never goes away by waiting, and fails as soon as the ledger's side
// is complete. It returns how many postings both sides agree on.
func Reconciled(t testing.TB, ch driver.Conn, pg *pgxpool.Pool, program string,
	from, to time.Time, wait time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		diffs, err := reporting.Reconcile(ctx, ch, pg, program, from, to)
		cancel()
		if err != nil {
			// The sink migrates the schema when it starts, in the background:
			// until it has, the report tables may not exist yet.
			if time.Now().After(deadline) {
				t.Fatalf("reconcile %s: %v", program, err)
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if len(diffs) == 0 {
			var n int64
			err := pg.QueryRow(context.Background(), `SELECT count(*) FROM postings p
				JOIN programs g ON g.id = p.program_id
				WHERE g.code = $1 AND p.occurred_at >= $2 AND p.occurred_at < $3`,
				program, from.UTC().Truncate(time.Second),
				to.UTC().Truncate(time.Second)).Scan(&n)
			if err != nil {
				t.Fatalf("count postings: %v", err)
			}
			return n
		}
		onlyMissing := true
		for _, d := range diffs {
			if len(d.Extra) > 0 || len(d.Changed) > 0 {
				onlyMissing = false
			}
		}
		if !onlyMissing || time.Now().After(deadline) {
			var b strings.Builder
			for _, d := range diffs {
				fmt.Fprintf(&b, "\n  %s: clickhouse %+v, postgres %+v, missing %v, extra %v, "+
					"changed %v", d.Kind, d.ClickHouse, d.Postgres, d.Missing, d.Extra, d.Changed)
			}
			t.Fatalf("ClickHouse and the ledger differ for %s:%s", program, b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
