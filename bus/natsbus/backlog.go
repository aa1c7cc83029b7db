package natsbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Backlogs: what waits on the bus for the ledger and for the reporting sink.
// Both are read from the server's own counts (consumer info, subject counts),
// without fetching a message.

// CommandMessagesWaiting is, per partition (index p), the messages of the
// command stream core has not finished with: not yet delivered to its
// consumer, or delivered and not yet acknowledged. A message is one command
// or a pack of them (a batch request's events of one partition, or single
// requests gathered together), so the figure counts messages, not commands.
// A partition whose consumer does not exist yet (core never ran it) counts
// every message stored on its subject.
func (b *Bus) CommandMessagesWaiting(ctx context.Context) ([]uint64, error) {
	waiting := make([]uint64, b.cfg.Partitions)
	var stream jetstream.Stream
	for p := range waiting {
		cons, err := b.js.Consumer(ctx, b.cmdStream, durableName(p))
		if err == nil {
			info, err := cons.Info(ctx)
			if err != nil {
				return nil, fmt.Errorf("commands waiting: consumer %s: %w", durableName(p), err)
			}
			waiting[p] = info.NumPending + uint64(info.NumAckPending)
			continue
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("commands waiting: consumer %s: %w", durableName(p), err)
		}
		if stream == nil {
			if stream, err = b.js.Stream(ctx, b.cmdStream); err != nil {
				return nil, fmt.Errorf("commands waiting: %w", err)
			}
		}
		subject := b.commandSubject(p)
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return nil, fmt.Errorf("commands waiting: partition %d: %w", p, err)
		}
		waiting[p] = info.State.Subjects[subject]
	}
	return waiting, nil
}

// EventsWaiting is how many ledger events on the events stream the durable
// consumer named has not finished with (not yet delivered, or delivered and
// not yet acknowledged). When that consumer does not exist yet it counts
// every event the stream holds, which is what the consumer would start from.
func (b *Bus) EventsWaiting(ctx context.Context, durable string) (uint64, error) {
	cons, err := b.js.Consumer(ctx, b.evtStream, durable)
	if err == nil {
		info, err := cons.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("events waiting: consumer %s: %w", durable, err)
		}
		return info.NumPending + uint64(info.NumAckPending), nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("events waiting: consumer %s: %w", durable, err)
	}
	stream, err := b.js.Stream(ctx, b.evtStream)
	if err != nil {
		return 0, fmt.Errorf("events waiting: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("events waiting: %w", err)
	}
	return info.State.Msgs, nil
}
