package natsbus

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// receipt settles one fetched message with the server. Command and event
// deliveries embed it, so both settle the same way.
type receipt struct {
	msg     jetstream.Msg
	what    string // "command" or "event", for error messages
	settled atomic.Bool
	naked   atomic.Bool // settled with Nak: it will be delivered again
}

// Ack tells the server the message is done and waits for the server to
// confirm, so that it will not be delivered to this consumer again.
func (r *receipt) Ack(ctx context.Context) error {
	if err := r.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack %s %d: %w", r.what, r.seq(), err)
	}
	r.settled.Store(true)
	return nil
}

// Nak asks the server to deliver the message again after delay (at once if
// delay is not positive). Later messages of the same consumer may then be
// delivered before it; to retry in order, return an error from the handler
// instead.
func (r *receipt) Nak(delay time.Duration) error {
	var err error
	if delay > 0 {
		err = r.msg.NakWithDelay(delay)
	} else {
		err = r.msg.Nak()
	}
	if err != nil {
		return fmt.Errorf("nak %s %d: %w", r.what, r.seq(), err)
	}
	r.naked.Store(true)
	r.settled.Store(true)
	return nil
}

// Term tells the server never to deliver the message to this consumer
// again. A command should be dead-lettered first (Bus.DeadLetter) unless it
// is meant to vanish; an event stays in its stream for other consumers.
func (r *receipt) Term() error {
	if err := r.msg.Term(); err != nil {
		return fmt.Errorf("term %s %d: %w", r.what, r.seq(), err)
	}
	r.settled.Store(true)
	return nil
}

// InProgress tells the server the message is still being worked on, which
// restarts its AckWait; it leaves the message unsettled.
func (r *receipt) InProgress() error {
	if err := r.msg.InProgress(); err != nil {
		return fmt.Errorf("in progress %s %d: %w", r.what, r.seq(), err)
	}
	return nil
}

// seq is the message's sequence number in its stream, 0 when unknown.
func (r *receipt) seq() uint64 {
	if meta, err := r.msg.Metadata(); err == nil {
		return meta.Sequence.Stream
	}
	return 0
}

// ackBatch acknowledges the unsettled receipts of a batch, all at once: one
// ack message each, then one round trip to the server, which has every ack
// when it answers. Waiting for a confirmation of each ack instead (a
// request and a reply per message, as Ack does) took a tenth of the
// process's CPU draining a backlog of commands. An ack lost all the same
// (the connection dropping before the server read it) only means the
// message is delivered again after AckWait, as after a crash before the
// ack: the ledger answers a command as a replay, and the reporting sink
// leaves out the events ClickHouse holds already.
func (b *Bus) ackBatch(ctx context.Context, rs []*receipt) error {
	failed := 0
	var first error
	for _, r := range rs {
		if r.settled.Load() {
			continue
		}
		if err := r.msg.Ack(); err != nil {
			// One line for many failures: after a lost connection, all fail.
			failed++
			if first == nil {
				first = fmt.Errorf("ack %s %d: %w", r.what, r.seq(), err)
			}
			continue
		}
		r.settled.Store(true)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d acks not sent, first: %w", failed, len(rs), first)
	}
	return b.nc.FlushWithContext(ctx)
}
