package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/puntos-loyalty/puntos/core/postgres"
)

// conversionsPendingCollector reports, at each scrape, the conversions
// waiting for another program's answer, by program and external program,
// and the age of the oldest: a partner that stopped answering shows as a
// count that grows and an age that does not fall back. A failed read (2 s
// at most) leaves both out and sets puntos_conversions_pending_up to 0.
type conversionsPendingCollector struct {
	read, disputes                func(context.Context) ([]postgres.PendingConversions, error)
	now                           func() time.Time
	log                           *slog.Logger
	pending, oldest, up, disputed *prometheus.Desc
}

// newConversionsPendingCollector reads the pending conversions with read
// and the disputed ones (settled conversions the other program answers
// otherwise) with disputes.
func newConversionsPendingCollector(read, disputes func(context.Context) (
	[]postgres.PendingConversions, error), log *slog.Logger) *conversionsPendingCollector {
	labels := []string{"program", "external"}
	return &conversionsPendingCollector{read: read, disputes: disputes, now: time.Now, log: log,
		disputed: prometheus.NewDesc("puntos_conversions_disputed",
			"Settled conversions the other program answers otherwise (a refusal it "+
				"credited, a confirmation it denies): a person must look.", labels, nil),
		pending: prometheus.NewDesc("puntos_conversions_pending",
			"Conversions waiting for the other program's answer, their points held.",
			labels, nil),
		oldest: prometheus.NewDesc("puntos_conversions_pending_oldest_seconds",
			"Age of the oldest conversion waiting for the other program's answer.",
			labels, nil),
		up: prometheus.NewDesc("puntos_conversions_pending_up",
			"1 when this scrape read the pending conversions, 0 when the read failed.",
			nil, nil)}
}

func (c *conversionsPendingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.oldest
	ch <- c.up
	ch <- c.disputed
}

func (c *conversionsPendingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	list, err := c.read(ctx)
	var disputed []postgres.PendingConversions
	if err == nil {
		disputed, err = c.disputes(ctx)
	}
	if err != nil {
		c.log.Warn("Pending conversions not counted for /metrics", "error", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	now := c.now()
	for _, p := range list {
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue,
			float64(p.Count), p.Program, p.External)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue,
			now.Sub(p.Oldest).Seconds(), p.Program, p.External)
	}
	for _, d := range disputed {
		ch <- prometheus.MustNewConstMetric(c.disputed, prometheus.GaugeValue,
			float64(d.Count), d.Program, d.External)
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
}
