package natsbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

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

// ReadDeadLetter reads the dead letter stored at seq.
func (b *Bus) ReadDeadLetter(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letters: %w", err)
	}
	dl, _, err := readDeadAt(ctx, stream, seq)
	return dl, err
}

// readDeadAt reads the dead letter at seq and its headers; the mark of a
// discarded letter is no letter.
func readDeadAt(ctx context.Context, stream jetstream.Stream, seq uint64) (DeadLetter,
	nats.Header, error) {
	if seq == 0 {
		return DeadLetter{}, nil, fmt.Errorf("dead letter 0: %w", ErrNoDeadLetter)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, nil, fmt.Errorf("dead letter %d: %w", seq, ErrNoDeadLetter)
	}
	if err != nil {
		return DeadLetter{}, nil, fmt.Errorf("dead letter %d: %w", seq, err)
	}
	if raw.Header.Get(HeaderDiscarded) != "" {
		return DeadLetter{}, nil, fmt.Errorf("dead letter %d: %w (discarded)", seq,
			ErrNoDeadLetter)
	}
	return readDeadLetter(raw), raw.Header, nil
}

// remove deletes the message at seq. Someone else removing it first (a
// second operator, say) is no error: the server then answers with an error
// of its own, and the message is read again to tell.
func remove(ctx context.Context, stream jetstream.Stream, seq uint64) error {
	err := stream.DeleteMsg(ctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if _, gerr := stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}

// Redrive puts the command of the dead letter at seq back on the command
// stream, on the partition it was dead-lettered from, behind what waits
// there, then removes the dead letter. It returns the dead letter as it
// was, and again set when the bus already held this very re-drive (an
// earlier one stopped before removing the letter, within the bus's day of
// duplicate detection): nothing new is then sent. A dead letter that is not
// a command (ErrNotACommand) cannot be re-driven: Discard it. A command is
// not checked against the ledger here: one already applied is answered as a
// replay when it comes round again.
//
// The command travels as a pack of one under a message id of its own, so
// the day of duplicate detection does not drop it as a retry of the first
// copy; Locate finds it while it waits. Should the removal fail, the command
// is on the stream all the same: the error says so, and re-driving again is
// safe.
func (b *Bus) Redrive(ctx context.Context, seq uint64) (dl DeadLetter, again bool, err error) {
	stream, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return DeadLetter{}, false, fmt.Errorf("dead letters: %w", err)
	}
	dl, _, err = readDeadAt(ctx, stream, seq)
	if err != nil {
		return DeadLetter{}, false, err
	}
	var cmd bus.Command
	if problem := decodeCommand(dl.Raw, &cmd); problem != "" {
		return dl, false, fmt.Errorf("dead letter %d is %w (%s); discard it instead", seq,
			ErrNotACommand, problem)
	}
	// One line, as a pack holds it: the command as stored may have had
	// spaces or line breaks around or between its fields.
	var line bytes.Buffer
	if err := json.Compact(&line, dl.Raw); err != nil {
		return dl, false, fmt.Errorf("dead letter %d is %w (%v); discard it instead", seq,
			ErrNotACommand, err)
	}
	// Only a partition core reads: a letter from a partition this platform
	// no longer has would wait there for ever.
	if _, err := b.js.Consumer(ctx, b.cmdStream, durableName(dl.Partition)); err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return dl, false, fmt.Errorf("dead letter %d came from partition %d, which no "+
				"core reads now (were PUNTOS_PARTITIONS changed?); it was not re-driven",
				seq, dl.Partition)
		}
		return dl, false, fmt.Errorf("re-drive dead letter %d: %w", seq, err)
	}
	m := &nats.Msg{Subject: b.commandSubject(dl.Partition), Data: line.Bytes(),
		Header: nats.Header{}}
	m.Header.Set(headerPack, "1")
	m.Header.Set(headerPackKeys, string(appendPackKey(nil, cmd.Source, cmd.TxnID)))
	id := "redrive/" + strconv.FormatUint(seq, 10) + "/" + bus.MsgIDPrefix(cmd.Source, cmd.TxnID)
	if len(cmd.Hash) >= bus.MsgIDDigits {
		id = "redrive/" + strconv.FormatUint(seq, 10) + "/" + bus.MsgID(cmd)
	}
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgID(id),
		jetstream.WithExpectStream(b.cmdStream))
	if err != nil {
		return dl, false, fmt.Errorf("re-drive dead letter %d: %w", seq, err)
	}
	if err := remove(ctx, stream, seq); err != nil {
		return dl, ack.Duplicate, fmt.Errorf("dead letter %d is back on the command stream "+
			"but was not removed (re-driving it again is safe): %w", seq, err)
	}
	b.log.Info("Dead letter re-driven", "seq", seq, "source", cmd.Source, "txn", cmd.TxnID,
		"partition", dl.Partition, "reason", dl.Reason, "again", ack.Duplicate)
	return dl, ack.Duplicate, nil
}

// Discard removes the dead letter at seq without sending its command again,
// and returns it as it was. For a command whose latest letter it is, a mark
// stays in the dead-letter stream (header HeaderDiscarded, not listed by
// DeadLetters, on the command's bus.DiscardedCommandSubject, not counted by
// DeadLettersWaiting): its status URL still says it failed, and a retry of
// it that the bus drops as a duplicate is still answered as set aside rather
// than accepted.
// DeadLetterAt reads the dead letter at seq. Errors: ErrNoDeadLetter when
// there is none (re-driven, discarded, or never).
func (b *Bus) DeadLetterAt(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letters: %w", err)
	}
	dl, _, err := readDeadAt(ctx, stream, seq)
	return dl, err
}

func (b *Bus) Discard(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letters: %w", err)
	}
	dl, h, err := readDeadAt(ctx, stream, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	// The mark stands for the letter only while the letter is the latest
	// of its command: a newer letter (the caller's corrected request, set
	// aside too) already answers for the command, and a mark after it would
	// hide it. A refusal needs none: the ledger's stored refusal answers.
	latest := dl.Source != "" && dl.TxnID != "" && !dl.Refused
	if latest {
		last, err := b.lastOfCommand(ctx, stream, dl.Source, dl.TxnID)
		switch {
		case err != nil:
			return dl, fmt.Errorf("discard dead letter %d: %w", seq, err)
		case last != nil:
			latest = last.Sequence == seq
		default:
			// A letter from before letters had subjects of their own.
		}
	}
	if latest {
		m := &nats.Msg{Subject: b.prefix + bus.DiscardedCommandSubject(dl.Source, dl.TxnID),
			Data: dl.Raw, Header: nats.Header{}}
		for k, v := range h {
			if k != jetstream.MsgIDHeader {
				m.Header[k] = v
			}
		}
		m.Header.Set(HeaderDiscarded, time.Now().UTC().Format(time.RFC3339))
		_, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectStream(b.deadStream),
			jetstream.WithMsgID("discarded/"+strconv.FormatUint(seq, 10)))
		if err != nil {
			return dl, fmt.Errorf("discard dead letter %d: %w", seq, err)
		}
	}
	if err := remove(ctx, stream, seq); err != nil {
		return dl, fmt.Errorf("discard dead letter %d: %w", seq, err)
	}
	b.log.Info("Dead letter discarded", "seq", seq, "source", dl.Source, "txn", dl.TxnID,
		"partition", dl.Partition, "reason", dl.Reason)
	return dl, nil
}
