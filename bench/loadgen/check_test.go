package main

import (
	"strings"
	"testing"
)

func TestJudgeFailsALostOrDoubledPoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    check
		ok   bool
		says string
	}{
		{"all there", check{Answered: 100, Postings: 100, DistinctTxns: 100, BalanceSum: 1000},
			true, "100 posted once each"},
		{"one lost", check{Answered: 100, Postings: 99, DistinctTxns: 99, BalanceSum: 990},
			false, "1 answered accruals are missing"},
		{"one doubled", check{Answered: 100, Postings: 101, DistinctTxns: 100,
			BalanceSum: 1010}, false, "1 accruals posted twice"},
		{"one extra", check{Answered: 100, Postings: 101, DistinctTxns: 101,
			BalanceSum: 1010}, false, "1 more accruals posted"},
		{"balances off", check{Answered: 100, Postings: 100, DistinctTxns: 100,
			BalanceSum: 999}, false, "balances add up to 999, postings to 1000"},
		{"invariant broken", check{Answered: 1, Postings: 1, DistinctTxns: 1, BalanceSum: 10,
			Violations: []string{"m0000001: cached 10; postings 0"}}, false, "1 members break"},
		{"unanswered but posted", check{Answered: 100, Unknown: 2, Postings: 101,
			DistinctTxns: 101, BalanceSum: 1010}, true, "2 unanswered, of which 1 posted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.judge()
			if c.OK != tc.ok || !strings.Contains(c.Summary, tc.says) {
				t.Fatalf("judge: ok=%t %q, want ok=%t containing %q", c.OK, c.Summary, tc.ok,
					tc.says)
			}
			if c.ExpectedSum != c.Answered*pointsPerEvent {
				t.Fatalf("expected sum %d, want %d", c.ExpectedSum, c.Answered*pointsPerEvent)
			}
		})
	}
}
