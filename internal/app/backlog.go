package app

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// backlogTimeout bounds the reads of one scrape's backlogs.
const backlogTimeout = 2 * time.Second

// backlogCollector reports, at each scrape, what waits between the parts
// of the platform: messages of the command stream core has not applied yet
// (by partition), ledger events the outbox holds for the bus, and events
// the reporting sink has not copied into ClickHouse yet. A backlog that
// keeps growing names the part that is behind: core (commands), the bus
// (outbox) or ClickHouse (reporting). Each part is read only by the
// processes that run it; a nil reader leaves its gauges out. A read that
// fails or outlasts the timeout leaves out its own gauges (the others are
// served) and sets puntos_backlog_up to 0.
type backlogCollector struct {
	commands  func(context.Context) ([]uint64, error)
	outbox    func(context.Context) (int64, time.Time, error)
	reporting func(context.Context) (uint64, error)
	now       func() time.Time
	timeout   time.Duration
	log       *slog.Logger

	commandsDesc, outboxDesc, outboxOldest, reportingDesc, up *prometheus.Desc
}

func newBacklogCollector(log *slog.Logger) *backlogCollector {
	return &backlogCollector{now: time.Now, timeout: backlogTimeout, log: log,
		commandsDesc: prometheus.NewDesc("puntos_command_messages_waiting",
			"Messages of the command stream core has not applied yet, by partition: not "+
				"delivered, or delivered and not acknowledged. A message is one command or "+
				"a pack of them. The same value from every core process.",
			[]string{"partition"}, nil),
		outboxDesc: prometheus.NewDesc("puntos_outbox_events_waiting",
			"Ledger events written to the outbox and not yet relayed to the bus.", nil, nil),
		outboxOldest: prometheus.NewDesc("puntos_outbox_oldest_seconds",
			"Age of the oldest ledger event waiting in the outbox; 0 when none waits.",
			nil, nil),
		reportingDesc: prometheus.NewDesc("puntos_reporting_events_waiting",
			"Ledger events on the bus the reporting sink has not copied into ClickHouse "+
				"yet: reports lag the ledger by these.", nil, nil),
		up: prometheus.NewDesc("puntos_backlog_up",
			"1 when this scrape read every backlog this process reports, 0 when a read "+
				"failed or timed out (that backlog's gauges are then left out).", nil, nil)}
}

// empty says whether the collector has nothing to report.
func (c *backlogCollector) empty() bool {
	return c.commands == nil && c.outbox == nil && c.reporting == nil
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.commandsDesc
	ch <- c.outboxDesc
	ch <- c.outboxOldest
	ch <- c.reportingDesc
	ch <- c.up
}

// Collect reads the backlogs at once, each within the timeout: a read that
// hangs (a table locked, a server slow) leaves out only its own gauges.
func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var (
		wg               sync.WaitGroup
		commands         []uint64
		outboxN          int64
		oldest           time.Time
		reporting        uint64
		errC, errO, errR error
	)
	if c.commands != nil {
		wg.Go(func() { commands, errC = c.commands(ctx) })
	}
	if c.outbox != nil {
		wg.Go(func() { outboxN, oldest, errO = c.outbox(ctx) })
	}
	if c.reporting != nil {
		wg.Go(func() { reporting, errR = c.reporting(ctx) })
	}
	wg.Wait()

	up := 1.0
	ok := func(what string, err error) bool {
		if err != nil {
			c.log.Warn("Backlog not counted for /metrics", "backlog", what, "error", err)
			up = 0
		}
		return err == nil
	}
	if c.commands != nil && ok("commands", errC) {
		for p, n := range commands {
			ch <- prometheus.MustNewConstMetric(c.commandsDesc, prometheus.GaugeValue,
				float64(n), strconv.Itoa(p))
		}
	}
	if c.outbox != nil && ok("outbox", errO) {
		age := 0.0
		if outboxN > 0 && !oldest.IsZero() {
			age = max(c.now().Sub(oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.outboxDesc, prometheus.GaugeValue, float64(outboxN))
		ch <- prometheus.MustNewConstMetric(c.outboxOldest, prometheus.GaugeValue, age)
	}
	if c.reporting != nil && ok("reporting", errR) {
		ch <- prometheus.MustNewConstMetric(c.reportingDesc, prometheus.GaugeValue,
			float64(reporting))
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
}
