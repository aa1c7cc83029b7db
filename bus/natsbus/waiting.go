package natsbus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/puntos-loyalty/puntos/bus"
)

// Counting the dead letters that wait for an operator.
//
// The dead-letter stream holds letters and the marks Discard leaves. A
// letter is on the subject of its command (bus.DeadCommandSubject), of its
// refusal when the ledger refused it (bus.DeadRefusedSubject) or, when it
// names no command, on its partition's (bus.DeadSubject); a mark is on a
// subject of its own (bus.DiscardedCommandSubject). The letters waiting are
// then the messages on the letters' subjects, which the server counts by
// subject without reading a message.
//
// Versions before this one stored a mark on its command's letter subject,
// where only its header tells it from a letter. Connect moves such marks to
// their own subject (moveMarks); until then each counts as a letter.
//
// BUG(natsbus): during a rolling upgrade, a process of an earlier version
// looks for marks among the letters only: it does not see the marks newer
// processes leave, and may answer 202 to a retry of a command discarded
// meanwhile. It also still stores its own marks there, counted as letters
// until a newer process starts and moves them.

// Waiting is how many dead letters the dead-letter stream holds, neither
// re-driven nor discarded, by kind.
type Waiting struct {
	// Failed are commands that failed to apply (PUNTOS_MAX_DELIVER
	// attempts, or a write the ledger could not make) and lines that are
	// not commands: each needs an operator.
	Failed uint64
	// Refused are commands the ledger refused for good (an unknown member,
	// an invalid field): their refusal is stored and answered; the letters
	// wait in case an operator mends the cause and re-drives them.
	Refused uint64
}

// DeadLettersWaiting counts the dead letters in the dead-letter stream:
// neither re-driven nor discarded, the marks of discarded letters left out.
// It asks the server for its message counts by subject, three requests whose
// answers grow with the number of commands waiting, not with the letters
// and marks the stream has ever held. A letter or discard between them can
// be seen in one count and not the other; the next count is exact. Letters
// of refusals stored before they had subjects of their own (5 December
// 2026) count as failed.
func (b *Bus) DeadLettersWaiting(ctx context.Context) (Waiting, error) {
	stream, err := b.deadStreamHandle(ctx)
	if err != nil {
		return Waiting{}, err
	}
	var w Waiting
	for _, f := range []struct {
		filter string
		n      *uint64
	}{{b.prefix + bus.DeadSubjectsByPartition, &w.Failed},
		{b.prefix + bus.DeadCommandSubjects, &w.Failed},
		{b.prefix + bus.DeadRefusedSubjects, &w.Refused}} {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(f.filter))
		if err != nil {
			b.deadHandle.Store(nil) // the stream may have gone: find it again next time
			return Waiting{}, fmt.Errorf("count dead letters: %w", err)
		}
		for _, msgs := range info.State.Subjects {
			*f.n += msgs
		}
	}
	return w, nil
}

// deadStreamHandle is the dead-letter stream, looked up once and kept.
func (b *Bus) deadStreamHandle(ctx context.Context) (jetstream.Stream, error) {
	if dead := b.deadHandle.Load(); dead != nil {
		return *dead, nil
	}
	s, err := b.js.Stream(ctx, b.deadStream)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	b.deadHandle.Store(&s)
	return s, nil
}

// lastOfCommand is the latest message the dead-letter stream holds on the
// subjects of the command (source, txn), its letters' and its marks', or nil
// when there is none: the one that answers for the command.
func (b *Bus) lastOfCommand(ctx context.Context, stream jetstream.Stream, source,
	txn string) (*jetstream.RawStreamMsg, error) {
	var last *jetstream.RawStreamMsg
	for _, subject := range []string{bus.DeadCommandSubject(source, txn),
		bus.DiscardedCommandSubject(source, txn)} {
		m, err := stream.GetLastMsgForSubject(ctx, b.prefix+subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return nil, err
		}
		if last == nil || m.Sequence > last.Sequence {
			last = m
		}
	}
	return last, nil
}

// moveMarks moves the marks that earlier versions left among the letters
// to subjects of their own. Only the letters' subjects are read, headers
// only: once the marks are moved, they hold the letters waiting alone.
//
// A mark that answers for its command (its latest message) is copied to
// its command's mark subject, then removed; the copy keeps it the latest,
// as sequences only grow. A mark followed by a newer letter or mark of its
// command is removed: it answers for nothing while they are there, and once
// a newer letter goes, it is re-driven (the command waits on the command
// stream, and its status says so) or leaves a mark of its own. The copy
// has a message id of its own, so that two processes starting at once store
// it once.
func (b *Bus) moveMarks(ctx context.Context) error {
	type mark struct {
		seq         uint64
		source, txn string
	}
	var marks []mark
	budget := math.MaxInt
	_, err := b.scanHeaders(ctx, b.deadStream, b.prefix+bus.DeadCommandSubjects, 1, &budget,
		func(m jetstream.Msg) (bool, error) {
			h := m.Headers()
			if h.Get(HeaderDiscarded) == "" {
				return false, nil
			}
			meta, err := m.Metadata()
			if err != nil {
				return false, err
			}
			marks = append(marks, mark{meta.Sequence.Stream, h.Get(HeaderSource),
				h.Get(HeaderTxn)})
			return false, nil
		})
	if err != nil {
		return fmt.Errorf("move discard marks: %w", err)
	}
	if len(marks) == 0 {
		return nil
	}
	stream, err := b.deadStreamHandle(ctx)
	if err != nil {
		return fmt.Errorf("move discard marks: %w", err)
	}
	for _, mk := range marks {
		if err := b.moveMark(ctx, stream, mk.seq, mk.source, mk.txn); err != nil {
			return fmt.Errorf("move discard mark %d: %w", mk.seq, err)
		}
	}
	b.log.Info("Discard marks moved to subjects of their own", "marks", len(marks))
	return nil
}

// moveMark moves the mark at seq, of the command (source, txn), as
// moveMarks says.
func (b *Bus) moveMark(ctx context.Context, stream jetstream.Stream, seq uint64, source,
	txn string) error {
	last, err := b.lastOfCommand(ctx, stream, source, txn)
	switch {
	case err != nil:
		return err
	case last == nil:
		return nil // removed meanwhile
	case last.Sequence != seq:
		return remove(ctx, stream, seq) // a newer message answers for the command
	}

	// Copy it, headers and data, to its own subject.
	m := &nats.Msg{Subject: b.prefix + bus.DiscardedCommandSubject(source, txn),
		Data: last.Data, Header: nats.Header{}}
	for k, v := range last.Header {
		if k != jetstream.MsgIDHeader {
			m.Header[k] = v
		}
	}
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectStream(b.deadStream),
		jetstream.WithMsgID("moved/"+strconv.FormatUint(seq, 10)))
	if err != nil {
		return err
	}

	// A letter of the command stored between the check and the copy is
	// newer than the mark: the copy, after it, would hide it.
	newest, err := stream.GetLastMsgForSubject(ctx, b.prefix+bus.DeadCommandSubject(source, txn))
	switch {
	case err == nil && newest.Sequence > seq && newest.Sequence < ack.Sequence:
		if err := remove(ctx, stream, ack.Sequence); err != nil {
			return err
		}
	case err != nil && !errors.Is(err, jetstream.ErrMsgNotFound):
		return err
	}
	return remove(ctx, stream, seq)
}
