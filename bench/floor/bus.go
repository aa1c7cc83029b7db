package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// The stream's shape follows bus/natsbus: partition subjects, limits
// retention, de-duplication by message id, atomic batches allowed.
const (
	streamName    = "FLOOR"
	replySubjects = "floor.reply.*"
	fetchMax      = 512                    // most commands a consumer applies at once
	fetchWait     = 100 * time.Millisecond // a consumer's wait for a first command
	atomicMax     = 500                    // most messages of one atomic batch
	batchSize     = 500                    // events per request in batch-pipeline
)

func commandSubject(p int) string { return "floor.cmd." + strconv.Itoa(p) }

func replySubject(txn string) string { return "floor.reply." + txn }

// createStream makes an empty command stream.
func (f *floor) createStream(ctx context.Context) error {
	_ = f.js.DeleteStream(ctx, streamName)
	_, err := f.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: streamName, Subjects: []string{"floor.cmd.>"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
		Duplicates: time.Hour, AllowAtomicPublish: true,
	})
	if err != nil {
		return fmt.Errorf("create stream: %w", err)
	}
	return nil
}

// errRefused is an atomic batch the server did not store.
var errRefused = errors.New("atomic batch refused")

// publishAtomic stores msgs as one atomic batch, each with its transaction
// as message id: the messages go without an answer, the last one carries
// the commit and waits for the server's. The headers are those of the
// server's atomic batch protocol, as bus/natsbus/atomic.go sends them.
func (f *floor) publishAtomic(ctx context.Context, msgs []*nats.Msg, txns []string) error {
	id := nuid.Next()
	for i, m := range msgs {
		m.Header = nats.Header{}
		m.Header.Set(nats.MsgIdHdr, source+":"+txns[i])
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := f.nc.PublishMsg(m); err != nil {
				return err
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		cctx, cancel := context.WithTimeout(ctx, resultWait)
		reply, err := f.nc.RequestMsgWithContext(cctx, m)
		cancel()
		if err != nil {
			return fmt.Errorf("commit atomic batch: %w", err)
		}
		var ack struct {
			Count int             `json:"count"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(reply.Data, &ack); err != nil || ack.Error != nil ||
			ack.Count != len(msgs) {
			return fmt.Errorf("%w: %s", errRefused, reply.Data)
		}
	}
	return nil
}

// packHeader carries the number of commands of a pack.
const packHeader = "Floor-Pack"

// publishPacks stores the commands of msgs as one message per partition
// (their data one per line, in order, with packHeader), each with a
// message id made of its first transaction and its size, and waits for the
// server's acknowledgements together.
func (f *floor) publishPacks(ctx context.Context, msgs []*nats.Msg, txns []string) error {
	var subjects []string
	groups := map[string][]int{}
	for i, m := range msgs {
		if _, ok := groups[m.Subject]; !ok {
			subjects = append(subjects, m.Subject)
		}
		groups[m.Subject] = append(groups[m.Subject], i)
	}
	acks := make([]jetstream.PubAckFuture, 0, len(subjects))
	for _, subject := range subjects {
		at := groups[subject]
		pack := nats.NewMsg(subject)
		pack.Header.Set(packHeader, strconv.Itoa(len(at)))
		for k, i := range at {
			if k > 0 {
				pack.Data = append(pack.Data, '\n')
			}
			pack.Data = append(pack.Data, msgs[i].Data...)
		}
		id := source + ":pack:" + txns[at[0]] + ":" + strconv.Itoa(len(at))
		ack, err := f.js.PublishMsgAsync(pack, jetstream.WithMsgID(id),
			jetstream.WithExpectStream(streamName))
		if err != nil {
			return err
		}
		acks = append(acks, ack)
	}
	for _, ack := range acks {
		select {
		case <-ack.Ok():
		case err := <-ack.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// consumers apply the stream's commands, one loop per partition, until
// stop is called; transactions counts the statements that committed rows.
type consumers struct {
	stop         context.CancelFunc
	wg           sync.WaitGroup
	transactions atomic.Int64
	failed       atomic.Int64 // batches whose insert failed
}

// startConsumers starts one durable pull consumer per partition.
func (f *floor) startConsumers(ctx context.Context) (*consumers, error) {
	cs := &consumers{}
	ctx, cs.stop = context.WithCancel(ctx)
	for p := range f.o.consumers {
		cons, err := f.js.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
			Durable: "floor-p" + strconv.Itoa(p), FilterSubject: commandSubject(p),
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: fetchMax,
		})
		if err != nil {
			cs.stop()
			cs.wg.Wait()
			return nil, fmt.Errorf("create consumer: %w", err)
		}
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			cs.loop(ctx, cons, f.pool, f.nc)
		}()
	}
	return cs, nil
}

// loop fetches batches as bus/natsbus does: what is ready when the last
// batch was full of several, otherwise a wait for one command and then
// what else is ready.
func (cs *consumers) loop(ctx context.Context, cons jetstream.Consumer, pool *pgxpool.Pool,
	nc *nats.Conn) {
	backlog := true
	for ctx.Err() == nil {
		var msgs []jetstream.Msg
		if backlog {
			msgs = drain(cons.FetchNoWait(fetchMax))
		}
		if len(msgs) == 0 {
			msgs = drain(cons.Fetch(1, jetstream.FetchMaxWait(fetchWait)))
			if len(msgs) == 1 {
				msgs = append(msgs, drain(cons.FetchNoWait(fetchMax-1))...)
			}
		}
		backlog = len(msgs) > 1
		if len(msgs) > 0 {
			cs.apply(ctx, msgs, pool, nc)
		}
	}
}

// drain reads a fetched batch to its end; a failed fetch is an empty one.
func drain(batch jetstream.MessageBatch, err error) []jetstream.Msg {
	if err != nil {
		return nil
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	return msgs
}

// apply commits the commands of a fetch, at most fetchMax of them in one
// statement and transaction, cut between messages (a pack holds several).
func (cs *consumers) apply(ctx context.Context, msgs []jetstream.Msg, pool *pgxpool.Pool,
	nc *nats.Conn) {
	var rows []command
	start := 0
	for i, m := range msgs {
		data := [][]byte{m.Data()}
		if n := m.Headers().Get(packHeader); n != "" {
			data = bytes.Split(m.Data(), []byte{'\n'})
		}
		if len(rows) > 0 && len(rows)+len(data) > fetchMax {
			cs.commit(ctx, msgs[start:i], rows, pool, nc)
			start, rows = i, rows[:0]
		}
		for _, d := range data {
			var c command
			_ = json.Unmarshal(d, &c) // we wrote it; a bad one fails the insert
			rows = append(rows, c)
		}
	}
	if len(rows) > 0 {
		cs.commit(ctx, msgs[start:], rows, pool, nc)
	}
}

// commit inserts the commands of msgs in one statement, then replies to
// each command and acknowledges each message, with one flush for all. A
// batch that fails is asked for again.
func (cs *consumers) commit(ctx context.Context, msgs []jetstream.Msg, cmds []command,
	pool *pgxpool.Pool, nc *nats.Conn) {
	n := len(cmds)
	src, txn, member, kind := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n)
	amount, currency, channel := make([]string, n), make([]string, n), make([]string, n)
	points, at := make([]int64, n), make([]time.Time, n)
	for i, c := range cmds {
		src[i], txn[i], member[i], kind[i] = c.Source, c.TxnID, c.Member, c.Type
		amount[i], currency[i], channel[i] = c.Amount, c.Currency, c.Channel
		points[i], at[i] = 10, c.OccurredAt
	}
	_, err := pool.Exec(ctx, insertRows, src, txn, member, kind, amount, currency, channel,
		points, at)
	if err != nil {
		cs.failed.Add(1)
		for _, m := range msgs {
			_ = m.Nak()
		}
		return
	}
	cs.transactions.Add(1)
	for _, t := range txn {
		_ = nc.Publish(replySubject(t), []byte(`{"status":"applied"}`))
	}
	for _, m := range msgs {
		_ = m.Ack()
	}
	_ = nc.Flush()
}

// close stops the consumers and waits for them.
func (cs *consumers) close() {
	cs.stop()
	cs.wg.Wait()
}

// replies hands the replies on core NATS to the handlers waiting for them,
// through one wildcard subscription, as bus/natsbus/results.go does.
type replies struct {
	mu      sync.Mutex
	waiting map[string]waiter
}

// waiter is one handler's channel and the index of a transaction in its
// request.
type waiter struct {
	ch    chan int
	index int
}

// listen subscribes to every reply subject.
func (rs *replies) listen(nc *nats.Conn) error {
	rs.waiting = map[string]waiter{}
	sub, err := nc.Subscribe(replySubjects, func(m *nats.Msg) {
		rs.mu.Lock()
		w, ok := rs.waiting[m.Subject]
		delete(rs.waiting, m.Subject)
		rs.mu.Unlock()
		if ok {
			w.ch <- w.index // room for every transaction of the request
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe replies: %w", err)
	}
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		return err
	}
	return nc.Flush()
}

// await registers txns; the channel receives the index of each one whose
// reply comes. stop unregisters those still waiting.
func (rs *replies) await(txns []string) (<-chan int, func()) {
	ch := make(chan int, len(txns))
	rs.mu.Lock()
	for i, txn := range txns {
		rs.waiting[replySubject(txn)] = waiter{ch: ch, index: i}
	}
	rs.mu.Unlock()
	return ch, func() {
		rs.mu.Lock()
		for _, txn := range txns {
			delete(rs.waiting, replySubject(txn))
		}
		rs.mu.Unlock()
	}
}

// gatherer holds, per partition subject, whether a message is on its way
// and the single commands waiting behind it (step gather-pipeline).
type gatherer struct {
	mu      sync.Mutex
	sending map[string]bool
	waiting map[string][]*gatheredCmd
}

// gatheredCmd is a command waiting for its partition, and then its answer.
type gatheredCmd struct {
	msg  *nats.Msg
	txn  string
	done chan error
}

// publishGathered stores ev's command alone when its partition has nothing
// on its way, and otherwise waits to go in the partition's next pack.
func (f *floor) publishGathered(ctx context.Context, ev event) error {
	m, err := f.commandMsg(ev)
	if err != nil {
		return err
	}
	g := &f.gather
	g.mu.Lock()
	if g.sending == nil {
		g.sending, g.waiting = map[string]bool{}, map[string][]*gatheredCmd{}
	}
	if g.sending[m.Subject] {
		w := &gatheredCmd{msg: m, txn: ev.TxnID, done: make(chan error, 1)}
		g.waiting[m.Subject] = append(g.waiting[m.Subject], w)
		g.mu.Unlock()
		select {
		case err := <-w.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g.sending[m.Subject] = true
	g.mu.Unlock()
	_, err = f.js.PublishMsg(ctx, m, jetstream.WithMsgID(source+":"+ev.TxnID),
		jetstream.WithExpectStream(streamName))
	f.sendWaiting(m.Subject)
	return err
}

// sendWaiting sends what waits for subject as one pack, from a goroutine of
// its own, and goes on until nothing waits.
func (f *floor) sendWaiting(subject string) {
	g := &f.gather
	g.mu.Lock()
	ws := g.waiting[subject]
	delete(g.waiting, subject)
	if len(ws) == 0 {
		g.sending[subject] = false
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	go func() {
		msgs, txns := make([]*nats.Msg, len(ws)), make([]string, len(ws))
		for i, w := range ws {
			msgs[i], txns[i] = w.msg, w.txn
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := f.publishPacks(ctx, msgs, txns)
		cancel()
		for _, w := range ws {
			w.done <- err
		}
		f.sendWaiting(subject)
	}()
}
