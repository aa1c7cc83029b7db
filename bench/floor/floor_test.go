package main

import (
	"context"
	"testing"
	"time"
)

// TestEveryStepCommitsWhatItAnswers runs each step briefly against the
// local PostgreSQL and an embedded NATS server, then counts the rows
// itself: each event answered as committed is exactly one row in the
// steps that write, and the others write none.
func TestEveryStepCommitsWhatItAnswers(t *testing.T) {
	ctx := context.Background()
	o := &options{duration: 300 * time.Millisecond, clients: 4, batchClients: 2,
		consumers: 2, members: 50}
	f, err := start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()

	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			res, err := f.runStep(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			g := res.Figures
			if g.RequestsOK == 0 || len(g.OtherAnswers) > 0 {
				t.Fatalf("%d requests answered as committed, other answers %v; want some "+
					"and no other", g.RequestsOK, g.OtherAnswers)
			}

			var rows, txns int
			err = f.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT txn_id)
				FROM floor_rows WHERE points = 10`).Scan(&rows, &txns)
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			if s.rows {
				want = g.RequestsOK * g.EventsPerRequest
			}
			if rows != want || txns != want {
				t.Fatalf("%d rows (%d transactions) after %d requests of %d events "+
					"answered as committed, want %d", rows, txns, g.RequestsOK,
					g.EventsPerRequest, want)
			}
			if !res.Check.OK {
				t.Fatalf("the step's own check failed: %+v", res.Check)
			}
		})
	}
}
