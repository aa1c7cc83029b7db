package main

import (
	"bufio"
	"bytes"
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// coreCounters are the platform's own counters that explain a scenario's
// latency: how many ledger transactions core ran, how long they took, and
// how many commands they applied.
type coreCounters struct {
	batches, batchSeconds, commands float64
	// ledger transactions, which merge partitions' batches (0 from a
	// platform that does not report them)
	txns, txnSeconds float64
}

// scrape reads the counters from /metrics; it returns zeros when the
// target does not expose them.
func (c *client) scrape(ctx context.Context) coreCounters {
	var k coreCounters
	st, raw, err := c.do(ctx, http.MethodGet, "/metrics", "", nil)
	if err != nil || st != http.StatusOK {
		return k
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch {
		case name == "puntos_batch_seconds_count":
			k.batches = v
		case name == "puntos_batch_seconds_sum":
			k.batchSeconds = v
		case name == "puntos_ledger_transaction_seconds_count":
			k.txns = v
		case name == "puntos_ledger_transaction_seconds_sum":
			k.txnSeconds = v
		case strings.HasPrefix(name, "puntos_commands_total{"):
			k.commands += v
		}
	}
	return k
}

// since describes the ledger transactions run between k0 and k. A
// platform that merges the partitions' batches reports its transactions
// apart; one that does not runs one per batch.
func (k coreCounters) since(k0 coreCounters) map[string]any {
	batches := k.batches - k0.batches
	n, secs := k.txns-k0.txns, k.txnSeconds-k0.txnSeconds
	if n <= 0 {
		n, secs = batches, k.batchSeconds-k0.batchSeconds
	}
	if n <= 0 {
		return map[string]any{"note": "no ledger transactions seen in /metrics"}
	}
	return map[string]any{
		"partition_batches":            batches,
		"ledger_transactions":          n,
		"commands_per_transaction":     math.Round((k.commands-k0.commands)/n*100) / 100,
		"mean_transaction_ms":          math.Round(secs/n*1e5) / 100,
		"transaction_seconds_in_total": math.Round(secs*100) / 100,
	}
}
