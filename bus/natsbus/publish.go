package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// resultBuffer is how many results a SubscribeResult channel holds for a
// waiter that is not reading; more are dropped.
const resultBuffer = 4

// subscribeTimeout bounds the wait for the server to confirm the result
// subscription.
const subscribeTimeout = 2 * time.Second

// commandMsg is the message of a sealed command, on its member's partition.
func (b *Bus) commandMsg(cmd bus.Command) (*nats.Msg, error) {
	if len(cmd.Hash) < 16 {
		return nil, errors.New("publish command: not sealed")
	}
	if cmd.Source == "" || cmd.TxnID == "" {
		return nil, errors.New("publish command: no source or transaction id")
	}
	data, err := bus.AppendCommand(make([]byte, 0, 320+len(cmd.Payload)), &cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	p := bus.Partition(cmd.Program, cmd.Member, b.cfg.Partitions)
	return &nats.Msg{Subject: b.commandSubject(p), Data: data}, nil
}

// PublishCommand puts cmd on its member's partition and waits until the
// server has stored it. A command that arrives while its partition has a
// message on its way waits for it and travels in a pack with the others
// that waited (gather.go). A command that travels alone has message id
// bus.MsgID(cmd): a retry of the same request within DuplicateWindow is
// dropped by the server and reported with duplicate set when it and the
// first copy both travelled alone; otherwise (either of them in a pack) it
// is stored again, and the ledger answers it as a replay.
// A changed request with the same transaction id is stored, for core to
// answer with a conflict. cmd must be sealed.
func (b *Bus) PublishCommand(ctx context.Context, cmd bus.Command) (duplicate bool, err error) {
	m, err := b.commandMsg(cmd)
	if err != nil {
		return false, err
	}
	return b.gatherPublish(ctx, cmd, m)
}

// publishAlone stores m, the message of cmd, on its own.
func (b *Bus) publishAlone(ctx context.Context, cmd bus.Command, m *nats.Msg) (bool, error) {
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgID(bus.MsgID(cmd)),
		jetstream.WithExpectStream(b.cmdStream))
	if err != nil {
		return false, fmt.Errorf("publish command %s: %w", cmd.ID, err)
	}
	return ack.Duplicate, nil
}

// PublishResult announces r to whoever waits for it on core NATS. Nobody
// may be listening, and nothing is stored: the result of record is in the
// ledger.
func (b *Bus) PublishResult(r bus.Result) error {
	return b.PublishResultJSON(r, nil)
}

// PublishResultJSON is PublishResult with r already encoded as JSON in
// data; an empty data encodes r.
func (b *Bus) PublishResultJSON(r bus.Result, data []byte) error {
	if r.Source == "" || r.TxnID == "" {
		return errors.New("publish result: no source or transaction id")
	}
	if len(data) == 0 {
		var err error
		if data, err = json.Marshal(r); err != nil {
			return fmt.Errorf("encode result: %w", err)
		}
	}
	if err := b.nc.Publish(b.resultSubject(r.Source, r.TxnID), data); err != nil {
		return fmt.Errorf("publish result %s: %w", r.CommandID, err)
	}
	return nil
}

// PublishEvents puts ledger events on the events stream and waits until the
// server has stored all of them, as PublishStoredEvents does.
func (b *Bus) PublishEvents(ctx context.Context, evs []bus.Event) error {
	stored := make([]bus.StoredEvent, len(evs))
	for i, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode event %s: %w", ev.ID, err)
		}
		stored[i] = bus.StoredEvent{ID: ev.ID, Subject: bus.EventSubject(ev.Program, ev.Kind),
			Body: data}
	}
	return b.PublishStoredEvents(ctx, stored)
}

// PublishStoredEvents puts events, already encoded, on the events stream and
// waits until the server has stored all of them, as atomic batches when it
// can (atomic.go). The message id is the event id, so events published again
// after a crash (from the outbox) are dropped as duplicates within
// DuplicateWindow. On error some events may be stored and others not;
// publishing all of them again is safe.
func (b *Bus) PublishStoredEvents(ctx context.Context, evs []bus.StoredEvent) error {
	for _, ev := range evs {
		if ev.ID == "" || ev.Subject == "" {
			return errors.New("publish events: event without id or subject")
		}
	}
	msgs, ids := make([]*nats.Msg, len(evs)), make([]string, len(evs))
	for i, ev := range evs {
		msgs[i], ids[i] = &nats.Msg{Subject: b.prefix + ev.Subject, Data: ev.Body}, ev.ID
	}
	dup, errs := make([]bool, len(evs)), make([]error, len(evs))
	b.store(ctx, b.evtStream, msgs, ids, dup, errs)
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("publish event %s: %w", evs[i].ID, err)
		}
	}
	return nil
}
