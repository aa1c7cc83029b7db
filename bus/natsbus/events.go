package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// EventDelivery is one ledger event fetched by ConsumeEvents. The handler may
// settle it itself with Term (or Ack, Nak); ConsumeEvents settles the ones
// it leaves alone.
type EventDelivery struct {
	// Event is the decoded ledger event.
	Event bus.Event

	// Raw is the message as it is stored on the stream.
	Raw []byte

	// Subject is the subject the event was published on.
	Subject string

	// Seq is the event's sequence number in the events stream.
	Seq uint64

	// NumDelivered counts the deliveries of this event to the consumer, this
	// one included: 1 the first time, 2 on the first redelivery and so on.
	NumDelivered uint64

	receipt
}

// ConsumeEvents reads the events stream through the durable pull consumer
// named durable, creating or updating it, and hands the events to handle in
// batches until ctx is done; it then returns nil. It returns an error when
// its arguments are wrong, when the consumer cannot be created, or when the
// connection is closed. The consumer starts at the first event in the
// stream and sees every event of every program, in stream order. It
// expects to be the only loop on that durable.
//
// A batch holds up to batchSize events: ConsumeEvents waits until that many
// are ready or maxWait has passed, whichever comes first, so that a busy
// stream gives full batches and a quiet one a batch every maxWait.
//
// When handle returns nil, every delivery it did not settle is acknowledged
// (DoubleAck: the server confirmed it). When it returns an error, every
// unsettled delivery is asked for again and the loop pauses before the next
// fetch, Config.RetryDelay doubling per failed batch in a row up to
// Config.MaxRetryDelay; the events come back later. There is no limit on
// deliveries: an event is never dropped because its handler kept failing,
// it waits in the stream until the handler succeeds.
//
// A message that is not a ledger event (not JSON, or without event_id,
// kind or program) never reaches handle: it is logged at Error and
// terminated for this consumer.
func (b *Bus) ConsumeEvents(ctx context.Context, durable string, batchSize int,
	maxWait time.Duration, handle func(ctx context.Context, batch []*EventDelivery) error) error {
	switch {
	case !validDurable(durable):
		return fmt.Errorf("consume events: durable name %q: only letters, digits, '-' and '_'",
			durable)
	case batchSize < 1:
		return fmt.Errorf("consume events %s: batch size %d", durable, batchSize)
	case maxWait <= 0:
		return fmt.Errorf("consume events %s: max wait %s", durable, maxWait)
	}
	log := b.log.With("durable", durable, "stream", b.evtStream)

	cons, err := b.ensureEventConsumer(ctx, durable, batchSize)
	if err != nil {
		return err
	}

	fetchFailures, batchFailures := 0, 0
	for ctx.Err() == nil {
		msgs, err := drain(cons.Fetch(batchSize, jetstream.FetchMaxWait(maxWait)))
		if err != nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				return fmt.Errorf("consume events %s: %w", durable, err)
			}
			if ctx.Err() != nil && len(msgs) == 0 {
				break
			}
			log.Warn("Fetch failed", "error", err, "fetched", len(msgs))
			if len(msgs) == 0 {
				fetchFailures++
				sleep(ctx, backoff(fetchRetryMin, fetchRetryMax, fetchFailures))
				if consumerLost(err) {
					if c, err := b.ensureEventConsumer(ctx, durable, batchSize); err != nil {
						log.Warn("Consumer not recreated", "error", err)
					} else {
						cons = c
					}
				}
				continue
			}
		}
		fetchFailures = 0
		if len(msgs) == 0 {
			continue
		}
		if ctx.Err() != nil {
			// Stopping: hand the batch straight back rather than fail it.
			for _, m := range msgs {
				_ = m.Nak()
			}
			break
		}

		if b.processEvents(ctx, msgs, handle, batchFailures+1, log) {
			batchFailures = 0
		} else {
			batchFailures++
		}
	}
	return nil
}

// validDurable reports whether name can be a consumer name.
func validDurable(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		ok := r == '-' || r == '_' || (r >= '0' && r <= '9') ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !ok {
			return false
		}
	}
	return true
}

// ensureEventConsumer creates or updates the durable consumer on the events
// stream. At most batchSize events are out unacknowledged.
func (b *Bus) ensureEventConsumer(ctx context.Context, durable string,
	batchSize int) (jetstream.Consumer, error) {
	cons, err := b.js.CreateOrUpdateConsumer(ctx, b.evtStream, jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "Puntos ledger events, " + durable,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       b.cfg.AckWait,
		MaxDeliver:    -1, // An event waits for its handler, however long.
		MaxAckPending: batchSize,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s on %s: %w", durable, b.evtStream, err)
	}
	return cons, nil
}

// processEvents decodes a fetched batch, terminates what is not an event,
// calls handle with the rest and settles what handle left unsettled. attempt
// counts the failed batches in a row, this one included; it sets the pause
// after a failure. It reports whether the batch succeeded.
func (b *Bus) processEvents(ctx context.Context, msgs []jetstream.Msg,
	handle func(context.Context, []*EventDelivery) error, attempt int, log *slog.Logger) bool {
	batch := make([]*EventDelivery, 0, len(msgs))
	for _, m := range msgs {
		d, problem := decodeEvent(m)
		if problem == "" {
			batch = append(batch, d)
			continue
		}
		if err := d.Term(); err != nil {
			log.Error("Term failed", "stream_seq", d.Seq, "error", err)
		}
		log.Error("Undecodable event terminated", "stream_seq", d.Seq, "subject", d.Subject,
			"reason", problem)
	}
	if len(batch) == 0 {
		return true
	}

	err := handle(ctx, batch)

	// Settle even when ctx is done, so that nothing waits for AckWait.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err == nil {
		rs := make([]*receipt, len(batch))
		for i, d := range batch {
			rs[i] = &d.receipt
		}
		if err := b.ackBatch(sctx, rs); err != nil {
			log.Error("Ack failed; the events will be delivered again", "error", err)
		}
		return true
	}

	// Ask for the batch again and pause.
	var most uint64
	for _, d := range batch {
		if d.settled.Load() {
			continue
		}
		if nerr := d.Nak(0); nerr != nil {
			log.Warn("Nak failed", "stream_seq", d.Seq, "error", nerr)
		}
		most = max(most, d.NumDelivered)
	}
	delay := backoff(b.cfg.RetryDelay, b.cfg.MaxRetryDelay, attempt)
	level := slog.LevelWarn
	if attempt >= b.cfg.MaxDeliver {
		level = slog.LevelError // Not a blip any more: somebody should look.
	}
	log.Log(ctx, level, "Event batch failed; retrying", "size", len(batch),
		"failures_in_row", attempt, "deliveries", most, "retry_in", delay, "error", err)
	sleep(ctx, delay)
	return false
}

// decodeEvent turns a message into an event delivery. problem is not empty
// when the message is not a usable ledger event.
func decodeEvent(m jetstream.Msg) (d *EventDelivery, problem string) {
	d = &EventDelivery{receipt: receipt{msg: m, what: "event"}, Raw: m.Data(),
		Subject: m.Subject()}
	if meta, err := m.Metadata(); err == nil {
		d.Seq = meta.Sequence.Stream
		d.NumDelivered = meta.NumDelivered
	}
	if err := json.Unmarshal(m.Data(), &d.Event); err != nil {
		d.Event = bus.Event{}
		return d, "undecodable: " + err.Error()
	}
	if d.Event.ID == "" || d.Event.Kind == "" || d.Event.Program == "" {
		return d, "undecodable: no event_id, kind or program"
	}
	return d, ""
}
