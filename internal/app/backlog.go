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

// backlogEvery is how often, at most, the backlogs are read: scrapes in
// between serve the last reading. Reading them costs a query of the outbox
// (a count of every row while the bus lags) and two JetStream requests per
// partition; a load generator or a dashboard polling /metrics every few
// milliseconds took a fifth of core's batch throughput with them.
const backlogEvery = time.Second

// backlogCollector reports, at each scrape, what waits between the parts
// of the platform: messages of the command stream core has not applied yet
// (by partition), ledger events the outbox holds for the bus, and events
// the reporting sink has not copied into ClickHouse yet. A backlog that
// keeps growing names the part that is behind: core (commands), the bus
// (outbox) or ClickHouse (reporting). Each part is read only by the
// processes that run it; a nil reader leaves its gauges out. A read that
// fails or outlasts the timeout leaves out its own gauges (the others are
// served) and sets puntos_backlog_up to 0. The backlogs are read at most
// once per every; scrapes in between, however many, serve that reading.
type backlogCollector struct {
	commands  func(context.Context) ([]uint64, error)
	outbox    func(context.Context) (int64, time.Time, error)
	reporting func(context.Context) (uint64, error)
	now       func() time.Time
	timeout   time.Duration
	every     time.Duration
	log       *slog.Logger

	mu   sync.Mutex // held while reading, so that scrapes at once share one reading
	last backlogReading

	commandsDesc, outboxDesc, outboxOldest, reportingDesc, up *prometheus.Desc
}

// backlogReading is one reading of every backlog, with each read's error.
type backlogReading struct {
	at               time.Time
	commands         []uint64
	outboxN          int64
	oldest           time.Time
	reporting        uint64
	errC, errO, errR error
}

func newBacklogCollector(log *slog.Logger) *backlogCollector {
	return &backlogCollector{now: time.Now, timeout: backlogTimeout, every: backlogEvery,
		log: log,
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
			"1 when the last reading (at most a second old) read every backlog this "+
				"process reports, 0 when a read failed or timed out (that backlog's gauges "+
				"are then left out).", nil, nil)}
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

// Collect serves the last reading of the backlogs, reading them again
// when it is older than every.
func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if c.last.at.IsZero() || c.now().Sub(c.last.at) >= c.every {
		c.last = c.read()
	}
	r := c.last
	c.mu.Unlock()
	c.serve(ch, r)
}

// read reads the backlogs at once, each within the timeout: a read that
// hangs (a table locked, a server slow) leaves out only its own gauges.
func (c *backlogCollector) read() backlogReading {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var (
		wg sync.WaitGroup
		r  backlogReading
	)
	if c.commands != nil {
		wg.Go(func() { r.commands, r.errC = c.commands(ctx) })
	}
	if c.outbox != nil {
		wg.Go(func() { r.outboxN, r.oldest, r.errO = c.outbox(ctx) })
	}
	if c.reporting != nil {
		wg.Go(func() { r.reporting, r.errR = c.reporting(ctx) })
	}
	wg.Wait()
	r.at = c.now()
	for what, err := range map[string]error{"commands": r.errC, "outbox": r.errO,
		"reporting": r.errR} {
		if err != nil {
			c.log.Warn("Backlog not counted for /metrics", "backlog", what, "error", err)
		}
	}
	return r
}

// serve sends the gauges of reading r; the outbox's age is as of now.
func (c *backlogCollector) serve(ch chan<- prometheus.Metric, r backlogReading) {
	up := 1.0
	ok := func(err error) bool {
		if err != nil {
			up = 0
		}
		return err == nil
	}
	if c.commands != nil && ok(r.errC) {
		for p, n := range r.commands {
			ch <- prometheus.MustNewConstMetric(c.commandsDesc, prometheus.GaugeValue,
				float64(n), strconv.Itoa(p))
		}
	}
	if c.outbox != nil && ok(r.errO) {
		age := 0.0
		if r.outboxN > 0 && !r.oldest.IsZero() {
			age = max(c.now().Sub(r.oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.outboxDesc, prometheus.GaugeValue,
			float64(r.outboxN))
		ch <- prometheus.MustNewConstMetric(c.outboxOldest, prometheus.GaugeValue, age)
	}
	if c.reporting != nil && ok(r.errR) {
		ch <- prometheus.MustNewConstMetric(c.reportingDesc, prometheus.GaugeValue,
			float64(r.reporting))
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
}
