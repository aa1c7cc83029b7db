package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/internal/testenv"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
)

// awaitMetrics scrapes addr until ok accepts a scrape, and returns it; after
// 30 s it fails the test with what the last scrape read of the names given.
func awaitMetrics(t *testing.T, addr, what string, ok func(map[string]float64) bool,
	names ...string) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := scrape(t, addr)
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			var got []string
			for _, n := range names {
				v, present := m[n]
				got = append(got, fmt.Sprintf("%s=%v (present %v)", n, v, present))
			}
			t.Fatalf("%s: never seen; last scrape: %s", what, strings.Join(got, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// commandsWaiting sums puntos_command_messages_waiting over the partitions,
// and says whether every partition was present.
func commandsWaiting(m map[string]float64, partitions int) (float64, bool) {
	sum := 0.0
	for p := range partitions {
		v, ok := m[fmt.Sprintf(`puntos_command_messages_waiting{partition="%d"}`, p)]
		if !ok {
			return 0, false
		}
		sum += v
	}
	return sum, true
}

// While another process holds every partition's lease, the commands a
// gateway accepts wait on the bus: the core process's page counts them
// (its consumers were never made, so the partitions' messages are counted;
// the balance shows none of them yet), and once the leases come free core applies them and the count falls to
// zero.
func TestMetricsShowCommandsWaiting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.ResultWait = 300 * time.Millisecond
	// The program and its members' first commands, applied by a first
	// process, which then stops.
	first := startApp(t, cfg, Roles{Gateway: true, Core: true})
	c := &client{t: t, base: "http://" + first.Addr(), key: testKey}
	c.must(201, "PUT", "/v1/programs/telco", "prog-1", map[string]any{
		"name": "Telco", "currency": "USD", "points_per_unit": "1",
		"expiry_unit": "months", "expiry_length": 24})
	for i := range 2 {
		c.must(201, "POST", "/v1/programs/telco/members", fmt.Sprintf("enr-%d", i),
			map[string]any{"customer_ref": fmt.Sprintf("M%d", i)})
	}
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := first.Shutdown(stopCtx); err != nil {
		t.Fatal(err)
	}

	holder, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	for p := range cfg.Partitions {
		if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, partitionLockBase+p); err != nil {
			t.Fatal(err)
		}
	}
	cfg2 := testConfig(t) // a bus of its own: no consumer on it yet
	cfg2.DatabaseURL, cfg2.ResultWait = cfg.DatabaseURL, 300*time.Millisecond
	a := startApp(t, cfg2, Roles{Gateway: true, Core: true})
	c = &client{t: t, base: "http://" + a.Addr(), key: testKey}
	m := scrape(t, a.Addr())
	if n, all := commandsWaiting(m, cfg.Partitions); !all || n != 0 {
		t.Fatalf("commands waiting before any request: %v (every partition present: %v)", n, all)
	}

	// Answered 202: stored on the bus, not applied.
	for i, ref := range []string{"M0", "M1", "M0"} {
		c.must(202, "POST", "/v1/programs/telco/members/"+ref+"/events",
			fmt.Sprintf("bill-%d", i), map[string]any{"type": "bill_paid", "amount": "10"})
	}
	awaitMetrics(t, a.Addr(), "three commands waiting", func(m map[string]float64) bool {
		n, all := commandsWaiting(m, cfg.Partitions)
		return all && n == 3 && m["puntos_backlog_up"] == 1
	}, "puntos_backlog_up")
	if b := c.must(200, "GET", "/v1/programs/telco/members/M0/balance", "", nil); jnum(t, b, "balance.available") != 0 {
		t.Fatalf("M0's balance while its bills wait: %s, want 0", b.raw)
	}

	// The leases come free: core takes them and applies what waited.
	for p := range cfg.Partitions {
		if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, partitionLockBase+p); err != nil {
			t.Fatal(err)
		}
	}
	awaitMetrics(t, a.Addr(), "no command waiting", func(m map[string]float64) bool {
		n, all := commandsWaiting(m, cfg.Partitions)
		return all && n == 0
	}, "puntos_backlog_up")
	for i, want := range []int64{20, 10} {
		b := c.must(200, "GET", fmt.Sprintf("/v1/programs/telco/members/M%d/balance", i), "", nil)
		if got := jnum(t, b, "balance.available"); got != want {
			t.Fatalf("M%d holds %d points once its bills are applied, want %d", i, got, want)
		}
	}
}

// The outbox and the reporting sink: with ClickHouse away the events the
// ledger writes wait for the sink, one per accrual, and fall to zero once it
// is back; with the events stream gone the relay cannot publish, the events
// wait in the outbox (with the age of the oldest), and are relayed once a
// process puts the stream back; the sink, whose consumer went with the
// stream, makes it again and copies them, so ClickHouse has every bill.
func TestMetricsShowOutboxAndReportingBacklogs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, url, err := natsbus.StartEmbedded(t.TempDir(), -1, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ch, chDB := chtest.Database(t)
	away := testenv.NewRelay(t, "") // ClickHouse, away for now
	cfg := testConfig(t)
	cfg.NATSURL = url
	cfg.ClickHouseAddr, cfg.ClickHouseDB = away.Addr(), chDB
	a := startApp(t, cfg, Roles{Gateway: true, Core: true, Adapters: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	c.must(201, "POST", "/v1/programs/telco/members", "enr-1",
		map[string]any{"customer_ref": "M1"})

	const rep = "puntos_reporting_events_waiting"
	const outbox, oldest = "puntos_outbox_events_waiting", "puntos_outbox_oldest_seconds"
	m := awaitMetrics(t, a.Addr(), "the outbox relayed", func(m map[string]float64) bool {
		v, ok := m[outbox]
		_, okR := m[rep]
		return ok && okR && v == 0
	}, outbox, rep)
	before := m[rep]
	if m[oldest] != 0 {
		t.Fatalf("%s = %v with nothing in the outbox, want 0", oldest, m[oldest])
	}
	for i := range 3 {
		c.must(201, "POST", "/v1/programs/telco/members/M1/events", fmt.Sprintf("bill-%d", i),
			map[string]any{"type": "bill_paid", "amount": "10"})
	}
	awaitMetrics(t, a.Addr(), "three more events for the sink", func(m map[string]float64) bool {
		return m[rep] == before+3
	}, rep)

	// ClickHouse comes back: the sink catches up.
	away.To(chtest.Addr())
	awaitMetrics(t, a.Addr(), "the sink caught up", func(m map[string]float64) bool {
		v, ok := m[rep]
		return ok && v == 0 && m["puntos_backlog_up"] == 1
	}, rep, "puntos_backlog_up")

	// The events stream goes: the relay cannot publish what the ledger writes.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, bus.EventStream); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		c.must(201, "POST", "/v1/programs/telco/members/M1/events", fmt.Sprintf("top-%d", i),
			map[string]any{"type": "bill_paid", "amount": "5"})
	}
	if b := c.must(200, "GET", "/v1/programs/telco/members/M1/balance", "", nil); jnum(t, b, "balance.available") != 40 {
		t.Fatalf("M1's balance after 3 bills of 10 and 2 of 5: %s, want 40", b.raw)
	}
	awaitMetrics(t, a.Addr(), "two events in the outbox, waiting a while",
		func(m map[string]float64) bool { return m[outbox] == 2 && m[oldest] >= 1 },
		outbox, oldest, "puntos_backlog_up")

	// Another process connects and makes the streams again: the relay
	// publishes, and the sink reads them.
	gcfg := testConfig(t)
	gcfg.DatabaseURL, gcfg.NATSURL = cfg.DatabaseURL, url
	startApp(t, gcfg, Roles{Gateway: true})
	awaitMetrics(t, a.Addr(), "the outbox relayed again and the sink caught up",
		func(m map[string]float64) bool {
			o, ok := m[outbox]
			r, okR := m[rep]
			return ok && okR && o == 0 && r == 0 && m[oldest] == 0 && m["puntos_backlog_up"] == 1
		}, outbox, oldest, rep, "puntos_backlog_up")
	// ClickHouse holds all five bills, none lost with the stream.
	from := time.Now().Add(-time.Hour)
	if n := chtest.Reconciled(t, ch, a.Pool, "telco", from, time.Now().Add(time.Hour),
		30*time.Second); n != 5 {
		t.Fatalf("%d postings reconciled in ClickHouse, want 5", n)
	}
}

// Regression test of a defect an attack found (against 4d57008), now
// mended; the scenario as found:
//
// With the outbox table locked for 6 s, a scrape took 2 s and left out the
// outbox gauges and the reporting one too, though NATS was answering: the
// reads shared one timeout, one after the other. Each read now has the
// timeout to itself: only the outbox's gauges are left out.
func TestMetricsBacklogReadsAreIndependent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, chDB := chtest.Database(t)
	cfg := testConfig(t)
	cfg.ClickHouseAddr, cfg.ClickHouseDB = chtest.Addr(), chDB
	a := startApp(t, cfg, Roles{Gateway: true, Core: true, Adapters: true})
	c := &client{t: t, base: "http://" + a.Addr(), key: testKey}
	setupProgram(c)
	const outbox, rep = "puntos_outbox_events_waiting", "puntos_reporting_events_waiting"
	awaitMetrics(t, a.Addr(), "every backlog read", func(m map[string]float64) bool {
		_, o := m[outbox]
		_, r := m[rep]
		return o && r && m["puntos_backlog_up"] == 1
	}, outbox, rep, "puntos_backlog_up")

	tx, err := a.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// The reading of before the lock serves scrapes for up to a second;
	// the next one finds the outbox locked.
	m := awaitMetrics(t, a.Addr(), "the outbox left out while it is locked",
		func(m map[string]float64) bool {
			_, o := m[outbox]
			return !o
		}, outbox, rep, "puntos_backlog_up")
	if v, ok := m[rep]; !ok || v != 0 {
		t.Errorf("%s = %v (present %v) while only the outbox is locked, want 0", rep, v, ok)
	}
	if n, all := commandsWaiting(m, cfg.Partitions); !all || n != 0 {
		t.Errorf("commands waiting while the outbox is locked: %v (all present %v), want 0",
			n, all)
	}
	if m["puntos_backlog_up"] != 0 {
		t.Errorf("puntos_backlog_up = %v with a read failed, want 0", m["puntos_backlog_up"])
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	awaitMetrics(t, a.Addr(), "the outbox read again", func(m map[string]float64) bool {
		v, ok := m[outbox]
		return ok && v == 0 && m["puntos_backlog_up"] == 1
	}, outbox, "puntos_backlog_up")
}

// Scrapes serve one reading of the backlogs for a second: a dashboard or a
// load generator polling /metrics every few milliseconds no longer reads
// the outbox and every partition's consumer each time (on the load
// generator's bus batches that took about a fifth of core's throughput).
// The outbox's age still moves with each scrape, and a second later the
// backlogs are read again.
func TestMetricsBacklogsReadOncePerSecond(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	oldest := now.Add(-10 * time.Second)
	reads, waiting := 0, int64(7)
	c := newBacklogCollector(slog.New(slog.DiscardHandler))
	c.now = func() time.Time { return now }
	c.outbox = func(context.Context) (int64, time.Time, error) {
		reads++
		return waiting, oldest, nil
	}
	gauges := func() (n, age float64) {
		t.Helper()
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			switch f.GetName() {
			case "puntos_outbox_events_waiting":
				n = f.GetMetric()[0].GetGauge().GetValue()
			case "puntos_outbox_oldest_seconds":
				age = f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return n, age
	}
	if n, age := gauges(); n != 7 || age != 10 || reads != 1 {
		t.Fatalf("first scrape: %v waiting, %v s old, %d reads; want 7, 10, 1", n, age, reads)
	}
	waiting = 9
	for range 50 {
		now = now.Add(10 * time.Millisecond)
		gauges()
	}
	if n, age := gauges(); n != 7 || age != 10.5 || reads != 1 {
		t.Fatalf("51 scrapes within the second: %v waiting, %v s old, %d reads; want the "+
			"first reading (7), 10.5 s old, 1 read", n, age, reads)
	}
	now = now.Add(500 * time.Millisecond)
	if n, _ := gauges(); n != 9 || reads != 2 {
		t.Fatalf("a second after the first reading: %v waiting, %d reads; want 9 read again",
			n, reads)
	}
}
