package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestTransientErrors checks which ledger failures core retries in place
// rather than counting them against the command: those of the connection
// and of a busy or stopping server, not those a command causes.
func TestTransientErrors(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("command billing/x: %w", err) }
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{wrap(&pgconn.PgError{Code: "40001"}), true},  // serialization failure
		{wrap(&pgconn.PgError{Code: "40P01"}), true},  // deadlock
		{wrap(&pgconn.PgError{Code: "57P01"}), true},  // admin shutdown
		{wrap(&pgconn.PgError{Code: "53300"}), true},  // too many connections
		{wrap(&pgconn.PgError{Code: "08006"}), true},  // connection failure
		{wrap(&pgconn.PgError{Code: "23505"}), false}, // unique violation
		{wrap(&pgconn.PgError{Code: "22003"}), false}, // numeric out of range
		{wrap(io.ErrUnexpectedEOF), true},
		{wrap(context.DeadlineExceeded), true},
		{errors.New("payload: not JSON"), false},
	} {
		if got := transientError(tc.err); got != tc.want {
			t.Errorf("transientError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestPostgresOutageOutlastsRetryBudget keeps the ledger's PostgreSQL (a
// private cluster of this test) down for several times the bus's retry
// budget, which the test makes small: three deliveries, less than a second
// of retries. Meanwhile the gateway accepts accruals with 202. When
// PostgreSQL is back, every accepted accrual is posted exactly once and
// none is dead-lettered: an outage does not count as a failed attempt.
func TestPostgresOutageOutlastsRetryBudget(t *testing.T) {
	t.Parallel()
	pg := startPrivatePG(t)
	ctx := context.Background()
	cfg := &Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: pg.createDatabase(t, "puntos"),
		NATSPort: -1, NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64,
		ResultWait: 500 * time.Millisecond, MaxDeliver: 3, APIKeys: "billing=" + testKey,
		LogLevel: "warn"}
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	// The result wait is short: on a busy machine a write before the outage
	// may be answered 202 first, and applied polls on until it is applied.
	telcoApplied(t, c)
	const members, before, during = 6, 4, 6
	for m := range members {
		applied(t, c, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", m),
			map[string]any{"customer_ref": fmt.Sprintf("M%02d", m)})
	}
	accrue := func(m, i int) reply {
		return c.send("POST", fmt.Sprintf("/v1/programs/telco/members/M%02d/events", m),
			fmt.Sprintf("acc-%d-%d", m, i), map[string]any{"type": "top_up", "amount": "10.00"})
	}
	for m := range members {
		for i := range before {
			applied(t, c, "POST", fmt.Sprintf("/v1/programs/telco/members/M%02d/events", m),
				fmt.Sprintf("acc-%d-%d", m, i), map[string]any{"type": "top_up",
					"amount": "10.00"})
		}
	}

	// PostgreSQL goes away; the callers go on, and are told 202.
	if err := pg.stop(); err != nil {
		t.Fatalf("stop PostgreSQL: %v", err)
	}
	stopped := time.Now()
	var accepted atomic.Int64
	var sent sync.WaitGroup
	hc := &http.Client{Timeout: 20 * time.Second}
	for m := range members {
		sent.Go(func() {
			for i := before; i < before+during; i++ {
				txn := fmt.Sprintf("acc-%d-%d", m, i)
				r, err := call(hc, c.base, testKey, "POST",
					fmt.Sprintf("/v1/programs/telco/members/M%02d/events", m), txn,
					map[string]any{"type": "top_up", "amount": "10.00"})
				if err != nil || r.status != 202 {
					t.Errorf("accrual %s while PostgreSQL is down: %d %s %v", txn, r.status,
						r.raw, err)
					return
				}
				accepted.Add(1)
			}
		})
	}
	sent.Wait()
	if t.Failed() {
		return
	}

	// Stay down for several budgets, and long enough for core to lose its
	// partition leases; then come back.
	outage := 8 * time.Second
	time.Sleep(time.Until(stopped.Add(outage)))
	if err := pg.start(); err != nil {
		t.Fatalf("start PostgreSQL again: %v", err)
	}
	back := time.Now()

	want := members * (before + during)
	waitAccrualsApplied(t, a.Pool, want, 45*time.Second)
	if dead, err := a.Bus.DeadLetters(ctx, 100); err != nil || len(dead) != 0 {
		t.Fatalf("dead letters after the outage: %d %+v %v", len(dead), dead, err)
	}
	checkAccrualsPostedOnce(t, a.Pool, want, 10)
	for m := range members {
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/M%02d/balance", m), "", nil)
		if got := jnum(t, b, "balance.available"); got != (before+during)*10 {
			t.Errorf("M%02d available %d, want %d", m, got, (before+during)*10)
		}
		// A retry of an accrual accepted during the outage is a replay.
		r := accrue(m, before)
		if r.status != 201 || r.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry of acc-%d-%d: %d %s", m, before, r.status, r.raw)
		}
	}
	if v, err := a.Ledger.Check(ctx); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
	t.Logf("PostgreSQL down %s (retry budget: 3 deliveries); %d accruals answered 202 "+
		"meanwhile; all %d posted once %s after it came back", back.Sub(stopped).Round(
		time.Millisecond), accepted.Load(), want, time.Since(back).Round(time.Millisecond))
}

// TestBatchWaitsWhilePostgresRefusesConnections makes the ledger's database
// refuse new connections and drops every connection of core but the one
// holding its partition leases, so that core keeps its partitions. Accruals
// are accepted with 202 meanwhile. With a retry budget of one delivery, any
// failure counted against a command would dead-letter it: instead the
// batches wait, and every accrual is posted once when connections are
// allowed again, without the leases ever changing hands.
func TestBatchWaitsWhilePostgresRefusesConnections(t *testing.T) {
	t.Parallel()
	pg := startPrivatePG(t)
	url := pg.createDatabase(t, "puntos")
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.url("postgres"))
	if err != nil {
		t.Fatalf("connect to private PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)

	cfg := &Config{HTTPAddr: "127.0.0.1:0", DatabaseURL: url, NATSPort: -1,
		NATSSync: "always", DataDir: t.TempDir(), Partitions: 4, BatchSize: 64,
		ResultWait: 500 * time.Millisecond, MaxDeliver: 1, APIKeys: "billing=" + testKey,
		LogLevel: "warn"}
	a := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	telcoApplied(t, c) // a short result wait: 202 and polls on a busy machine
	const members, during = 4, 5
	for m := range members {
		applied(t, c, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", m),
			map[string]any{"customer_ref": fmt.Sprintf("M%02d", m)})
		applied(t, c, "POST", fmt.Sprintf("/v1/programs/telco/members/M%02d/events", m),
			fmt.Sprintf("acc-%d-0", m), map[string]any{"type": "top_up", "amount": "10.00"})
	}

	// The backend holding the leases, the one connection left alone.
	leaseHolder := func() (pids []int32) {
		rows, err := admin.Query(ctx, `SELECT DISTINCT pid FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND objid BETWEEN $1 AND $2`,
			partitionLockBase, partitionLockBase+cfg.Partitions-1)
		if err != nil {
			t.Fatalf("read the leases: %v", err)
		}
		defer rows.Close()
		for rows.Next() {
			var pid int32
			_ = rows.Scan(&pid)
			pids = append(pids, pid)
		}
		return pids
	}
	before := leaseHolder()
	if len(before) != 1 {
		t.Fatalf("leases held by backends %v, want one", before)
	}
	_, err = admin.Exec(ctx, `ALTER DATABASE puntos ALLOW_CONNECTIONS false`)
	if err == nil {
		_, err = admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = 'puntos' AND pid <> $1`, before[0])
	}
	if err != nil {
		t.Fatalf("refuse connections: %v", err)
	}
	blocked := time.Now()

	var sent sync.WaitGroup
	for m := range members {
		sent.Go(func() {
			for i := 1; i <= during; i++ {
				r := c.send("POST", fmt.Sprintf("/v1/programs/telco/members/M%02d/events", m),
					fmt.Sprintf("acc-%d-%d", m, i), map[string]any{"type": "top_up",
						"amount": "10.00"})
				if r.status != 202 {
					t.Errorf("accrual acc-%d-%d while connections are refused: %d %s", m, i,
						r.status, r.raw)
				}
			}
		})
	}
	sent.Wait()
	time.Sleep(time.Until(blocked.Add(6 * time.Second)))
	if _, err := admin.Exec(ctx, `ALTER DATABASE puntos ALLOW_CONNECTIONS true`); err != nil {
		t.Fatalf("allow connections: %v", err)
	}
	if t.Failed() {
		return
	}

	want := members * (1 + during)
	waitAccrualsApplied(t, a.Pool, want, 30*time.Second)
	if dead, err := a.Bus.DeadLetters(ctx, 100); err != nil || len(dead) != 0 {
		t.Fatalf("dead letters: %d %+v %v", len(dead), dead, err)
	}
	checkAccrualsPostedOnce(t, a.Pool, want, 10)
	if after := leaseHolder(); len(after) != 1 || after[0] != before[0] {
		t.Fatalf("leases held by %v after the refusal, by %v before: core lost them, so "+
			"this test did not see a batch wait", after, before)
	}
	if v, err := a.Ledger.Check(ctx); err != nil || len(v) > 0 {
		t.Fatalf("ledger invariants: %+v %v", v, err)
	}
}
