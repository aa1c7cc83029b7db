package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// Back-off after a failed fetch (server unreachable, consumer missing).
const (
	fetchRetryMin = 100 * time.Millisecond
	fetchRetryMax = 5 * time.Second
)

// Delivery is one command fetched from a partition by Consume. Settle it
// with Ack, Nak or Term; Consume settles the ones the handler leaves alone.
type Delivery struct {
	// Command is the decoded command.
	Command bus.Command

	// Raw is the message as it is stored on the stream.
	Raw []byte

	// Partition is the partition the command came from.
	Partition int

	// Seq is the command's sequence number in the command stream.
	Seq uint64

	// NumDelivered counts the deliveries of this command, this one
	// included: 1 the first time, 2 on the first redelivery and so on.
	NumDelivered uint64

	receipt
}

// Consume fetches the commands of one partition in batches and hands them to
// handle, until ctx is done; it then returns nil. It uses the durable
// consumer "core-p<partition>", creating or updating it, and expects to be
// the only loop on that partition.
//
// A batch holds up to batchSize commands, in stream order; Consume waits up
// to maxWait for the first one and then takes whatever else is ready. When
// handle returns nil, each delivery it did not settle is acknowledged. When
// it returns an error, each unsettled delivery is asked for again and the
// partition pauses (Config.RetryDelay, doubling per delivery), so the batch
// comes back in the same order; a delivery that has used up
// Config.MaxDeliver attempts is dead-lettered instead, with reason
// "max deliveries: " and the error.
//
// Messages that are not commands never reach handle: they are dead-lettered
// with a reason starting "undecodable". So are commands delivered more than
// MaxDeliver times (after handlers that died or overran AckWait), with
// reason "max deliveries".
//
// WARNING: a handler error that lasts longer than the whole retry budget
// (about 80s with the default settings) dead-letters the batch; a handler
// that can tell an outage from a bad command should wait out the outage
// rather than return an error.
func (b *Bus) Consume(ctx context.Context, partition int, batchSize int, maxWait time.Duration,
	handle func(ctx context.Context, batch []*Delivery) error) error {
	switch {
	case partition < 0 || partition >= b.cfg.Partitions:
		return fmt.Errorf("consume partition %d: out of range 0-%d",
			partition, b.cfg.Partitions-1)
	case batchSize < 1:
		return fmt.Errorf("consume partition %d: batch size %d", partition, batchSize)
	case maxWait <= 0:
		return fmt.Errorf("consume partition %d: max wait %s", partition, maxWait)
	}
	log := b.log.With("partition", partition)

	cons, err := b.ensureConsumer(ctx, partition, batchSize)
	if err != nil {
		return err
	}

	fetchFailures := 0
	for ctx.Err() == nil {
		msgs, err := fetch(cons, batchSize, maxWait)
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				return fmt.Errorf("consume partition %d: %w", partition, err)
			}
			log.Warn("Fetch failed", "error", err, "fetched", len(msgs))
			if len(msgs) == 0 {
				fetchFailures++
				sleep(ctx, backoff(fetchRetryMin, fetchRetryMax, fetchFailures))
				b.recoverConsumer(ctx, partition, batchSize, err, &cons, log)
				continue
			}
		}
		fetchFailures = 0
		if len(msgs) > 0 {
			b.process(ctx, partition, msgs, handle, log)
		}
	}
	return nil
}

// durableName is the name of the durable consumer of partition p.
func durableName(p int) string { return "core-p" + strconv.Itoa(p) }

// ensureConsumer creates or updates the durable consumer of partition p. At
// most batchSize commands are out unacknowledged, which keeps a stalled
// batch from being overtaken by later commands.
func (b *Bus) ensureConsumer(ctx context.Context, p, batchSize int) (jetstream.Consumer, error) {
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.cmdStream, jetstream.ConsumerConfig{
		Durable:       durableName(p),
		Description:   "Puntos core, partition " + strconv.Itoa(p),
		FilterSubject: b.commandSubject(p),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		MaxDeliver:    -1, // Consume dead-letters after Config.MaxDeliver.
		MaxAckPending: batchSize,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", durableName(p), err)
	}
	return cons, nil
}

// recoverConsumer creates the consumer again when a fetch failed because it
// is gone; other errors are left for the next fetch.
func (b *Bus) recoverConsumer(ctx context.Context, p, batchSize int, fetchErr error,
	cons *jetstream.Consumer, log *slog.Logger) {
	if !errors.Is(fetchErr, jetstream.ErrConsumerNotFound) &&
		!errors.Is(fetchErr, jetstream.ErrConsumerDeleted) {
		return
	}
	c, err := b.ensureConsumer(ctx, p, batchSize)
	if err != nil {
		log.Warn("Consumer not recreated", "error", err)
		return
	}
	*cons = c
}

// fetch takes what is ready, up to size messages; when nothing is, it waits
// up to maxWait for one message and then takes what else is ready. Messages
// may come with an error.
func fetch(cons jetstream.Consumer, size int, maxWait time.Duration) ([]jetstream.Msg, error) {
	msgs, err := drain(cons.FetchNoWait(size))
	if err != nil || len(msgs) > 0 {
		return msgs, err
	}
	msgs, err = drain(cons.Fetch(1, jetstream.FetchMaxWait(maxWait)))
	if err != nil || len(msgs) == 0 || size == 1 {
		return msgs, err
	}
	more, err := drain(cons.FetchNoWait(size - 1))
	return append(msgs, more...), err
}

// drain reads a fetched batch to its end.
func drain(batch jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, batch.Error()
}

// process decodes a fetched batch, dead-letters what cannot be handled,
// calls handle with the rest and settles what handle left unsettled.
func (b *Bus) process(ctx context.Context, p int, msgs []jetstream.Msg,
	handle func(context.Context, []*Delivery) error, log *slog.Logger) {
	batch := make([]*Delivery, 0, len(msgs))
	for _, m := range msgs {
		d, problem := decode(m, p)
		switch {
		case problem != "":
			b.bury(ctx, d, problem, log)
		case d.NumDelivered > uint64(b.cfg.MaxDeliver):
			b.bury(ctx, d, "max deliveries", log)
		default:
			batch = append(batch, d)
		}
	}
	if len(batch) == 0 {
		return
	}

	err := handle(ctx, batch)

	// Settle even when ctx is done, so that nothing waits for AckWait.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err == nil {
		if err := ackAll(sctx, batch); err != nil {
			log.Error("Ack failed; the batch will be delivered again", "error", err)
		}
		return
	}

	// Ask for the batch again, in order, and pause the partition.
	var most uint64
	for _, d := range batch {
		if d.settled.Load() {
			continue
		}
		if d.NumDelivered >= uint64(b.cfg.MaxDeliver) {
			b.bury(sctx, d, "max deliveries: "+err.Error(), log)
			continue
		}
		if nerr := d.Nak(0); nerr != nil {
			log.Warn("Nak failed", "stream_seq", d.Seq, "error", nerr)
		}
		most = max(most, d.NumDelivered)
	}
	if most > 0 {
		delay := backoff(b.cfg.RetryDelay, b.cfg.MaxRetryDelay, int(most))
		log.Warn("Batch failed; retrying", "size", len(batch), "deliveries", most,
			"retry_in", delay, "error", err)
		sleep(ctx, delay)
	}
}

// decode turns a message into a delivery. problem is not empty when the
// message is not a usable command.
func decode(m jetstream.Msg, p int) (d *Delivery, problem string) {
	d = &Delivery{receipt: receipt{msg: m, what: "command"}, Raw: m.Data(), Partition: p}
	if meta, err := m.Metadata(); err == nil {
		d.Seq = meta.Sequence.Stream
		d.NumDelivered = meta.NumDelivered
	}
	if err := json.Unmarshal(m.Data(), &d.Command); err != nil {
		d.Command = bus.Command{}
		return d, "undecodable: " + err.Error()
	}
	if d.Command.Kind == "" || d.Command.Source == "" || d.Command.TxnID == "" {
		return d, "undecodable: no kind, source or txn_id"
	}
	return d, ""
}

// bury dead-letters d and terminates it. If the dead letter cannot be
// written, d is left unsettled and comes back after AckWait.
func (b *Bus) bury(ctx context.Context, d *Delivery, reason string, log *slog.Logger) {
	if err := b.DeadLetter(ctx, d, reason); err != nil {
		log.Error("Dead-lettering failed", "stream_seq", d.Seq, "error", err)
		return
	}
	if err := d.Term(); err != nil {
		log.Error("Term failed", "stream_seq", d.Seq, "error", err)
	}
	log.Error("Command dead-lettered", "stream_seq", d.Seq, "command_id", d.Command.ID,
		"txn_id", d.Command.TxnID, "deliveries", d.NumDelivered, "reason", reason)
}

// ackAll acknowledges the unsettled deliveries of a batch, all at once.
func ackAll(ctx context.Context, batch []*Delivery) error {
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i, d := range batch {
		if d.settled.Load() {
			continue
		}
		wg.Go(func() { errs[i] = d.Ack(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// backoff is base doubled n-1 times, at most limit.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
