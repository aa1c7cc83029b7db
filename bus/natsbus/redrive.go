package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// Putting dead letters back. A command is set aside after failing every
// delivery (a fault of core or of the ledger that outlasted the retries, not
// a refusal: a refusal is stored in the ledger as the command's answer).
// Once the cause is mended, an operator re-drives it: the command goes back
// on the command stream as it was first sent, and its dead letter is
// removed. The ledger keeps its promise of once only: a command that was
// applied meanwhile (sent again by its caller) is answered as a replay and
// posts nothing twice.

// ErrNoDeadLetter is returned for a sequence the dead-letter stream does not
// hold (never written, or re-driven or discarded already).
var ErrNoDeadLetter = errors.New("no such dead letter")

// ErrNotACommand is returned by Redrive for a dead letter that does not hold
// a usable command (it was set aside as undecodable): it can only be
// discarded.
var ErrNotACommand = errors.New("not a command that can be sent again")

// maxPartitions is the most command partitions a platform may have.
const maxPartitions = 1024

// ReadDeadLetter reads the dead letter stored at seq.
func (b *Bus) ReadDeadLetter(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letters: %w", err)
	}
	return readDeadAt(ctx, stream, seq)
}

func readDeadAt(ctx context.Context, stream jetstream.Stream, seq uint64) (DeadLetter, error) {
	if seq == 0 {
		return DeadLetter{}, fmt.Errorf("dead letter 0: %w", ErrNoDeadLetter)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, ErrNoDeadLetter)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	return readDeadLetter(raw), nil
}

// Redrive puts the command of the dead letter at seq back on the command
// stream, on the partition it was dead-lettered from, behind what waits
// there, then removes the dead letter. It returns the dead letter as it
// was. A dead letter that is not a command (undecodable) cannot be
// re-driven: Discard it. A command is not checked against the ledger here:
// one already applied is answered as a replay when it comes round again.
//
// The command travels as a pack of one under a message id of its own, so
// the bus's day of duplicate detection does not drop it as a retry of the
// first copy, while a second Redrive of the same dead letter within that day
// (after a stop before the removal) is dropped; Locate finds the command
// while it waits. Should the removal fail, the command is on the stream all
// the same: the error says so, and re-driving again is safe.
func (b *Bus) Redrive(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letters: %w", err)
	}
	dl, err := readDeadAt(ctx, stream, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	var cmd bus.Command
	if problem := decodeCommand(dl.Raw, &cmd); problem != "" {
		return dl, fmt.Errorf("dead letter %d is %w (%s); discard it instead", seq,
			ErrNotACommand, problem)
	}
	if dl.Partition < 0 || dl.Partition >= maxPartitions {
		return dl, fmt.Errorf("dead letter %d names partition %d, which no command stream has",
			seq, dl.Partition)
	}
	m := &nats.Msg{Subject: b.commandSubject(dl.Partition), Data: dl.Raw, Header: nats.Header{}}
	m.Header.Set(headerPack, "1")
	m.Header.Set(headerPackKeys, string(appendPackKey(nil, cmd.Source, cmd.TxnID)))
	id := "redrive/" + strconv.FormatUint(seq, 10) + "/" + bus.MsgIDPrefix(cmd.Source, cmd.TxnID)
	if len(cmd.Hash) >= bus.MsgIDDigits {
		id = "redrive/" + strconv.FormatUint(seq, 10) + "/" + bus.MsgID(cmd)
	}
	if _, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgID(id),
		jetstream.WithExpectStream(b.cmdStream)); err != nil {
		return dl, fmt.Errorf("re-drive dead letter %d: %w", seq, err)
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return dl, fmt.Errorf("dead letter %d is back on the command stream but was not "+
			"removed (re-driving it again is safe): %w", seq, err)
	}
	b.log.Info("Dead letter re-driven", "seq", seq, "source", cmd.Source, "txn", cmd.TxnID,
		"partition", dl.Partition, "reason", dl.Reason)
	return dl, nil
}

// Discard removes the dead letter at seq without sending its command again,
// and returns it as it was.
func (b *Bus) Discard(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letters: %w", err)
	}
	dl, err := readDeadAt(ctx, stream, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, ErrNoDeadLetter)
		}
		return dl, fmt.Errorf("discard dead letter %d: %w", seq, err)
	}
	b.log.Info("Dead letter discarded", "seq", seq, "source", dl.Source, "txn", dl.TxnID,
		"partition", dl.Partition, "reason", dl.Reason)
	return dl, nil
}
