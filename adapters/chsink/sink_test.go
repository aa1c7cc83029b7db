package chsink

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core"
	"github.com/puntos-loyalty/puntos/reporting"
	"github.com/puntos-loyalty/puntos/reporting/chtest"
	"github.com/puntos-loyalty/puntos/reporting/clickhouse"
)

// The tests run the sink against real services: an embedded NATS server of
// their own, a PostgreSQL ledger and a ClickHouse database each (dropped at
// the end). They fail when PostgreSQL or ClickHouse is unreachable; run
// `make services`.

const santiago = "America/Santiago"

// testNATS is an embedded server for one test, in a namespace of its own so
// that subjects and stream names carry the prefix as in a shared server.
type testNATS struct {
	url, ns string
}

func startNATS(t *testing.T) testNATS {
	t.Helper()
	s, url, err := natsbus.StartEmbedded(t.TempDir(), 0, false)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return testNATS{url: url, ns: "t" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")}
}

// connect opens a bus on the test server with short waits: a batch that was
// not acknowledged comes back after a second.
func (n testNATS) connect(t *testing.T) *natsbus.Bus {
	t.Helper()
	b, err := natsbus.Connect(t.Context(), natsbus.Config{URL: n.url, Namespace: n.ns,
		AckWait: time.Second, RetryDelay: 50 * time.Millisecond,
		MaxRetryDelay: 300 * time.Millisecond}, testLog(t))
	if err != nil {
		t.Fatalf("connect bus: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// raw is a plain connection to the test server, to publish what the bus
// would not and to look at the consumer.
func (n testNATS) raw(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// publishRaw puts body on the events stream under its own message id, as a
// copy of an event published after the de-duplication window would be.
func (n testNATS) publishRaw(t *testing.T, js jetstream.JetStream, body []byte) {
	t.Helper()
	subject := n.ns + "." + bus.EventSubject("any", "copy")
	if _, err := js.Publish(t.Context(), subject, body,
		jetstream.WithMsgID(uuid.NewString())); err != nil {
		t.Fatalf("publish raw: %v", err)
	}
}

// consumerInfo describes the sink's consumer; it is the zero ConsumerInfo,
// with one pending message, until the sink has made the consumer.
func (n testNATS) consumerInfo(t *testing.T, js jetstream.JetStream) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(t.Context(), n.ns+"_"+bus.EventStream, DefaultDurable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return &jetstream.ConsumerInfo{NumPending: 1}
	}
	if err != nil {
		t.Fatalf("sink consumer: %v", err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatalf("sink consumer: %v", err)
	}
	return info
}

// testLog writes to the test's log.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// start runs s until the test ends or stop is called; stop returns what Run
// returned.
func start(t *testing.T, s *Sink) (stop func() error) {
	t.Helper()
	if s.BatchSize == 0 {
		s.BatchSize = 100
	}
	if s.MaxWait == 0 {
		s.MaxWait = 100 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("sink did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// eventually waits up to 10s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counts is the number of rows in ledger_events, copies included, and the
// number of distinct events.
func counts(t *testing.T, conn driver.Conn) (rows, distinct uint64) {
	t.Helper()
	err := conn.QueryRow(context.Background(),
		`SELECT count(), uniqExact(event_id) FROM ledger_events`).Scan(&rows, &distinct)
	if err != nil && !strings.Contains(err.Error(), "doesn't exist") {
		t.Fatal(err)
	}
	return rows, distinct
}

func liability(t *testing.T, conn driver.Conn, program string) reporting.Outstanding {
	t.Helper()
	all, err := reporting.Liabilities(t.Context(), conn, time.Time{})
	if err != nil {
		t.Fatalf("Liabilities: %v", err)
	}
	for _, o := range all {
		if o.Program == program {
			return o
		}
	}
	return reporting.Outstanding{Program: program}
}

func reconcile(t *testing.T, conn driver.Conn, l *chtest.Ledger,
	program string) []reporting.Difference {
	t.Helper()
	diffs, err := reporting.Reconcile(t.Context(), conn, l.Pool, program,
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return diffs
}

// capture records the events that pass through to the bus.
type capture struct {
	b   *natsbus.Bus
	mu  sync.Mutex
	evs []bus.Event
}

func (c *capture) PublishStoredEvents(ctx context.Context, stored []bus.StoredEvent) error {
	if err := c.b.PublishStoredEvents(ctx, stored); err != nil {
		return err
	}
	evs := make([]bus.Event, len(stored))
	for i, s := range stored {
		if err := json.Unmarshal(s.Body, &evs[i]); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.evs = append(c.evs, evs...)
	c.mu.Unlock()
	return nil
}

// TestSinkCountsEveryEventOnce runs the whole path: commands applied to the
// ledger, events relayed from the outbox to the bus, the sink into
// ClickHouse. Events reach the sink twice (a copy published after the
// de-duplication window, and a batch redelivered after the sink crashed
// between insert and ack), and the reports still match the ledger exactly.
func TestSinkCountsEveryEventOnce(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	conn, _ := chtest.Database(t) // The sink applies the schema itself.
	l := chtest.NewLedger(t, time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC))
	b1 := ns.connect(t)
	_, js := ns.raw(t)

	// Two programs; a is busy, b has one credit.
	pa, pb := "a"+uuid.NewString()[:8], "b"+uuid.NewString()[:8]
	for _, p := range []string{pa, pb} {
		l.Do(p, core.KindProgramUpsert, "", core.Program{Name: "Test", TimeZone: santiago})
		l.Do(p, core.KindEnroll, "ana", core.Enroll{Channel: "web"})
	}
	l.Do(pa, core.KindEnroll, "beto", core.Enroll{Channel: "web"})
	l.Do(pa, core.KindAccrue, "ana", core.Accrue{EventType: "topup", Amount: "1500"})
	l.Do(pa, core.KindCredit, "beto", core.Credit{Points: 400, Reason: "welcome"})
	l.Do(pa, core.KindRedeem, "ana", core.Redeem{Points: 300})
	l.Do(pa, core.KindAuthorize, "beto", core.Authorize{Points: 100})
	l.Do(pa, core.KindCapture, "beto", core.Capture{HoldTxnID: l.LastTxn(), Points: 60})
	l.Do(pa, core.KindAdjust, "ana", core.Adjust{Points: -20, Reason: "correction"})
	l.SetNow(time.Date(2026, 4, 2, 15, 0, 0, 0, time.UTC))
	l.Do(pa, core.KindTransfer, "ana", core.Transfer{To: "beto", Points: 80})
	l.Do(pb, core.KindCredit, "ana", core.Credit{Points: 70, Reason: "welcome"})

	// Relay the outbox to the bus, then publish everything again: the bus
	// drops the repeats (same event id within its window).
	relayed := &capture{b: b1}
	n := l.Relay(relayed)
	if n != 10 {
		t.Fatalf("%d events relayed; want 10", n)
	}
	if err := b1.PublishEvents(t.Context(), relayed.evs); err != nil {
		t.Fatal(err)
	}
	// A copy the bus cannot recognise: the same event under another id.
	body, _ := json.Marshal(relayed.evs[0])
	ns.publishRaw(t, js, body)

	// First sink: crashes (its bus connection closes) after its first
	// insert, before the acknowledgement.
	var inserts atomic.Int32
	s1 := &Sink{Bus: b1, Conn: conn, Log: testLog(t), BatchSize: 5}
	s1.afterInsert = func() {
		if inserts.Add(1) == 1 {
			b1.Close()
		}
	}
	crashed := make(chan error, 1)
	go func() { crashed <- s1.Run(context.Background()) }()
	select {
	case err := <-crashed:
		if !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("the crashed sink's Run returned %v; want the closed connection", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first sink did not stop when its connection closed")
	}
	if rows, _ := counts(t, conn); rows != 5 {
		t.Fatalf("%d rows after the crash; want the 5 of the first batch", rows)
	}

	// Second sink: the unacknowledged batch comes back after AckWait and is
	// inserted again, with everything else.
	b2 := ns.connect(t)
	stop2 := start(t, &Sink{Bus: b2, Conn: conn, Log: testLog(t)})
	eventually(t, "all events in ClickHouse", func() bool {
		_, distinct := counts(t, conn)
		info := ns.consumerInfo(t, js)
		return distinct == 10 && info.NumAckPending == 0 && info.NumPending == 0
	})
	// The batch of 5 and the raw copy came twice and are stored once.
	if rows, distinct := counts(t, conn); rows != distinct {
		t.Errorf("%d rows for %d events; want each stored once", rows, distinct)
	}

	// The reports count each event once and match the ledger.
	for _, p := range []string{pa, pb} {
		o := liability(t, conn, p)
		if owed := l.Owed(p); o.Points != owed {
			t.Errorf("program %s: liability %d; ledger balances %d", p, o.Points, owed)
		}
		if d := reconcile(t, conn, l, p); len(d) != 0 {
			t.Errorf("program %s: differences %+v; want none", p, d)
		}
	}
	// Program a: issued 1500 + 400, redeemed 300 + (100 - 40), adjusted
	// down 20; 1520 owed, of which 1500 in March and a transfer in April.
	if o := liability(t, conn, pa); o.Points != 1520 || o.Events != 9 {
		t.Errorf("program a: %+v; want 1520 points over 9 events", o)
	}
	if o := liability(t, conn, pb); o.Points != 70 || o.Events != 1 {
		t.Errorf("program b: %+v; want 70 points over 1 event", o)
	}
	got, err := reporting.PointFlows(t.Context(), conn, reporting.FlowQuery{Program: pa,
		TimeZone: santiago, Bucket: reporting.Month})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Issued != 1900 || got[0].Redeemed != 360 ||
		got[0].AdjustedDown != 20 || got[0].Net != 1520 || got[0].Events != 7 ||
		got[1].Moved != 0 || got[1].Net != 0 || got[1].Events != 2 {
		t.Errorf("program a flows %+v; want March 1900 issued, 360 redeemed, "+
			"20 adjusted down (7 events) and April's transfer", got)
	}

	// With the sink stopped, a new credit reaches the bus but not
	// ClickHouse: reconciliation names the posting. Once the sink runs
	// again, the difference is gone.
	if err := stop2(); err != nil {
		t.Errorf("sink Run: %v", err)
	}
	b3 := ns.connect(t)
	late := l.Do(pa, core.KindCredit, "ana", core.Credit{Points: 5, Reason: "late"})
	l.Relay(b3)
	d := reconcile(t, conn, l, pa)
	if len(d) != 1 || d[0].Kind != "credit" || len(d[0].Missing) != 1 ||
		d[0].Missing[0] != late.PostingIDs[0] {
		t.Fatalf("differences %+v; want the late credit missing", d)
	}
	start(t, &Sink{Bus: b3, Conn: conn, Log: testLog(t)})
	eventually(t, "the late credit in ClickHouse", func() bool {
		return len(reconcile(t, conn, l, pa)) == 0
	})
}

// TestSinkWaitsOutClickHouseOutage cuts the sink off ClickHouse (a proxy in
// between stops) while events keep coming: they stay in the stream, and
// arrive once ClickHouse is back.
func TestSinkWaitsOutClickHouseOutage(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	_, dbName := chtest.Database(t)

	p := newProxy(t, chtest.Addr())
	conn, err := clickhouse.Open(t.Context(), p.addr, dbName)
	if err != nil {
		t.Fatalf("open through the proxy: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	direct, err := clickhouse.Open(t.Context(), chtest.Addr(), dbName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Close() })

	b := ns.connect(t)
	_, js := ns.raw(t)
	start(t, &Sink{Bus: b, Conn: conn, Log: testLog(t)})

	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	batch := func(n int) []bus.Event {
		evs := make([]bus.Event, n)
		for i := range evs {
			evs[i] = bus.Event{ID: uuid.Must(uuid.NewV7()).String(), Kind: "accrual",
				Program: "p1", Member: "m", Points: 10, OccurredAt: at, RecordedAt: at}
		}
		return evs
	}

	// Before the outage.
	if err := b.PublishEvents(t.Context(), batch(20)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "20 events in ClickHouse and acknowledged", func() bool {
		_, d := counts(t, direct)
		return d == 20 && ns.consumerInfo(t, js).AckFloor.Stream == 20
	})

	// During: inserts fail, nothing is acknowledged, the events wait.
	p.down()
	if err := b.PublishEvents(t.Context(), batch(30)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "failed deliveries", func() bool {
		return ns.consumerInfo(t, js).NumRedelivered > 0
	})
	time.Sleep(500 * time.Millisecond)
	if _, d := counts(t, direct); d != 20 {
		t.Fatalf("%d events in ClickHouse during the outage; want 20", d)
	}
	if info := ns.consumerInfo(t, js); info.AckFloor.Stream != 20 {
		t.Errorf("ack floor %d during the outage; want 20", info.AckFloor.Stream)
	}

	// After: everything arrives, each event once.
	p.up()
	eventually(t, "50 events in ClickHouse", func() bool {
		_, d := counts(t, direct)
		info := ns.consumerInfo(t, js)
		return d == 50 && info.NumAckPending == 0 && info.NumPending == 0
	})
	if o := liability(t, direct, "p1"); o.Points != 500 || o.Events != 50 {
		t.Errorf("liability %+v; want 500 over 50 events", o)
	}
}

// TestSinkStartsBeforeClickHouse starts the sink while ClickHouse is down:
// it waits to apply the schema, then copies what was published meanwhile.
func TestSinkStartsBeforeClickHouse(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	direct, dbName := chtest.Database(t)
	p := newProxy(t, chtest.Addr())
	p.down()

	// clickhouse.Open would refuse a server that does not answer; the
	// driver itself dials lazily.
	conn, err := ch.Open(&ch.Options{Protocol: ch.Native, Addr: []string{p.addr},
		Auth: ch.Auth{Database: dbName, Username: "default"}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	b := ns.connect(t)
	_, js := ns.raw(t)
	start(t, &Sink{Bus: b, Conn: conn, Log: testLog(t)})
	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	evs := []bus.Event{
		{ID: uuid.NewString(), Kind: "credit", Program: "p1", Points: 3, OccurredAt: at,
			RecordedAt: at},
		{ID: uuid.NewString(), Kind: "redemption", Program: "p1", Points: -1, OccurredAt: at,
			RecordedAt: at},
	}
	if err := b.PublishEvents(t.Context(), evs); err != nil {
		t.Fatal(err)
	}

	time.Sleep(700 * time.Millisecond)
	if v, err := reporting.SchemaVersion(t.Context(), direct); err != nil || v != 0 {
		t.Fatalf("schema version %d (%v) while ClickHouse is away; want 0", v, err)
	}
	p.up()
	eventually(t, "the events in ClickHouse", func() bool {
		info := ns.consumerInfo(t, js)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	if o := liability(t, direct, "p1"); o.Points != 2 || o.Events != 2 {
		t.Errorf("liability %+v; want 2 over 2 events", o)
	}
}

// TestSinkDropsWhatItCannotStore feeds the sink messages that are not
// events and an event ClickHouse cannot hold: they are terminated, and the
// events around them are stored.
func TestSinkDropsWhatItCannotStore(t *testing.T) {
	t.Parallel()
	ns := startNATS(t)
	conn, _ := chtest.Database(t)
	b := ns.connect(t)
	_, js := ns.raw(t)

	at := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	good := func(points int64) bus.Event {
		return bus.Event{ID: uuid.Must(uuid.NewV7()).String(), Kind: "credit", Program: "p1",
			Points: points, OccurredAt: at, RecordedAt: at}
	}
	if err := b.PublishEvents(t.Context(), []bus.Event{good(1)}); err != nil {
		t.Fatal(err)
	}
	ns.publishRaw(t, js, []byte("not json"))
	ns.publishRaw(t, js, []byte(`{"event_id":"x","kind":"credit"}`)) // no program
	before1970 := good(1000)
	before1970.OccurredAt = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)
	if err := b.PublishEvents(t.Context(), []bus.Event{before1970, good(2), good(4)}); err != nil {
		t.Fatal(err)
	}

	start(t, &Sink{Bus: b, Conn: conn, Log: testLog(t)})
	eventually(t, "every message settled", func() bool {
		info := ns.consumerInfo(t, js)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
	eventually(t, "the good events in ClickHouse", func() bool {
		_, d := counts(t, conn)
		return d == 3
	})
	if o := liability(t, conn, "p1"); o.Points != 7 || o.Events != 3 {
		t.Errorf("liability %+v; want 7 over 3 events", o)
	}
}

// proxy forwards TCP connections to a target and can be stopped and started
// again, to play a server that goes away. It keeps its listener for the
// whole test: while it is down it drops every connection at once, so that
// no other process can take its address before it comes back up.
type proxy struct {
	target string
	addr   string

	mu    sync.Mutex
	isUp  bool
	conns map[net.Conn]bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{target: target, conns: map[net.Conn]bool{}, isUp: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); p.down() })
	return p
}

func (p *proxy) forward(c net.Conn) {
	if !p.track(c) {
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 3*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(s) {
		_ = c.Close()
		return
	}
	go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
	_, _ = io.Copy(c, s)
	_ = c.Close()
}

// track keeps c to be closed by down; while the proxy is down it closes c
// instead and reports false.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.isUp {
		_ = c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

// down closes every connection through the proxy, and drops the ones that
// come until up.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isUp = false
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// up forwards connections again, on the same address.
func (p *proxy) up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isUp = true
}
