package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
	"github.com/puntos-loyalty/puntos/bus/natsbus"
	"github.com/puntos-loyalty/puntos/core/postgres"
	"github.com/puntos-loyalty/puntos/internal/testenv"
)

// source is the source every event is recorded under.
const source = "floor"

// resultWait is how long a handler waits for its command's reply before
// answering 202, as the gateway does by default.
const resultWait = 5 * time.Second

// floor is what the steps run on: a database, an embedded NATS server with
// one connection to it, and an HTTP server.
type floor struct {
	o       *options
	pool    *pgxpool.Pool
	ns      *server.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	replies replies
	gather  gatherer
	srv     *http.Server
	base    string // the HTTP server's URL
	undo    []func()
}

// event is one accrual as a client sends it, about 150 bytes of JSON.
type event struct {
	Member     string    `json:"member"`
	TxnID      string    `json:"txn_id"`
	Type       string    `json:"type"`
	Amount     string    `json:"amount"`
	Currency   string    `json:"currency"`
	Channel    string    `json:"channel"`
	OccurredAt time.Time `json:"occurred_at"`
}

// command is an event as the handlers put it on the stream.
type command struct {
	event
	Source     string    `json:"source"`
	ReceivedAt time.Time `json:"received_at"`
}

// answer is what a handler answers for one event.
type answer struct {
	TxnID  string `json:"txn_id"`
	Status int    `json:"status"`
}

// The table each committed event is one row of, and the two ways rows go
// in: one per statement, or a batch in one statement through unnest. Each
// statement runs on its own, so it is its own transaction and its commit.
const (
	createTable = `CREATE TABLE floor_rows (
		source text NOT NULL, txn_id text NOT NULL, member text NOT NULL,
		kind text NOT NULL, amount numeric NOT NULL, currency text NOT NULL,
		channel text NOT NULL, points bigint NOT NULL, occurred_at timestamptz NOT NULL,
		recorded_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (source, txn_id))`
	insertRow = `INSERT INTO floor_rows (source, txn_id, member, kind, amount, currency,
		channel, points, occurred_at)
		VALUES ($1, $2, $3, $4, $5::text::numeric, $6, $7, $8, $9)
		ON CONFLICT DO NOTHING`
	insertRows = `INSERT INTO floor_rows (source, txn_id, member, kind, amount, currency,
		channel, points, occurred_at)
		SELECT s, t, m, k, a::numeric, c, ch, p, o
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
			$7::text[], $8::bigint[], $9::timestamptz[]) AS u(s, t, m, k, a, c, ch, p, o)
		ON CONFLICT DO NOTHING`
)

// start makes the database, the NATS server and the HTTP server.
func start(ctx context.Context, o *options) (f *floor, err error) {
	f = &floor{o: o}
	defer func() {
		if err != nil {
			f.close()
		}
	}()

	dbURL, drop, err := testenv.NewDatabase(ctx, "puntos_floor")
	if err != nil {
		return nil, err
	}
	f.undo = append(f.undo, drop)
	if f.pool, err = postgres.Open(ctx, dbURL); err != nil {
		return nil, err
	}
	f.undo = append(f.undo, f.pool.Close)
	if _, err := f.pool.Exec(ctx, createTable); err != nil {
		return nil, fmt.Errorf("create table: %w", err)
	}

	// NATS as the platform embeds it: a file store that syncs every write.
	dir, err := os.MkdirTemp("", "puntos-floor-")
	if err != nil {
		return nil, fmt.Errorf("nats directory: %w", err)
	}
	f.undo = append(f.undo, func() { _ = os.RemoveAll(dir) })
	ns, natsURL, err := natsbus.StartEmbedded(dir, 0, true)
	if err != nil {
		return nil, err
	}
	f.ns = ns
	f.undo = append(f.undo, func() { ns.Shutdown(); ns.WaitForShutdown() })
	if f.nc, err = nats.Connect(natsURL, nats.Name("floor")); err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	f.undo = append(f.undo, f.nc.Close)
	if f.js, err = jetstream.New(f.nc); err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	if err := f.replies.listen(f.nc); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	for _, s := range steps {
		if s.batch {
			mux.HandleFunc("POST /"+s.name, f.handleBatch(s.pack))
		} else {
			mux.HandleFunc("POST /"+s.name, f.single(s))
		}
	}
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()
	f.base = "http://" + ln.Addr().String()
	f.undo = append(f.undo, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.srv.Shutdown(sctx)
	})
	return f, nil
}

// close undoes what start did, last first.
func (f *floor) close() {
	for i := len(f.undo) - 1; i >= 0; i-- {
		f.undo[i]()
	}
	f.undo = nil
}

// respond writes v as JSON with status.
func respond(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// single answers one event the way step s asks: decode it; in http+pg,
// commit its row; with a stream, store its command there and, when
// consumers apply the stream, wait for the reply saying its row is
// committed (answering 202 after resultWait).
func (f *floor) single(s step) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var ev event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil || ev.Member == "" ||
			ev.TxnID == "" {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		var err error
		var done <-chan int
		switch {
		case s.rows && !s.stream:
			_, err = f.pool.Exec(r.Context(), insertRow, source, ev.TxnID, ev.Member,
				ev.Type, ev.Amount, ev.Currency, ev.Channel, int64(10), ev.OccurredAt)
		case s.stream:
			if s.consume { // listen before publishing, not to miss a quick reply
				var stop func()
				done, stop = f.replies.await([]string{ev.TxnID})
				defer stop()
			}
			if s.pack {
				err = f.publishGathered(r.Context(), ev)
			} else {
				err = f.publish(r.Context(), ev)
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		status := http.StatusCreated
		if done != nil {
			select {
			case <-done:
			case <-time.After(resultWait):
				status = http.StatusAccepted
			}
		}
		respond(w, status, answer{TxnID: ev.TxnID, Status: status})
	}
}

// commandMsg is ev as a command on its member's partition.
func (f *floor) commandMsg(ev event) (*nats.Msg, error) {
	data, err := json.Marshal(command{event: ev, Source: source, ReceivedAt: time.Now()})
	if err != nil {
		return nil, err
	}
	p := bus.Partition(source, ev.Member, f.o.consumers)
	return &nats.Msg{Subject: commandSubject(p), Data: data}, nil
}

// publish stores ev's command on the stream, with its transaction as
// message id, and waits for the server's acknowledgement.
func (f *floor) publish(ctx context.Context, ev event) error {
	m, err := f.commandMsg(ev)
	if err != nil {
		return err
	}
	_, err = f.js.PublishMsg(ctx, m, jetstream.WithMsgID(source+":"+ev.TxnID),
		jetstream.WithExpectStream(streamName))
	return err
}

// handleBatch is steps batch-pipeline and pack-pipeline: as step pipeline
// for every event of the request, whose commands are stored as one atomic
// batch, or with pack as one message per partition. It answers 200 when
// every event is committed, 202 otherwise.
func (f *floor) handleBatch(pack bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { f.batch(w, r, pack) }
}

func (f *floor) batch(w http.ResponseWriter, r *http.Request, pack bool) {
	var req struct {
		Events []event `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Events) == 0 ||
		len(req.Events) > atomicMax {
		http.Error(w, "bad batch", http.StatusBadRequest)
		return
	}
	txns := make([]string, len(req.Events))
	msgs := make([]*nats.Msg, len(req.Events))
	for i, ev := range req.Events {
		if ev.Member == "" || ev.TxnID == "" {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		txns[i] = ev.TxnID
		m, err := f.commandMsg(ev)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		msgs[i] = m
	}

	done, stop := f.replies.await(txns)
	defer stop()
	publish := f.publishAtomic
	if pack {
		publish = f.publishPacks
	}
	if err := publish(r.Context(), msgs, txns); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	items := make([]answer, len(txns))
	for i, txn := range txns {
		items[i] = answer{TxnID: txn, Status: http.StatusAccepted}
	}
	status := http.StatusOK
	timeout := time.After(resultWait)
wait:
	for range txns {
		select {
		case i := <-done:
			items[i].Status = http.StatusCreated
		case <-timeout:
			status = http.StatusAccepted
			break wait
		}
	}
	respond(w, status, map[string]any{"items": items})
}
