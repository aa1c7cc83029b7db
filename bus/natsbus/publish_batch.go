package natsbus

import (
	"context"
	"fmt"

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
