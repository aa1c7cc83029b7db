package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/puntos-loyalty/puntos/bench/internal/rig"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// step is one measurement: a route of the HTTP server and what it needs.
type step struct {
	name, what string
	batch      bool // a request carries batchSize events
	rows       bool // each event committed is a row in floor_rows
	stream     bool // the route publishes on the command stream
	consume    bool // consumers apply the stream's commands
	pack       bool // a batch goes as one message per partition, not per event;
	// single events wait for their partition's message on its way and go
	// together after it
}

var steps = []step{
	{name: "http",
		what: "decode a ~150-byte JSON event and answer 201"},
	{name: "http+pg", rows: true,
		what: "decode, INSERT one row in its own transaction, answer 201"},
	{name: "http+jetstream", stream: true,
		what: "decode, publish the command on a JetStream stream that syncs every write, " +
			"answer 201 on the server's ack"},
	{name: "pipeline", rows: true, stream: true, consume: true,
		what: "decode, publish on JetStream, consumers fetch batches and INSERT each in one " +
			"statement, reply on core NATS, ack; answer 201 on the reply"},
	{name: "gather-pipeline", rows: true, stream: true, consume: true, pack: true,
		what: "as pipeline, but the requests that arrive while their partition has a " +
			"message on its way wait for it and go together as one pack, as " +
			"bus/natsbus publishes single commands"},
	{name: "batch-pipeline", batch: true, rows: true, stream: true,
		consume: true,
		what: "as pipeline, 500 events per request published as one atomic batch; " +
			"answer 200 once every event is committed"},
	{name: "pack-pipeline", batch: true, rows: true, stream: true, consume: true, pack: true,
		what: "as batch-pipeline, but the request's events go as one message per " +
			"partition (a pack of its events, one per line), as bus/natsbus publishes a " +
			"batch of commands; consumers apply at most 512 events per transaction"},
}

func stepNames() []string {
	names := make([]string, len(steps))
	for i, s := range steps {
		names[i] = s.name
	}
	return names
}

func stepByName(name string) (step, bool) {
	for _, s := range steps {
		if s.name == name {
			return s, true
		}
	}
	return step{}, false
}

// stepResult is one step in the JSON file.
type stepResult struct {
	Step       string   `json:"step"`
	What       string   `json:"what"`
	LoadBefore rig.Load `json:"load_before"`
	LoadAfter  rig.Load `json:"load_after"`
	// StealPercent is the share of the CPU time the hypervisor took away
	// during the step (-1: unknown).
	StealPercent float64 `json:"steal_percent"`
	Figures      figures `json:"figures"`
	Check        check   `json:"check"`
}

// figures are what a step measured. An event is one accrual: a request in
// the single-event steps, a five-hundredth of one in batch-pipeline.
type figures struct {
	ElapsedS         float64        `json:"elapsed_s"`
	Clients          int            `json:"clients"`
	EventsPerRequest int            `json:"events_per_request"`
	RequestsOK       int            `json:"requests_ok"` // 201, or 200 for a batch
	RequestsPerS     float64        `json:"requests_per_s"`
	EventsPerS       float64        `json:"events_per_s"`
	Latency          rig.Latency    `json:"latency_ok"`
	OtherAnswers     map[string]int `json:"other_answers,omitempty"` // "0": no answer
	CPU              cpuFigures     `json:"cpu"`
	// Transactions counts the consumers' statements that committed rows.
	Transactions         int64   `json:"transactions,omitempty"`
	EventsPerTransaction float64 `json:"events_per_transaction,omitempty"`
}

// cpuFigures are the CPU used during a step by this process (clients,
// HTTP server, NATS server and consumers) and by the PostgreSQL backends
// of its database (not the WAL writer nor the checkpointer).
type cpuFigures struct {
	ProcessS           float64 `json:"process_cpu_s"`
	PostgresS          float64 `json:"postgres_cpu_s"`
	CoresBusy          float64 `json:"cores_busy"`
	ProcessUsPerEvent  float64 `json:"process_cpu_us_per_event"`
	PostgresUsPerEvent float64 `json:"postgres_cpu_us_per_event"`
	TotalUsPerEvent    float64 `json:"total_cpu_us_per_event"`
}

// check compares the rows in PostgreSQL with the events answered as
// committed: equal, and no other answer, or the step failed.
type check struct {
	OK           bool `json:"ok"`
	EventsOK     int  `json:"events_answered_ok"`
	Rows         int  `json:"rows"`
	RowsExpected int  `json:"rows_expected"`
}

// line is the step's figures in one line of text.
func (r *stepResult) line() string {
	g := r.Figures
	verdict := "ok"
	if !r.Check.OK {
		verdict = fmt.Sprintf("FAILED: %d rows, %d expected, other answers %v",
			r.Check.Rows, r.Check.RowsExpected, g.OtherAnswers)
	}
	return fmt.Sprintf("%-15s %9.1f req/s %9.1f events/s  p50 %6.2f ms  p99 %6.2f ms  "+
		"cpu %6.1f µs/event (process %.1f, postgres %.1f)  steal %.0f%%  %s", r.Step,
		g.RequestsPerS, g.EventsPerS, g.Latency.P50, g.Latency.P99, g.CPU.TotalUsPerEvent,
		g.CPU.ProcessUsPerEvent, g.CPU.PostgresUsPerEvent, r.StealPercent, verdict)
}

// runStep measures one step on an empty table and, when the step uses
// it, a new stream.
func (f *floor) runStep(ctx context.Context, s step) (*stepResult, error) {
	if _, err := f.pool.Exec(ctx, `TRUNCATE floor_rows`); err != nil {
		return nil, fmt.Errorf("empty the table: %w", err)
	}
	if s.stream {
		if err := f.createStream(ctx); err != nil {
			return nil, err
		}
		defer func() { _ = f.js.DeleteStream(context.WithoutCancel(ctx), streamName) }()
	}
	var cs *consumers
	if s.consume {
		var err error
		if cs, err = f.startConsumers(ctx); err != nil {
			return nil, err
		}
		defer cs.close()
	}
	clients, per := f.o.clients, 1
	if s.batch {
		clients, per = f.o.batchClients, batchSize
	}

	res := &stepResult{Step: s.name, What: s.what, LoadBefore: rig.DescribeLoad()}
	cpu0 := testenv.SampleCPU(ctx, f.pool)
	lat, other, elapsed := f.drive(ctx, s, clients)
	self, pg := testenv.SampleCPU(ctx, f.pool).Since(cpu0)
	res.LoadAfter = rig.DescribeLoad()
	res.StealPercent = res.LoadAfter.StealSince(res.LoadBefore)
	if cs != nil {
		cs.close()
	}

	events := len(lat) * per
	g := figures{ElapsedS: elapsed.Seconds(), Clients: clients, EventsPerRequest: per,
		RequestsOK: len(lat), RequestsPerS: rig.PerSecond(len(lat), elapsed),
		EventsPerS: rig.PerSecond(events, elapsed), Latency: rig.Summarise(lat),
		CPU: cpuFigures{ProcessS: self.Seconds(), PostgresS: pg.Seconds(),
			CoresBusy: (self + pg).Seconds() / elapsed.Seconds()}}
	if events > 0 {
		us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(events) }
		g.CPU.ProcessUsPerEvent, g.CPU.PostgresUsPerEvent = us(self), us(pg)
		g.CPU.TotalUsPerEvent = us(self + pg)
	}
	for st, n := range other {
		if g.OtherAnswers == nil {
			g.OtherAnswers = map[string]int{}
		}
		g.OtherAnswers[strconv.Itoa(st)] = n
	}
	if cs != nil {
		g.Transactions = cs.transactions.Load()
		if g.Transactions > 0 {
			g.EventsPerTransaction = float64(events) / float64(g.Transactions)
		}
	}
	res.Figures = g

	// Every event answered as committed is one row, and no row is more.
	c := check{EventsOK: events}
	if s.rows {
		c.RowsExpected = events
	}
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM floor_rows`).Scan(&c.Rows); err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	c.OK = events > 0 && len(other) == 0 && c.Rows == c.RowsExpected
	res.Check = c
	return res, nil
}

// drive runs clients that send requests of step s back to back until the
// duration is over; the requests under way then finish. It returns the
// latencies of the requests answered as committed, the count of every
// other status (0 for no answer) and the time it took.
func (f *floor) drive(ctx context.Context, s step, clients int) ([]time.Duration,
	map[int]int, time.Duration) {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients,
		MaxConnsPerHost: clients, IdleConnTimeout: time.Minute, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	want := http.StatusCreated
	if s.batch {
		want = http.StatusOK
	}

	var mu sync.Mutex
	var lat []time.Duration
	other := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(f.o.duration)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			odd := map[int]int{}
			var body []byte
			txn := 0
			for time.Now().Before(deadline) && ctx.Err() == nil {
				body, txn = f.requestBody(body[:0], s.batch, c, txn)
				t0 := time.Now()
				st := post(hc, f.base+"/"+s.name, body)
				if st == want {
					mine = append(mine, time.Since(t0))
				} else {
					odd[st]++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			for st, n := range odd {
				other[st] += n
			}
		}()
	}
	wg.Wait()
	return lat, other, time.Since(start)
}

// post sends body and reads the whole answer; it returns the status, 0
// when no answer came.
func post(hc *http.Client, url string, body []byte) int {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return 0
	}
	return res.StatusCode
}

// requestBody appends to b one event, or a batch of them, for client c,
// numbering its transactions from txn on; it returns the next number.
func (f *floor) requestBody(b []byte, batch bool, c, txn int) ([]byte, int) {
	at := time.Now().UTC().Format(time.RFC3339)
	if !batch {
		return f.appendEvent(b, c, txn, at), txn + 1
	}
	b = append(b, `{"events":[`...)
	for i := range batchSize {
		if i > 0 {
			b = append(b, ',')
		}
		b = f.appendEvent(b, c, txn+i, at)
	}
	return append(b, "]}"...), txn + batchSize
}

// appendEvent appends one accrual of 10 to a random member, with
// transaction c<client>-<txn>.
func (f *floor) appendEvent(b []byte, c, txn int, at string) []byte {
	member := strconv.Itoa(rand.IntN(f.o.members))
	b = append(b, `{"member":"m`...)
	b = append(b, "0000000"[min(len(member), 7):]...)
	b = append(b, member...)
	b = append(b, `","txn_id":"c`...)
	b = strconv.AppendInt(b, int64(c), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(txn), 10)
	b = append(b, `","type":"purchase","amount":"10","currency":"CLP",`...)
	b = append(b, `"channel":"bench","occurred_at":"`...)
	b = append(b, at...)
	return append(b, `"}`...)
}
