package natsbus

import (
	"cmp"
	"context"
	"fmt"
	"sync"
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
	// nakDelay is the delay the Nak asked for, in nanoseconds.
	nakDelay atomic.Int64
	// pack is set when the message carries other commands too: the message
	// is settled once all of them are.
	pack *pack
}

// settlement is what a receipt tells the server of its message.
type settlement int

const (
	settleAck settlement = iota
	settleNak
	settleTerm
)

// pack gathers how the commands of one message (see publish_batch.go) are
// settled. The message gets, once the last one is settled: a Nak if any
// was naked (the whole message comes back; the ledger answers the
// commands already applied as replays), else a Term if all were
// terminated, else an Ack.
type pack struct {
	mu     sync.Mutex
	left   int           // commands not settled yet
	naks   bool          // one was naked
	delay  time.Duration // the longest delay a Nak asked for
	acks   bool          // one was acknowledged
	spared bool          // this delivery of the message does not count
}

// settle records one command of the pack settled with s; last reports
// whether it was the last, and then what the message gets.
func (p *pack) settle(s settlement, delay time.Duration) (last bool, msg settlement,
	msgDelay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case settleNak:
		p.naks, p.delay = true, max(p.delay, delay)
	case settleAck:
		p.acks = true
	}
	p.left--
	if p.left > 0 {
		return false, 0, 0
	}
	switch {
	case p.naks:
		return true, settleNak, p.delay
	case p.acks:
		return true, settleAck, 0
	}
	return true, settleTerm, 0
}

// comesBack reports whether the message will be delivered again: it was
// naked, or (a pack) some of its commands are not settled yet.
func (r *receipt) comesBack() bool {
	if r.pack != nil {
		r.pack.mu.Lock()
		defer r.pack.mu.Unlock()
		return r.pack.naks || r.pack.left > 0
	}
	return r.naked.Load()
}

// nakedFor reports whether the message was naked, and with what delay (the
// longest asked for, for a pack).
func (r *receipt) nakedFor() (bool, time.Duration) {
	if r.pack != nil {
		r.pack.mu.Lock()
		defer r.pack.mu.Unlock()
		return r.pack.naks, r.pack.delay
	}
	return r.naked.Load(), time.Duration(r.nakDelay.Load())
}

// settleInPack settles a receipt of a pack with s, and its message with
// what the pack's receipts add up to once it is the last of them (see
// send for confirm). A receipt settled already counts once.
func (r *receipt) settleInPack(ctx context.Context, s settlement, delay time.Duration,
	confirm bool) error {
	if !r.settled.CompareAndSwap(false, true) {
		return nil
	}
	if s == settleNak {
		r.naked.Store(true)
	}
	if last, msg, msgDelay := r.pack.settle(s, delay); last {
		return r.send(ctx, msg, msgDelay, confirm)
	}
	return nil
}

// Ack tells the server the message is done and waits for the server to
// confirm, so that it will not be delivered to this consumer again.
func (r *receipt) Ack(ctx context.Context) error {
	if r.pack != nil {
		return r.settleInPack(ctx, settleAck, 0, true)
	}
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
	if r.pack != nil {
		return r.settleInPack(context.Background(), settleNak, delay, true)
	}
	var err error
	if delay > 0 {
		err = r.msg.NakWithDelay(delay)
	} else {
		err = r.msg.Nak()
	}
	if err != nil {
		return fmt.Errorf("nak %s %d: %w", r.what, r.seq(), err)
	}
	r.nakDelay.Store(int64(max(delay, 0)))
	r.naked.Store(true)
	r.settled.Store(true)
	return nil
}

// Term tells the server never to deliver the message to this consumer
// again. A command should be dead-lettered first (Bus.DeadLetter) unless it
// is meant to vanish; an event stays in its stream for other consumers.
func (r *receipt) Term() error {
	if r.pack != nil {
		return r.settleInPack(context.Background(), settleTerm, 0, true)
	}
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

// send settles the message of a pack with s, once its last command is
// settled. With confirm an Ack waits for the server's confirmation, as Ack
// does; without, it is sent as ackBatch sends its acks.
func (r *receipt) send(ctx context.Context, s settlement, delay time.Duration,
	confirm bool) error {
	var err error
	switch {
	case s == settleAck && confirm:
		err = r.msg.DoubleAck(ctx)
	case s == settleAck:
		err = r.msg.Ack()
	case s == settleTerm:
		err = r.msg.Term()
	case delay > 0:
		err = r.msg.NakWithDelay(delay)
	default:
		err = r.msg.Nak()
	}
	if err != nil {
		return fmt.Errorf("settle %s %d: %w", r.what, r.seq(), err)
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
		if r.pack != nil {
			if err := r.settleInPack(ctx, settleAck, 0, false); err != nil {
				failed++
				first = cmp.Or(first, err)
			}
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
