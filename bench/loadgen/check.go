package main

import (
	"context"
	"fmt"
	"time"
)

// check is the ledger's verdict on the run so far.
type check struct {
	OK           bool     `json:"ok"`
	Summary      string   `json:"summary"`
	Answered     int64    `json:"accruals_answered_201_202"`
	Unknown      int64    `json:"accruals_unanswered"`
	Postings     int64    `json:"accrual_postings"`
	DistinctTxns int64    `json:"accrual_postings_distinct_txn"`
	BalanceSum   int64    `json:"sum_of_balances"`
	ExpectedSum  int64    `json:"expected_sum_of_balances"`
	Violations   []string `json:"invariant_violations"`
	DrainSeconds float64  `json:"drain_s"`
}

const countAccruals = `SELECT count(*), count(DISTINCT (p.source, p.txn_id))
	FROM postings p JOIN programs g ON g.id = p.program_id
	WHERE g.code = $1 AND p.kind = 'accrual'`

const sumBalances = `SELECT coalesce(sum(m.available + m.held + m.pending), 0)::bigint
	FROM members m JOIN programs g ON g.id = m.program_id WHERE g.code = $1`

const countMembers = `SELECT count(*) FROM members m JOIN programs g ON g.id = m.program_id
	WHERE g.code = $1`

// enrolled counts the program's members in the ledger.
func (r *runner) enrolled(ctx context.Context) (int, error) {
	var n int
	err := r.target.pool.QueryRow(ctx, countMembers, r.program).Scan(&n)
	return n, err
}

// checkLedger waits for the accruals answered 202 to reach the ledger, then
// compares it with what the clients were told: every accrual answered 201
// or 202 is posted exactly once, the balances add up to ten points each,
// and the ledger's own invariants (balances = postings = lots) hold.
func (r *runner) checkLedger(ctx context.Context) (check, error) {
	c := check{Answered: r.acct.committed.Load() + r.acct.accepted.Load(),
		Unknown: r.acct.unknown.Load(), Violations: []string{}}
	pool := r.target.pool
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	for {
		if err := pool.QueryRow(ctx, countAccruals, r.program).Scan(&c.Postings,
			&c.DistinctTxns); err != nil {
			return c, fmt.Errorf("count postings: %w", err)
		}
		if c.Postings >= c.Answered+c.Unknown || time.Now().After(deadline) {
			break
		}
		// Unanswered accruals may never arrive: give them a few seconds only.
		if c.Postings >= c.Answered && time.Since(start) > 10*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.DrainSeconds = time.Since(start).Seconds()

	// A second look after a pause catches a late duplicate.
	time.Sleep(time.Second)
	if err := pool.QueryRow(ctx, countAccruals, r.program).Scan(&c.Postings,
		&c.DistinctTxns); err != nil {
		return c, fmt.Errorf("count postings: %w", err)
	}
	if err := pool.QueryRow(ctx, sumBalances, r.program).Scan(&c.BalanceSum); err != nil {
		return c, fmt.Errorf("sum balances: %w", err)
	}
	vs, err := r.target.ledger.Check(ctx)
	if err != nil {
		return c, err
	}
	for _, v := range vs {
		c.Violations = append(c.Violations, v.Member+": "+v.What)
	}
	c.judge()
	return c, nil
}

// judge sets OK and Summary from the counts: the ledger must hold every
// answered accrual exactly once (and at most the unanswered ones besides),
// with balances summing to the points those postings earned.
func (c *check) judge() {
	c.OK = false
	c.ExpectedSum = c.Answered * pointsPerEvent
	switch {
	case len(c.Violations) > 0:
		c.Summary = fmt.Sprintf("%d members break the ledger's invariants", len(c.Violations))
	case c.Postings != c.DistinctTxns:
		c.Summary = fmt.Sprintf("%d accruals posted twice", c.Postings-c.DistinctTxns)
	case c.Postings < c.Answered:
		c.Summary = fmt.Sprintf("%d answered accruals are missing from the ledger",
			c.Answered-c.Postings)
	case c.Postings > c.Answered+c.Unknown:
		c.Summary = fmt.Sprintf("%d more accruals posted than were sent",
			c.Postings-c.Answered-c.Unknown)
	case c.BalanceSum != c.Postings*pointsPerEvent:
		c.Summary = fmt.Sprintf("balances add up to %d, postings to %d", c.BalanceSum,
			c.Postings*pointsPerEvent)
	default:
		c.OK = true
		c.Summary = fmt.Sprintf("%d accruals answered, %d posted once each, balances "+
			"sum to %d, no invariant broken", c.Answered, c.Postings, c.BalanceSum)
		if c.Unknown > 0 {
			c.Summary += fmt.Sprintf(" (%d unanswered, of which %d posted)", c.Unknown,
				c.Postings-c.Answered)
		}
	}
}
