package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/puntos-loyalty/puntos/bus/natsbus"
)

// deadWaitingTimeout bounds the read of the dead-letter stream's counts in
// one scrape of /metrics.
const deadWaitingTimeout = 2 * time.Second

// deadWaitingCollector reports, at each scrape, how many dead letters wait
// for an operator (natsbus.Bus.DeadLettersWaiting), by kind: failed (a
// command that could not be applied, or not a command) and refused (the
// ledger refused it for good and answered so). The count is a fact of
// the shared dead-letter stream, not of this process: every process that
// exports it reports the same value. When the read fails or outlasts its
// timeout, the scrape goes on without puntos_dead_letters_waiting, and
// puntos_dead_letters_waiting_up says 0: Prometheus keeps no stale value,
// and the rest of the page is served as usual.
type deadWaitingCollector struct {
	count   func(context.Context) (natsbus.Waiting, error)
	timeout time.Duration
	log     *slog.Logger
	waiting *prometheus.Desc
	up      *prometheus.Desc
}

func newDeadWaitingCollector(count func(context.Context) (natsbus.Waiting, error),
	log *slog.Logger) *deadWaitingCollector {
	return &deadWaitingCollector{count: count, timeout: deadWaitingTimeout, log: log,
		waiting: prometheus.NewDesc("puntos_dead_letters_waiting",
			"Dead letters in the dead-letter stream now, neither re-driven nor discarded, "+
				"by kind: failed (could not be applied) or refused (the ledger refused it "+
				"and answered so); the same value from every process that exports it.",
			[]string{"kind"}, nil),
		up: prometheus.NewDesc("puntos_dead_letters_waiting_up",
			"1 when this scrape read the dead-letter stream's counts, 0 when the read "+
				"failed or timed out (puntos_dead_letters_waiting is then left out).",
			nil, nil)}
}

// Describe sends the descriptions of both gauges.
func (c *deadWaitingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.waiting
	ch <- c.up
}

// Collect reads the count, within the collector's timeout.
func (c *deadWaitingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	n, err := c.count(ctx)
	if err != nil {
		c.log.Warn("Dead letters waiting not counted for /metrics", "error", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(n.Failed),
		"failed")
	ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(n.Refused),
		"refused")
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
}
