package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/puntos-loyalty/puntos/core/postgres"
)

// waitAccrualsApplied waits up to within for want accrual commands to be
// applied, and fails the test if they are not.
func waitAccrualsApplied(t *testing.T, pool *pgxpool.Pool, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var applied int
	for time.Now().Before(deadline) {
		_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM commands
			WHERE kind = 'points.accrue' AND status = 'ok'`).Scan(&applied)
		if applied == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%d of %d accruals applied", applied, want)
}

// checkAccrualsPostedOnce checks that the ledger holds exactly want accrual
// postings, none for the same transaction twice, that members hold want x
// each points in all, and that the ledger's invariants hold.
func checkAccrualsPostedOnce(t *testing.T, pool *pgxpool.Pool, want int, each int64) {
	t.Helper()
	var postings, doubled int
	var total int64
	ctx := context.Background()
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM postings WHERE kind = 'accrual'`).Scan(&postings)
	_ = pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT txn_id FROM postings
		WHERE kind = 'accrual' GROUP BY source, txn_id HAVING count(*) > 1) d`).Scan(&doubled)
	_ = pool.QueryRow(ctx, `SELECT coalesce(sum(available), 0) FROM members`).Scan(&total)
	if postings != want || doubled != 0 || total != int64(want)*each {
		t.Fatalf("postings %d (want %d), doubled %d, total points %d (want %d)", postings, want,
			doubled, total, int64(want)*each)
	}
	v, err := postgres.New(pool, slog.New(slog.DiscardHandler)).Check(ctx)
	if err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %v %+v", err, v)
	}
}

// loadCounts is what happened to the sends of faultLoad.
type loadCounts struct {
	statuses  map[int]int // answers that were not an acceptance, by status
	retried   int64       // sends made again after a failure
	transport int64       // sends that got no HTTP answer
	accepted  int64       // 202 answers: stored on the bus, not applied yet
	inFault   int64       // sends made while the fault was on
}

// faultLoad is the load of the fault tests. Each of members members (M00,
// M01...) gets perMember accruals of 10.00 (txn acc-<m>-<i>) from its own
// caller, in order; a send that gets no answer or a 5xx is sent again with
// the same Idempotency-Key, as a client would through an outage, until it
// is accepted (201 or 202) or patience runs out. Once every caller is a
// third of the way through, fault runs; it sets on while the sends it
// wants counted apart are made. faultLoad returns when every caller is done.
func faultLoad(t *testing.T, base string, members, perMember int, patience time.Duration,
	fault func(on *atomic.Bool)) loadCounts {
	t.Helper()
	hc := &http.Client{Timeout: 20 * time.Second}
	var retried, transport, accepted, inFault atomic.Int64
	var on atomic.Bool
	counts := loadCounts{statuses: map[int]int{}}
	var mu sync.Mutex
	var sent sync.WaitGroup
	halfway := make(chan struct{}, members)
	for m := range members {
		sent.Go(func() {
			for i := range perMember {
				if i == perMember/3 {
					halfway <- struct{}{}
				}
				path := fmt.Sprintf("/v1/programs/telco/members/M%02d/events", m)
				txn := fmt.Sprintf("acc-%d-%d", m, i)
				deadline := time.Now().Add(patience)
				for {
					if on.Load() {
						inFault.Add(1)
					}
					r, err := call(hc, base, testKey, "POST", path, txn,
						map[string]any{"type": "top_up", "amount": "10.00"})
					if err == nil && r.status == 202 {
						accepted.Add(1)
					}
					if err == nil && (r.status == 201 || r.status == 202) {
						break
					}
					if err == nil {
						mu.Lock()
						counts.statuses[r.status]++
						mu.Unlock()
					} else {
						transport.Add(1)
					}
					if (err == nil && r.status < 500) || time.Now().After(deadline) {
						t.Errorf("accrual %s: %d %s %v", txn, r.status, r.raw, err)
						return
					}
					retried.Add(1)
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	for range members {
		select {
		case <-halfway:
		case <-time.After(60 * time.Second):
			t.Fatal("the callers did not get a third of the way")
		}
	}
	fault(&on)
	sent.Wait()
	counts.retried, counts.transport = retried.Load(), transport.Load()
	counts.accepted, counts.inFault = accepted.Load(), inFault.Load()
	return counts
}
