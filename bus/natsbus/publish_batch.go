package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/puntos-loyalty/puntos/bus"
)

// PublishCommands puts many commands on their members' partitions at once:
// as atomic batches of up to 500 when the stream takes them (one round trip
// and one disk sync each, see atomic.go), otherwise as asynchronous
// publishes whose acknowledgements are awaited together. Each command keeps
// the message id PublishCommand would give it, so a batch sent again is
// dropped command by command as duplicates.
//
// The answers come back in the order of cmds: duplicate[i] is set when the
// server already held command i (a retry), errs[i] when command i was not
// confirmed stored. A command with an error may or may not be stored:
// publishing it again is safe. Every command must be sealed.
func (b *Bus) PublishCommands(ctx context.Context, cmds []bus.Command) (duplicate []bool,
	errs []error) {
	duplicate = make([]bool, len(cmds))
	errs = make([]error, len(cmds))

	// Encode them all; a command that cannot be encoded is marked and
	// skipped.
	msgs, ids := make([]*nats.Msg, len(cmds)), make([]string, len(cmds))
	for i, cmd := range cmds {
		if msgs[i], errs[i] = b.commandMsg(cmd); errs[i] == nil {
			ids[i] = bus.MsgID(cmd)
		}
	}
	b.store(ctx, b.cmdStream, msgs, ids, duplicate, errs)
	for i, err := range errs {
		if err != nil && msgs[i] != nil {
			errs[i] = fmt.Errorf("publish command %s: %w", cmds[i].ID, err)
		}
	}
	return duplicate, errs
}

// SubscribeResults starts listening for the results of many commands of one
// source, like SubscribeResult does for one, and returns once the server has
// every subscription. The channel has room for two results per command; a
// result that finds it full is logged and dropped (the ledger keeps it).
// unsubscribe ends every subscription and closes the channel.
func (b *Bus) SubscribeResults(source string, txns []string) (<-chan bus.Result, func(),
	error) {
	ch := make(chan bus.Result, 2*len(txns)+resultBuffer)
	var (
		mu     sync.Mutex
		closed bool
		subs   = make([]*nats.Subscription, 0, len(txns))
	)
	deliver := func(m *nats.Msg) {
		var r bus.Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			b.log.Warn("Undecodable result", "subject", m.Subject, "error", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		select {
		case ch <- r:
		default:
			b.log.Warn("Result dropped, waiter not reading", "subject", m.Subject,
				"txn_id", r.TxnID)
		}
	}
	drop := func() {
		for _, s := range subs {
			if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				b.log.Warn("Unsubscribe failed", "subject", s.Subject, "error", err)
			}
		}
	}

	// One subscription per command, confirmed by a single flush.
	for _, txn := range txns {
		s, err := b.nc.Subscribe(b.resultSubject(source, txn), deliver)
		if err != nil {
			drop()
			return nil, nil, fmt.Errorf("subscribe results: %w", err)
		}
		subs = append(subs, s)
	}
	if err := b.nc.FlushTimeout(subscribeTimeout); err != nil {
		drop()
		return nil, nil, fmt.Errorf("subscribe results: %w", err)
	}

	var once sync.Once
	unsubscribe := func() {
		once.Do(func() {
			drop()
			mu.Lock()
			closed = true
			close(ch)
			mu.Unlock()
		})
	}
	return ch, unsubscribe, nil
}
